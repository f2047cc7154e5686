"""Event-store batches built from contract lines, as the ingestor appends them (for tests).

`pythonpath = ["tests"]` in pyproject.toml lets unit and integration tests import it as `batches`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from movielab.recommender.ingest.validation import parse_values
from movielab.recommender.store.events import QUARANTINE_SCHEMA, Batch


def lines_batch(
    lines: Sequence[str],
    first: int = 0,
    partition: int = 0,
    topic: str = "movielog1",
    quarantine: Sequence[tuple[int, bytes, str, str]] = (),
) -> Batch:
    """Good lines at offsets first, first + 1, … of `topic`/`partition`, plus quarantined
    (offset, line, reason kind, reason); every line must parse."""
    parsed, bad = parse_values(list(lines))
    assert not bad, bad
    n = parsed.num_rows
    events = (
        parsed.drop_columns(["idx"])
        .append_column("topic", pa.array([topic] * n))
        .append_column("partition", pa.array([partition] * n, pa.int32()))
        .append_column("offset", pa.array(range(first, first + n), pa.int64()))
    )
    q = pa.table(
        {
            "topic": [topic] * len(quarantine),
            "partition": pa.array([partition] * len(quarantine), pa.int32()),
            "offset": pa.array([o for o, *_ in quarantine], pa.int64()),
            "line": pa.array([line for _, line, _, _ in quarantine], pa.binary()),
            "reason_kind": [k for _, _, k, _ in quarantine],
            "reason": [r for *_, r in quarantine],
        },
        schema=QUARANTINE_SCHEMA,
    )
    return Batch(events, q)
