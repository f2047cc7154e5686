"""The root of the Kafka package's errors (`movielab.errors.MovielabError` per package); each module keeps its own.

Named `MovielabKafkaError`, not `KafkaError`, so it is never confused with confluent-kafka's `KafkaError`.
"""

from __future__ import annotations

from movielab.errors import MovielabError


class MovielabKafkaError(MovielabError):
    """Base class of the errors `movielab.kafka` raises on purpose."""
