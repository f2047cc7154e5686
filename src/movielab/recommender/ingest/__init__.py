"""Ingest: the team's Kafka topic → contract parser → validation → event store, then the offset commit.

Also the world API's user/movie records (`worldapi`), the background workers of the ingest path (`worker`) and
the 2026 edition's cold start from users' self-descriptions (`coldstart`). Imports `store` only.
"""
