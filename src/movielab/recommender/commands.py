"""`movielab recommender …` commands: parse arguments, then call one function each."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)


def _config(args: argparse.Namespace):
    from movielab.recommender.config import RecommenderConfig

    given = {k: v for k, v in vars(args).items() if k in RecommenderConfig.model_fields and v is not None}
    return RecommenderConfig(**given)


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r} is not ISO-8601 (e.g. 2026-03-20T06:00:00)") from None


def cmd_ingest(args: argparse.Namespace) -> int:
    """Follow the team topic into the event store until interrupted."""
    from movielab.kafka.admin import topic_name
    from movielab.recommender.ingest.consumer import run_ingest

    c = _config(args)
    c.store.parent.mkdir(parents=True, exist_ok=True)
    topics = args.topic or [topic_name(c.team)]
    options = {"group_id": args.group, "batch_size": args.batch_size}
    ingestor = run_ingest(
        c.kafka,
        topics,
        c.store,
        c.world_api,
        until_idle=args.until_idle,
        **{k: v for k, v in options.items() if v is not None},
    )
    print(json.dumps({"stored": ingestor.events_stored, "quarantined": dict(ingestor.quarantined)}, default=str))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Snapshot the store, fit a model, save a new version with its manifest."""
    from movielab.recommender.store.events import EventStore
    from movielab.recommender.training.pipeline import train

    c = _config(args)
    params = json.loads(args.params) if args.params else None
    with EventStore(c.store, existing=True) as store:
        trained = train(
            store,
            c.model,
            c.artifacts,
            snapshot=args.snapshot,
            start=_time(args.start),
            end=_time(args.end),
            params=params,
        )
    print(json.dumps({"folder": str(trained.folder), **trained.manifest}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The comparison table: on the store's time-aware split, or with `--ratings` on a ratings file
    (e.g. ml-100k's u.data) under the published protocol (per-user random 80/20, seeds 0-4, mean ± std)."""
    from movielab.recommender.training import evaluate
    from movielab.recommender.training.models import create

    names = args.models.split(",")
    params = json.loads(args.params) if args.params else {}
    unknown = set(params) - set(names)
    if unknown:
        raise ValueError(f"--params names models not in --models: {', '.join(sorted(unknown))}")

    def models() -> list:
        return [create(n, **params.get(n, {})) for n in names]

    if args.ratings:
        from movielab.recommender.training import ratingsfile

        r = ratingsfile.read(args.ratings)
        seeds = [int(s) for s in args.seeds.split(",")]
        rows = evaluate.ml100k_protocol(r.user, r.item, r.rating, r.timestamp, models, seeds)
        title = (
            f"{ratingsfile.find(args.ratings).name}: {len(r.user):,} ratings, per-user random 80/20 split "
            f"(all ratings positive), seeds {args.seeds}, mean ± std"
        )
    else:
        from movielab.recommender.store.events import EventStore
        from movielab.recommender.training.data import TrainingData

        c = _config(args)
        with EventStore(c.store, existing=True) as store:
            snap = (
                store.snapshot(args.snapshot)
                if args.snapshot
                else store.create_snapshot(f"evaluate-{datetime.now().strftime('%Y%m%dT%H%M%S%f')}", None, None)
            )
            train, test = evaluate.time_split(TrainingData.from_snapshot(store, snap))
        rows = evaluate.compare(models(), train, test)
        title = f"store snapshot {snap.id} ({snap.rows:,} events), time-aware 80/20 split"
    table = f"# Offline comparison\n\n{title}\n\n{evaluate.to_markdown(rows)}\n"
    if args.out:
        Path(args.out).write_text(table)
    print(table)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a trained version on `/recommend/<user>` (blocking); the admin and explain endpoints on their own
    loopback port with the token in `access.tokens` next to the store."""
    from movielab.auth import ensure_tokens
    from movielab.recommender.bootstrap import TOKEN_FILE
    from movielab.recommender.serving.admin import create_admin_app
    from movielab.recommender.serving.app import create_app
    from movielab.recommender.serving.versions import load_version, write_segments
    from movielab.recommender.store.events import EventStore
    from movielab.recommender.training.pipeline import latest
    from movielab.webserver import serve_listeners

    c = _config(args)
    folder = Path(args.version) if args.version else latest(c.artifacts, args.model)
    segments = args.segments
    if segments is None and c.store.exists():  # replicas have no store: the segments travel as a file
        with EventStore(c.store, existing=True) as store:
            segments = write_segments(folder / "segments.json", store.user_segments())
    loaded = load_version(folder, segments)
    tokens_path = Path(args.tokens) if args.tokens else Path(c.store).parent / TOKEN_FILE
    tokens = ensure_tokens(tokens_path, "operator")
    app = create_app(loaded.table, folder=loaded.folder, manifest=loaded.manifest)
    admin = create_admin_app(app, tokens, c.artifacts)
    print(
        f"serving {loaded.table.provenance.header('model')} for {len(loaded.table):,} users on "
        f"http://{c.host}:{c.port}; admin on http://{args.admin_host}:{args.admin_port} (token in "
        f"{tokens_path})",
        flush=True,
    )
    serve_listeners([(app, c.host, c.port), (admin, args.admin_host, args.admin_port)])
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """One retraining run now (snapshot, checks, train, gate, register); print its record."""
    from movielab.recommender.store.events import EventStore
    from movielab.recommender.training.retrain import Retrainer

    c = _config(args)
    if args.params:
        c = c.model_copy(update={"model_params": json.loads(args.params)})
    with EventStore(c.store, existing=True) as store:
        record = Retrainer.from_config(c, store).run(trigger="on demand")
    print(json.dumps(record.as_dict(), indent=2, default=str))
    return 0 if record.status == "accepted" else 1


def cmd_explain(args: argparse.Namespace) -> int:
    """Why a user gets the champion's (or challenger's, or a version's) answer, as JSON."""
    from movielab.recommender.serving.app import parse_user_id
    from movielab.recommender.serving.explain import explain_from_registry

    alias = "challenger" if args.challenger else "champion"
    out = explain_from_registry(_config(args), parse_user_id(args.user), alias, args.version)
    print(json.dumps(out, indent=2, default=str))
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    """List the registered versions with their aliases and lineage."""
    from movielab.recommender.training.registry import Registry

    registry = Registry.from_config(_config(args), existing=True)
    versions = registry.versions()
    if args.json:
        print(json.dumps([v.as_dict() for v in versions], indent=2))
        return 0
    print(f"{registry.name} at {registry.tracking_uri}: {len(versions)} version(s)")
    for v in versions:
        t = v.tags
        print(
            f"  {v.version:>4}  {','.join(v.aliases) or '-':<20} {t.get('model')} {t.get('artifact_version')}  "
            f"snapshot {t.get('snapshot_id')} ({t.get('snapshot_rows')} rows)  code {t.get('code_version')}  "
            f"run {v.run_id}"
        )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Make a registered version the champion (a manual override of the gate and canary)."""
    from movielab.recommender.training.registry import Registry

    version = Registry.from_config(_config(args), existing=True).promote(args.version)
    print(json.dumps(version.as_dict(), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `recommender ingest|train|evaluate|serve|retrain|explain|registry|promote` to the main parser."""
    rec = sub.add_parser("recommender", help="the recommendation service").add_subparsers(dest="what", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", type=Path, help="DuckDB event store (default .movielab/recommender/store.duckdb)")
        p.add_argument("--artifacts", type=Path, help="folder of model versions (default .movielab/recommender/models)")

    p = rec.add_parser("ingest", help="follow movielog<team> into the event store")
    common(p)
    p.add_argument("--kafka", help="bootstrap host:port")
    p.add_argument("--team", type=int)
    p.add_argument("--world-api", dest="world_api", help="base URL of the world API")
    p.add_argument("--topic", action="append", help="topic to ingest instead of movielog<team> (repeatable)")
    p.add_argument("--group", help="Kafka consumer group (default recommender-ingest)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="lines per store transaction (default 20,000)")
    p.add_argument(
        "--until-idle",
        dest="until_idle",
        type=float,
        help="exit after this many seconds without new lines (default: run until interrupted)",
    )
    p.set_defaults(func=cmd_ingest)
    p = rec.add_parser("train", help="fit a model on a store snapshot and save a new version")
    common(p)
    p.add_argument("--model", help="popularity, itemknn, als or ease (default ease)")
    p.add_argument("--params", help="JSON hyper-parameters, e.g. '{\"lam\": 300}'")
    p.add_argument("--snapshot", help="train on this existing snapshot (name or id)")
    p.add_argument("--start", help="window start (ISO-8601) of a new snapshot")
    p.add_argument("--end", help="window end (ISO-8601) of a new snapshot")
    p.set_defaults(func=cmd_train)
    p = rec.add_parser("evaluate", help="offline comparison table (Markdown)")
    common(p)
    p.add_argument("--models", default="popularity,itemknn,als,ease")
    p.add_argument("--params", help='JSON hyper-parameters per model, e.g. \'{"ease": {"lam": 500}}\'')
    p.add_argument("--snapshot")
    p.add_argument(
        "--ratings",
        type=Path,
        help="a ratings file (u.data or RecBole .inter) or its folder: "
        "the published protocol instead of the store's split",
    )
    p.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the published protocol (comma-separated)")
    p.add_argument("--out", help="also write the table to this file")
    p.set_defaults(func=cmd_evaluate)
    p = rec.add_parser("serve", help="serve the newest trained version")
    common(p)
    p.add_argument("--model", help="newest version of this model (default: newest of any)")
    p.add_argument("--version", help="folder of the version to serve")
    p.add_argument("--segments", type=Path, help="user segments file (JSON/Arrow) for cold-start fallbacks")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--admin-host",
        dest="admin_host",
        default="127.0.0.1",
        help="interface of the admin/explain port (loopback by default, whatever --host)",
    )
    p.add_argument("--admin-port", dest="admin_port", type=int, default=8084, help="admin/explain port (token)")
    p.add_argument("--tokens", help="token file (default: access.tokens next to the store, created mode 0600)")
    p.set_defaults(func=cmd_serve)

    def registry_args(p: argparse.ArgumentParser) -> None:
        common(p)
        p.add_argument("--team", type=int, help="team number: the registered model is movielab-team<N>")
        p.add_argument(
            "--tracking-uri",
            dest="tracking_uri",
            help="MLflow tracking URI (default sqlite:///<artifacts parent>/mlflow.db)",
        )

    p = rec.add_parser("retrain", help="one retraining run now: snapshot, checks, train, gate, register")
    registry_args(p)
    p.add_argument("--model", help="popularity, itemknn, als or ease (default ease)")
    p.add_argument("--params", help="JSON hyper-parameters, e.g. '{\"lam\": 300}'")
    p.set_defaults(func=cmd_retrain)
    p = rec.add_parser("explain", help="why a user gets the recommendations it gets (JSON)")
    registry_args(p)
    p.add_argument("user", help="user id")
    p.add_argument("--challenger", action="store_true", help="explain the challenger's answer, not the champion's")
    p.add_argument("--version", help="explain this registered version instead")
    p.set_defaults(func=cmd_explain)
    p = rec.add_parser("registry", help="list registered model versions with their aliases")
    registry_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_registry)
    p = rec.add_parser("promote", help="make a registered version the champion (manual override)")
    registry_args(p)
    p.add_argument("version", help="registered version number")
    p.set_defaults(func=cmd_promote)
    from movielab.recommender import controlcommands, opscommands

    opscommands.register(rec, common)
    controlcommands.register(rec)
