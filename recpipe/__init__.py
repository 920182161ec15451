"""recpipe: a reproducible recommender system.

The library behind the DVC stages, the service and the dashboard: data sources, splitting
and folds, candidate models, features, blending, the learned ranker, the rating model and
evaluation. ``docs/architecture.md`` says where each part lives and how they fit together.
"""
