"""Evaluation: metrics, scoring a fold's lists, the report, the embedding map, plots and the
paired review."""
