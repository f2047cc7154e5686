"""Topic names and topic creation on any Kafka-protocol cluster."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from movielab.kafka.errors import MovielabKafkaError

logger = logging.getLogger(__name__)


class KafkaSetupError(MovielabKafkaError, RuntimeError):
    """A topic could not be created or the cluster could not be reached; names the topic and the reason."""


def topic_name(team: int) -> str:
    """The contract's topic of team `team` (1-based): movielog1, movielog2, …"""
    if isinstance(team, bool) or not isinstance(team, int) or team < 1:
        raise ValueError(f"team number {team!r} is invalid: teams are numbered 1, 2, 3, …")
    return f"movielog{team}"


def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int = 3, replication: int = -1, timeout: float = 15.0
) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are); raise KafkaSetupError."""
    names = list(dict.fromkeys(names))
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    for name in names:
        if not name or not isinstance(name, str):
            raise ValueError(f"topic name {name!r} is invalid: it must be a non-empty string")
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": logger})
    # Ask for the whole topic list: a cluster may auto-create any topic named in a metadata request.
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise KafkaSetupError(
            f"{_topics(names)} on {bootstrap} could not be created: the cluster did not answer ({_reason(exc)})"
        ) from exc
    # Create only what is missing: fewer round trips, and no TOPIC_ALREADY_EXISTS to sort out.
    missing = [n for n in names if n not in existing]
    if not missing:
        logger.debug("topics %s already exist on %s", names, bootstrap)
        return
    # replication -1 lets the cluster apply its default (Kafka >= 2.4; the embedded broker accepts it too).
    futures = admin.create_topics(
        [NewTopic(n, partitions, replication) for n in missing], operation_timeout=timeout, request_timeout=timeout
    )
    for name, future in futures.items():
        try:
            future.result(timeout=timeout + 5.0)  # let the cluster's own time-out speak first
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:  # created meanwhile
                logger.debug("topic %s already exists on %s", name, bootstrap)
                continue
            raise KafkaSetupError(f"{_topics([name])} on {bootstrap} could not be created: {_reason(exc)}") from exc
        except TimeoutError as exc:  # concurrent.futures.TimeoutError is TimeoutError since 3.11
            raise KafkaSetupError(
                f"{_topics([name])} on {bootstrap} could not be created: "
                f"no answer from the cluster within {timeout + 5.0} s"
            ) from exc
        logger.info("created topic %s (%d partitions) on %s", name, partitions, bootstrap)


def _topics(names: list[str]) -> str:
    """How a message names the topics: "topic 'a'" or "topics 'a', 'b'"."""
    quoted = ", ".join(repr(n) for n in names)
    return f"topic {quoted}" if len(names) == 1 else f"topics {quoted}"


def _reason(exc: KafkaException) -> str:
    """The client's own words for a KafkaException."""
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)
