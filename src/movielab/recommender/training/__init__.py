"""Training: data from a snapshot, the models, offline evaluation, training runs, retraining, the registry.

Imports `store` and `ingest` (below it), never `serving`, `monitoring` or `release`.
"""
