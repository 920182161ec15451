"""Evaluation: metrics, scoring a fold's lists, the report, plots and the paired review."""
