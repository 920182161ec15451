"""Candidate models: one module each behind :class:`stages.core.models.base.Recommender`."""
