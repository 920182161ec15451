"""Candidate models: one module each behind :class:`recpipe.models.base.Recommender`."""
