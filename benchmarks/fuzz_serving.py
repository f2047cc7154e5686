"""Fuzz serving's public app, its admin app and the operator's control app with schemathesis: count 5xx.

Needs `pip install "schemathesis>=4,<5"` (not a project dependency). Every app runs under uvicorn on a free
loopback port, over real parts: a saved popularity version in an artifacts root for serving, and a real
`Operator` (empty DuckDB store, MLflow registry on sqlite, `OneServer` serving) for control. The OpenAPI
description is written here from the routes and the pydantic body models (`LoadBody`, ...), so generated
bodies are both valid and, in negative mode, invalid on purpose. For each app the script prints requests,
5xx (target 0) and the status counts; as the baseline measured in the same run, the same generated requests
without the token, which must all be 401 (and 0 5xx) on the guarded apps.

    .venv/bin/python benchmarks/fuzz_serving.py [--examples 200]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np


def save_version(folder: Path) -> Path:
    """A real popularity version over users 1..200."""
    from movielab.recommender.training.data import TrainingData
    from movielab.recommender.training.models import create

    rng = np.random.default_rng(0)
    items = [f"movie+{i}+{1950 + i}" for i in range(60)]
    n = 2000
    data = TrainingData.from_triples(
        rng.integers(1, 201, n), rng.choice(items, n), np.ones(n), np.zeros(n), np.zeros(n), snapshot_id="snap-fuzz"
    )
    folder.mkdir(parents=True)
    create("popularity").fit(data).save(folder)
    manifest = {
        "model": "popularity",
        "version": folder.name,
        "snapshot_id": "snap-fuzz",
        "code_version": "fuzz",
        "trained_at": "2026-03-20T08:00:00",
        "params": {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


# Positive cases get well-formed ids and actions (so answers other than 400 are reached); negative ones break them.
PARAMS = {
    "userid": {"type": "string", "pattern": "^[1-9][0-9]{0,5}$"},
    "action": {"type": "string", "enum": ["promote", "rollback", "pause", "resume"]},
}


def _body(model) -> dict:
    return {"required": False, "content": {"application/json": {"schema": model.model_json_schema()}}}


def _op(params: list[str] = (), body=None, secured: bool = True) -> dict:
    op: dict = {"responses": {"default": {"description": "any"}}}
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": PARAMS.get(p, {"type": "string"})} for p in params
        ]
    if body is not None:
        op["requestBody"] = _body(body)
    if secured:
        op["security"] = [{"bearer": []}]
    return op


def spec(title: str, paths: dict) -> dict:
    """An OpenAPI 3.0 document of `paths` with a bearer-token scheme."""
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def fuzz(name: str, document: dict, url: str, headers: dict[str, str], examples: int) -> collections.Counter:
    """Send schemathesis' positive and negative cases of every operation to `url`; status counts."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_dict(document)
    counts: collections.Counter = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def run(case) -> None:
                response = case.call(base_url=url, headers=headers, timeout=30)
                counts[response.status_code] += 1
                if response.status_code >= 500:
                    print(
                        f"  5xx: {case.method} {case.formatted_path} body={str(case.body)[:120]!r} -> "
                        f"{response.status_code} {response.text[:200]}"
                    )

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body): positive cases only
                pass
    return counts


def line(name: str, with_token: collections.Counter, without: collections.Counter | None) -> str:
    n = sum(with_token.values())
    fives = sum(v for k, v in with_token.items() if k >= 500)
    text = f"{name:<34} {n:>6} requests, 5xx: {fives}   statuses {dict(sorted(with_token.items()))}"
    if without is not None:
        m = sum(without.values())
        text += (
            f"\n{'':<34} baseline without the token: {m} requests, 401: {without[401]}, "
            f"5xx: {sum(v for k, v in without.items() if k >= 500)}"
        )
    return text


def main() -> None:
    """Start the apps, fuzz each, print the counts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=100, help="hypothesis examples per operation and mode")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")

    from movielab.auth import ensure_tokens
    from movielab.recommender.config import RecommenderConfig
    from movielab.recommender.release.control import EmptyBody, OverrideBody, StartBody, create_control_app
    from movielab.recommender.release.operator import Operator
    from movielab.recommender.serving.admin import LoadBody, ShareBody, create_admin_app
    from movielab.recommender.serving.app import create_app
    from movielab.recommender.serving.server import OneServer
    from movielab.recommender.serving.versions import load_version
    from movielab.recommender.store.events import EventStore
    from movielab.recommender.training.retrain import Retrainer
    from movielab.webserver import ServerThread

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        version = save_version(base / "models" / "popularity" / "v0001")
        tokens = ensure_tokens(base / "access.tokens")
        loaded = load_version(version)
        app = create_app(loaded.table, folder=loaded.folder, manifest=loaded.manifest)
        admin = create_admin_app(app, tokens, base / "models")
        public_doc = spec(
            "serving",
            {
                "/recommend/{userid}": {"get": _op(["userid"], secured=False)},
                "/healthz": {"get": _op(secured=False)},
                "/metrics": {"get": _op(secured=False)},
            },
        )
        admin_doc = spec(
            "serving admin",
            {
                "/admin/state": {"get": _op()},
                "/admin/load": {"post": _op(body=LoadBody)},
                "/admin/share": {"post": _op(body=ShareBody)},
                "/admin/promote": {"post": _op(body=EmptyBody)},
                "/admin/drop": {"post": _op(body=EmptyBody)},
                "/explain/{userid}": {"get": _op(["userid"])},
            },
        )
        control_doc = spec(
            "operator control",
            {
                "/status": {"get": _op()},
                "/metrics": {"get": _op(secured=False)},
                "/canary/{action}": {"post": _op(["action"], body=OverrideBody)},
                "/canary/start": {"post": _op(body=StartBody)},
                "/retrain": {"post": _op(body=EmptyBody)},
                "/schedule/{action}": {"post": _op(["action"], body=EmptyBody)},
            },
        )
        config = RecommenderConfig(store=base / "store.duckdb", artifacts=base / "models")
        out = []
        with EventStore(config.store) as store:
            operator = Operator(store, Retrainer.from_config(config, store), lambda v: OneServer(v), base / "operator")
            with (
                ServerThread(app) as s,
                ServerThread(admin) as a,
                ServerThread(create_control_app(operator, tokens)) as c,
            ):
                auth = tokens.headers()
                out.append(
                    line("serving /recommend (public)", fuzz("public", public_doc, s.url, {}, args.examples), None)
                )
                out.append(
                    line(
                        "serving admin + explain (token)",
                        fuzz("admin", admin_doc, a.url, auth, args.examples),
                        fuzz("admin", admin_doc, a.url, {}, max(10, args.examples // 5)),
                    )
                )
                out.append(
                    line(
                        "operator control (token)",
                        fuzz("control", control_doc, c.url, auth, args.examples),
                        fuzz("control", control_doc, c.url, {}, max(10, args.examples // 5)),
                    )
                )
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
