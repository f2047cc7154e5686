"""`movielab recommender operate | fleet | canary …`: the commands that run and steer the service in production."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path


def _config(args: argparse.Namespace):
    from movielab.recommender.commands import _config

    return _config(args)


def cmd_operate(args: argparse.Namespace) -> int:
    """Ingest, retrain, canary, monitor and serve until SIGINT/SIGTERM."""
    from movielab.recommender.bootstrap import run
    from movielab.recommender.release.canary import CanaryPlan

    if args.params:
        args.model_params = json.loads(args.params)
    c = _config(args)
    given = {
        "steps": None if args.steps is None else tuple(float(s) for s in args.steps.split(",")),
        "min_requests": args.min_requests,
        "margin": args.margin,
        "tau": args.tau,
    }
    plan = CanaryPlan(**{k: v for k, v in given.items() if v is not None})  # the rest: the plan's defaults

    def ready(operator, control_url: str) -> None:
        print(
            f"operator: {control_url}/status, {control_url}/metrics; serving on http://{c.host}:{c.port} "
            f"once the first model is trained; control token in {_tokens_path(args)}",
            flush=True,
        )

    run(
        c,
        replicas=args.replicas,
        control_port=args.control_port,
        tick_seconds=args.tick,
        plan=plan,
        on_ready=ready,
        control_host=args.control_host,
        keep_serving=args.keep_serving,
    )
    return 0


def _tokens_path(args: argparse.Namespace) -> Path:
    """The token file: `--tokens`, else `access.tokens` next to the store."""
    from movielab.recommender.bootstrap import TOKEN_FILE

    if getattr(args, "tokens", None):
        return Path(args.tokens)
    return Path(_config(args).store).parent / TOKEN_FILE


def cmd_fleet(args: argparse.Namespace) -> int:
    """Serve one version from replicas behind nginx until SIGINT/SIGTERM."""
    import signal

    from movielab.recommender.serving.fleet import Fleet
    from movielab.recommender.training.pipeline import latest

    c = _config(args)
    version = Path(args.version) if args.version else latest(c.artifacts, args.model)
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    fleet = Fleet(
        Path(c.store).parent / "fleet",
        version,
        args.replicas,
        c.port,
        c.host,
        tokens=_tokens_path(args),
        root=Path(c.artifacts)
        if Path(version).resolve().is_relative_to(Path(c.artifacts).resolve())
        else Path(version).resolve().parent,
    )
    fleet.start()
    try:
        print(
            f"serving {version} on {fleet.url} from replicas {', '.join(r.url for r in fleet.replicas)}"
            f"{' (adopted the running fleet)' if fleet.adopted else ''}; admin token in {fleet.tokens_path}",
            flush=True,
        )
        stop.wait()
    finally:
        if args.keep_serving:
            fleet.detach()
        else:
            fleet.stop()
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    """Show the running experiment, start one by hand, or promote / roll back / pause / resume it."""
    import httpx

    from movielab.auth import AuthError, client_headers

    url = args.operator.rstrip("/")
    try:
        headers = client_headers(_tokens_path(args), args.identity)
    except AuthError as exc:
        raise SystemExit(f"no token for the operator: {exc} (or set $MOVIELAB_TOKEN)") from None
    try:
        if args.action == "status":
            r = httpx.get(f"{url}/status", headers=headers, timeout=30)
        elif args.action == "start":
            if not args.version:
                raise SystemExit("canary start needs --version <registered version>")
            r = httpx.post(f"{url}/canary/start", json={"version": args.version}, headers=headers, timeout=600)
        else:
            r = httpx.post(f"{url}/canary/{args.action}", json={"reason": args.reason}, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        raise SystemExit(f"the operator at {url} did not answer: {exc}") from None
    print(json.dumps(r.json(), indent=2))
    return 0 if r.status_code == 200 else 1


def register(rec: argparse._SubParsersAction, common) -> None:
    """Add `operate`, `fleet` and `canary` to `movielab recommender`."""
    p = rec.add_parser("operate", help="run the recommender: ingest, retrain, canary, monitor, serve")
    common(p)
    p.add_argument("--kafka", help="bootstrap host:port")
    p.add_argument("--team", type=int)
    p.add_argument("--world-api", dest="world_api", help="base URL of the world API")
    p.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow tracking URI")
    p.add_argument("--model", help="model retrained on schedule (default ease)")
    p.add_argument("--params", help="its hyper-parameters as JSON, e.g. '{\"popularity_weight\": 8}'")
    p.add_argument("--host")
    p.add_argument("--port", type=int, help="serving port (nginx in front of the replicas)")
    p.add_argument("--replicas", type=int, default=2, help="serving processes behind nginx; 0: one in-process server")
    p.add_argument(
        "--control-port",
        dest="control_port",
        type=int,
        default=8083,
        help="the operator's /metrics, /status and canary overrides",
    )
    p.add_argument(
        "--control-host",
        dest="control_host",
        default="127.0.0.1",
        help="interface of the control port (token required; loopback by default, whatever --host)",
    )
    p.add_argument("--tokens", help="token file (default: access.tokens next to the store, created mode 0600)")
    p.add_argument(
        "--keep-serving",
        dest="keep_serving",
        action="store_true",
        help="leave replicas and nginx running on exit (a restarted operator adopts them)",
    )
    p.add_argument("--tick", type=float, default=2.0, help="seconds between operator ticks")
    # Canary settings left out take `CanaryPlan`'s defaults (0.1,0.5,1.0; 1000 requests; margin 0.02; tau 0.02).
    p.add_argument("--steps", help="canary shares, comma-separated")
    p.add_argument(
        "--min-requests", dest="min_requests", type=int, help="requests per arm before a canary step may be judged"
    )
    p.add_argument("--margin", type=float, help="canary non-inferiority margin on conversion")
    p.add_argument("--tau", type=float, help="sequential test's mixing sd: the effect size that matters")
    p.set_defaults(func=cmd_operate)
    p = rec.add_parser("fleet", help="serve a version from replicas behind nginx")
    common(p)
    p.add_argument("--model", help="newest version of this model (default: newest of any)")
    p.add_argument("--version", help="folder of the version to serve")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--tokens", help="token file of the replicas' admin ports (default: access.tokens next to the store)"
    )
    p.add_argument(
        "--keep-serving",
        dest="keep_serving",
        action="store_true",
        help="leave replicas and nginx running on exit (the next start adopts them)",
    )
    p.set_defaults(func=cmd_fleet)
    p = rec.add_parser("canary", help="the running canary: status, or a manual promote/rollback/pause/resume")
    p.add_argument("action", choices=["status", "start", "promote", "rollback", "pause", "resume"])
    p.add_argument("--version", help="start: the registered version to canary (past the offline gate)")
    p.add_argument("--operator", default="http://127.0.0.1:8083", help="the operator's control URL")
    p.add_argument("--store", type=Path, help="the recommender's store: its token file is next to it")
    p.add_argument("--tokens", help="token file (default: access.tokens next to the store); or $MOVIELAB_TOKEN")
    p.add_argument("--identity", help="whose token to use (default: the first in the file); recorded as `by`")
    p.add_argument("--reason", default="manual override", help="why (recorded with the decision)")
    p.set_defaults(func=cmd_canary)
