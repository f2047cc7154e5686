"""Two courses on one broker: the second is refused before it writes a line, naming both; a resumed course, or a
second course with topics of its own, runs. Real parts: the embedded broker, the course's world, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from movielab.cli import main
from movielab.course.claims import CLAIMS_TOPIC, TopicClaimed, read_claims
from movielab.course.config import load
from movielab.course.run import end_offsets, run_course
from movielab.kafka import EmbeddedBroker, KafkaSink, ensure_topics

pytestmark = pytest.mark.integration


def _course(folder: Path, name: str, bootstrap: str, topics: tuple[str, str] | None = None) -> Path:
    folder.mkdir()
    extra = [f'topic = "{t}"\n' for t in topics] if topics else ["", ""]
    path = folder / "course.toml"
    path.write_text(f"""
name = "{name}"
[world]
users = 300
days = 0.02
[kafka]
bootstrap = "{bootstrap}"
partitions = 1
[api]
port = 0
[instructor]
enabled = false
[[teams]]
name = "a"
url = "http://127.0.0.1:9"
{extra[0]}[[teams]]
name = "b"
url = "http://127.0.0.1:9"
{extra[1]}""")
    return path


def _lines(bootstrap: str, topics: list[str]) -> dict[str, int]:
    return {t: sum(p.values()) for t, p in end_offsets(bootstrap, topics).items()}


def test_a_second_course_on_the_same_topics_is_refused_naming_both(universe, tmp_path, capsys) -> None:
    with EmbeddedBroker() as broker:
        first = load(_course(tmp_path / "fall", "fall", broker.bootstrap))
        run = run_course(first, universe=universe)
        before = _lines(broker.bootstrap, ["movielog1", "movielog2"])
        assert before == run.lines() and sum(before.values()) > 0

        second = _course(tmp_path / "spring", "spring", broker.bootstrap)
        with pytest.raises(TopicClaimed) as caught:
            run_course(load(second), universe=universe)
        message = str(caught.value)
        assert "topic 'movielog1'" in message and "course 'fall'" in message and "course 'spring'" in message
        assert str(tmp_path / "fall" / "state") in message and str(tmp_path / "spring" / "state") in message
        assert _lines(broker.bootstrap, ["movielog1", "movielog2"]) == before  # not one line written
        assert main(["course", "run", str(second)]) == 2  # the command line says the same in one line
        assert "belongs to course 'fall'" in capsys.readouterr().err

        # The first course resumed: its own topics, fine (its id is in its state folder).
        resumed = first.model_copy(update={"world": first.world.model_copy(update={"days": 0.04})})
        again = run_course(resumed, universe=universe)
        assert again.restored_from is not None and sum(again.lines().values()) > sum(before.values())

        # A second course with topics of its own runs beside it.
        own = load(_course(tmp_path / "summer", "summer", broker.bootstrap, ("summer1", "summer2")))
        assert sum(run_course(own, universe=universe).lines().values()) > 0
        claims = read_claims(broker.bootstrap)
        assert {t: c["course"] for t, c in claims.items()} == {
            "movielog1": "fall",
            "movielog2": "fall",
            "summer1": "summer",
            "summer2": "summer",
        }

        # Lines that no course claims (another world wrote them): a course starting afresh there is refused.
        ensure_topics(broker.bootstrap, ["other1"], partitions=1)
        with KafkaSink(broker.bootstrap, "other1") as sink:
            sink.write([1], ["2026-03-20T00:00:00,1,GET /create_account"])
        stray = load(_course(tmp_path / "stray", "stray", broker.bootstrap, ("other1", "other2")))
        with pytest.raises(TopicClaimed, match=r"topic 'other1' .* already holds 1 line\(s\) that no course claims"):
            run_course(stray, universe=universe)
        assert CLAIMS_TOPIC not in stray.topics()
