"""Serving what the pipeline learnt: the bundle a run writes, and the service over it."""
