"""`movielab recommender control …` (the incident mitigations on the operator's control port) and
`movielab recommender pager` (Alertmanager's local webhook receiver)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# action -> (method, path on the control port)
ACTIONS = {
    "status": ("GET", "/status"),
    "freeze": ("POST", "/schedule/pause"),
    "unfreeze": ("POST", "/schedule/resume"),
    "pin": ("POST", "/serving/pin"),
    "rollback": ("POST", "/serving/rollback"),
    "fallback": ("POST", "/serving/fallback"),
    "restart-replicas": ("POST", "/serving/restart"),
    "ingest-pause": ("POST", "/ingest/pause"),
    "ingest-resume": ("POST", "/ingest/resume"),
}
WITH_REASON = ("pin", "rollback", "fallback")


def request_body(action: str, version: str | None, reason: str | None) -> dict | None:
    """The JSON body of `action` (None for a GET); ValueError naming the argument when one is missing or bad."""
    if ACTIONS[action][0] == "GET":
        return None
    body: dict = {}
    if action == "pin":
        if version is None or not version.isdigit() or int(version) < 1:
            raise ValueError(f"control pin needs --version <registered version number>, got {version!r}")
        body["version"] = int(version)
    if reason is not None and action in WITH_REASON:
        body["reason"] = reason
    return body


def cmd_control(args: argparse.Namespace) -> int:
    """Call one mitigation on the operator's control port with the token file's token; print its JSON answer."""
    import httpx

    from movielab.auth import AuthError, client_headers
    from movielab.recommender.opscommands import _tokens_path

    body = request_body(args.action, args.version, args.reason)
    method, path = ACTIONS[args.action]
    url = args.operator.rstrip("/") + path
    try:
        headers = client_headers(_tokens_path(args), args.identity)
    except AuthError as exc:
        raise SystemExit(f"no token for the operator: {exc} (or set $MOVIELAB_TOKEN)") from None
    try:  # a fallback trains popularity and a pin rolls a version out replica by replica: minutes at most
        r = httpx.request(method, url, json=body, headers=headers, timeout=600)
    except httpx.HTTPError as exc:
        raise SystemExit(f"the operator at {args.operator} did not answer: {exc}") from None
    try:
        print(json.dumps(r.json(), indent=2))
    except ValueError:
        print(r.text)
    return 0 if r.status_code == 200 else 1


def cmd_pager(args: argparse.Namespace) -> int:
    """Receive Alertmanager's notifications on loopback and append them to the pages file (blocking)."""
    import logging

    from movielab.recommender.monitoring.pager import Pages, create_app
    from movielab.webserver import serve_listeners

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    pages = Pages(args.pages)
    print(f"pager on http://{args.host}:{args.port} (/page, /ticket); pages appended to {pages.path}", flush=True)
    serve_listeners([(create_app(pages), args.host, args.port)])
    return 0


def register(rec: argparse._SubParsersAction) -> None:
    """Add `control` and `pager` to `movielab recommender`."""
    p = rec.add_parser("control", help="incident mitigations: freeze, pin, rollback, fallback, restart-replicas, ...")
    p.add_argument("action", choices=list(ACTIONS))
    p.add_argument("--version", help="pin: the registered version to serve")
    p.add_argument("--reason", help="pin, rollback, fallback: why (recorded with the identity of the token)")
    p.add_argument("--operator", default="http://127.0.0.1:8083", help="the operator's control URL")
    p.add_argument("--store", type=Path, help="the recommender's store: its token file is next to it")
    p.add_argument("--tokens", help="token file (default: access.tokens next to the store); or $MOVIELAB_TOKEN")
    p.add_argument("--identity", help="whose token to use (default: the first in the file)")
    p.set_defaults(func=cmd_control)
    p = rec.add_parser("pager", help="Alertmanager's local webhook receiver: writes what would be paged")
    p.add_argument("--host", default="127.0.0.1", help="interface (loopback by default)")
    p.add_argument("--port", type=int, default=8085)
    p.add_argument("--pages", type=Path, default=Path(".movielab/pages.jsonl"), help="JSONL file of pages")
    p.set_defaults(func=cmd_pager)
