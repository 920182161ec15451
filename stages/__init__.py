"""Recommender pipeline: DVC stage entry points (``python -m stages.<stage>``).

Stage modules here are thin: they parse paths, load their own params block, read inputs,
call the pure functions in :mod:`stages.core` and write outputs atomically.
"""
