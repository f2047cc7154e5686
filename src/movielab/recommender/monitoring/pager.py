"""The local pager: Alertmanager's webhook receiver, writing what would be paged.

`movielab recommender pager --port 8085 --pages pages.jsonl` listens on loopback. Alertmanager
(`deploy/alertmanager/alertmanager.yml`) posts each notification of a group to `/page` (severity page) or
`/ticket` (severity ticket) in its webhook format (version 4: `status`, `receiver`, `groupLabels`, `alerts` with
`status`, `labels`, `annotations`, `startsAt`, `endsAt`, `fingerprint`). The pager appends one JSON line per
alert in the notification to the pages file and logs it: a team reads the file (or `GET /pages`) instead of a
phone ringing, and a drill checks it. A malformed notification gets 400 naming the field, never a 500.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger(__name__)

KINDS = ("page", "ticket")  # the receivers' paths: /page and /ticket
MAX_BODY = 1_048_576  # bytes of one notification (Alertmanager's max_alerts: 50 keeps them far below)
SHOWN = 200  # GET /pages answers at most the last SHOWN pages


class WebhookAlert(BaseModel):
    """One alert of an Alertmanager webhook notification (fields movielab reads; others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str  # Alertmanager's field names
    endsAt: str = ""
    fingerprint: str = ""


class Notification(BaseModel):
    """An Alertmanager webhook notification (format version 4)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str
    groupKey: str = ""
    alerts: list[WebhookAlert] = Field(min_length=1)


class Pages:
    """The pages file: one JSON object a line, appended under a lock; `read()` gives them back."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, kind: str, note: Notification) -> list[dict]:
        """Write one line per alert of `note` (received as `kind`); the lines written."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        rows = [
            {
                "received_at": now,
                "kind": kind,
                "receiver": note.receiver,
                "status": a.status,
                "alertname": a.labels.get("alertname", ""),
                "severity": a.labels.get("severity", ""),
                "team": a.labels.get("team", ""),
                "summary": a.annotations.get("summary", ""),
                "starts_at": a.startsAt,
                "ends_at": a.endsAt,
                "fingerprint": a.fingerprint,
                "labels": a.labels,
            }
            for a in note.alerts
        ]
        with self._lock, self.path.open("a") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
        return rows

    def read(self) -> list[dict]:
        """Every page written so far (an absent file: none)."""
        if not self.path.exists():
            return []
        with self._lock:
            lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def create_app(pages: Pages) -> Starlette:
    """The receiver: `POST /page` and `POST /ticket` take Alertmanager notifications (400 naming the problem when
    malformed, 413 when too large); `GET /pages` lists the last pages written; `GET /healthz`."""

    async def receive(request: Request) -> JSONResponse:
        kind = request.path_params["kind"]
        if kind not in KINDS:
            return JSONResponse({"error": f"unknown receiver path /{kind}: choose /page or /ticket"}, 404)
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse({"error": f"notification has {len(raw)} bytes, at most {MAX_BODY}"}, 413)
        try:
            note = Notification.model_validate_json(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)[:5]
            )
            return JSONResponse({"error": f"not an Alertmanager webhook notification: {problems}"}, 400)
        rows = pages.append(kind, note)
        for row in rows:
            logger.warning(
                "%s %s: %s [%s, team %s] %s",
                kind.upper(),
                row["status"],
                row["alertname"],
                row["severity"],
                row["team"] or "-",
                row["summary"],
            )
        return JSONResponse({"written": len(rows)})

    async def listing(request: Request) -> JSONResponse:
        return JSONResponse(pages.read()[-SHOWN:])

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "pages": str(pages.path)})

    return Starlette(
        routes=[
            Route("/pages", listing, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{kind:str}", receive, methods=["POST"]),
        ]
    )
