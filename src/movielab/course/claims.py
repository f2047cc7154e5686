"""Which course owns which topic on a broker, so that two courses never write into each other's topics.

A course gets an id at its first start (`<state>/course.json`, mode 0600); a resumed run reads it back. Before it
produces anything, `claim_topics` reads the broker's claims topic (`movielab-courses`, one partition, one JSON
record per claim), and refuses (`TopicClaimed`, naming both courses, their state folders and the topic) when
one of its topics is claimed by another course, or, on a course's first start, holds lines that no course claims.
Otherwise it appends its own claims and reads them back: the first claim of a topic wins, so two courses
starting at the same moment cannot both get it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from movielab.course.errors import CourseError
from movielab.course.streamchecks import read_to_end
from movielab.kafka.admin import ensure_topics

logger = logging.getLogger(__name__)

CLAIMS_TOPIC = "movielab-courses"
COURSE_FILE = "course.json"


class TopicClaimed(CourseError, RuntimeError):
    """A course's topic belongs to another course (or holds lines of something else); names both and the topic."""


def course_identity(state_dir: Path, name: str) -> dict[str, Any]:
    """This course's `{"id", "name", "state_dir", "created"}`: read from `<state_dir>/course.json`, else made now."""
    path = state_dir / COURSE_FILE
    if path.is_file():
        try:
            ident = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CourseError(f"course identity {path} cannot be read: {exc}") from None
        if not isinstance(ident, dict) or not isinstance(ident.get("id"), str):
            raise CourseError(f"course identity {path}: expected a JSON object with the course's 'id'")
        return ident
    ident = {"id": uuid.uuid4().hex, "name": name, "state_dir": str(state_dir), "created": time.time()}
    tmp = state_dir / f".{COURSE_FILE}.{os.getpid()}"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        json.dump(ident, f)
    os.replace(tmp, path)
    return ident


def read_claims(bootstrap: str) -> dict[str, dict[str, Any]]:
    """topic -> the first claim of it on the broker (`{"topic", "course_id", "course", "state_dir", "at"}`)."""
    claims: dict[str, dict[str, Any]] = {}
    for n, value in enumerate(read_to_end(bootstrap, CLAIMS_TOPIC, timeout=60)):
        try:
            rec = json.loads(value)
            topic = rec["topic"]
            rec["course_id"]
        except (ValueError, KeyError, TypeError):
            logger.warning("%s record %d on %s is not a claim (ignored): %r", CLAIMS_TOPIC, n, bootstrap, value[:200])
            continue
        claims.setdefault(topic, rec)
    return claims


def _owner(c: dict[str, Any]) -> str:
    return f"course {c.get('course')!r} (id {c['course_id']}, state in {c.get('state_dir')})"


def claim_topics(
    bootstrap: str, topics: list[str], ident: dict[str, Any], first_start: bool, lines: dict[str, int] | None = None
) -> None:
    """Claim `topics` for the course `ident` on the broker, or raise TopicClaimed naming both courses.

    `first_start`: the course has no checkpoint yet; then a topic that already holds lines (`lines`: topic -> lines
    on it now) and that no course claims is refused too (another world, or a course from before claims, wrote it).
    """
    me = _owner({"course": ident.get("name"), "course_id": ident["id"], "state_dir": ident.get("state_dir")})
    claims = read_claims(bootstrap)
    for topic in topics:
        c = claims.get(topic)
        if c is not None and c["course_id"] != ident["id"]:
            raise TopicClaimed(
                f"topic {topic!r} on {bootstrap} belongs to {_owner(c)}; {me} would write into it. Give this course "
                "its own topics ([[teams]] topic = ...) or another broker; a resumed course needs its own state folder"
            )
        if c is None and first_start and (lines or {}).get(topic, 0) > 0:
            raise TopicClaimed(
                f"topic {topic!r} on {bootstrap} already holds {lines[topic]:,} line(s) that no course claims; {me} "
                "starts afresh and would mix its lines with them. Give it other topics, or delete that topic first"
            )
    new = [t for t in topics if t not in claims]
    if not new:
        return
    ensure_topics(bootstrap, [CLAIMS_TOPIC], partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "logger": logger})
    for topic in new:
        rec = {
            "topic": topic,
            "course_id": ident["id"],
            "course": ident.get("name"),
            "state_dir": ident.get("state_dir"),
            "at": time.time(),
        }
        producer.produce(CLAIMS_TOPIC, json.dumps(rec).encode(), key=topic.encode())
    if producer.flush(30) > 0:
        raise CourseError(f"claims of {', '.join(new)} could not be written to {CLAIMS_TOPIC} on {bootstrap}")
    after = read_claims(bootstrap)
    for topic in new:
        c = after.get(topic)
        if c is None or c["course_id"] != ident["id"]:  # another course claimed it at the same moment, first
            raise TopicClaimed(f"topic {topic!r} on {bootstrap} was claimed by {_owner(c) if c else '?'} just now")
    logger.info("course %s claimed %s on %s", ident.get("name"), ", ".join(new), bootstrap)
