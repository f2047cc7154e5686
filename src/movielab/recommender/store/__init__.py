"""The event store: append-only events and their quarantine, immutable snapshots, users and movies with history.

The bottom of the recommender: imports no other stage.
"""
