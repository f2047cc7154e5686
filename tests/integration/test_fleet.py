"""Two real replica processes behind the real nginx: rollouts under load, canary steps, admin kept private."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from movielab.recommender.errors import FleetError
from movielab.recommender.serving import traffic
from movielab.recommender.serving.fleet import Fleet
from movielab.recommender.serving.nginx import find_nginx
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models import create

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"),
]

ITEMS = [f"movie+{i}+{1950 + i % 70}" for i in range(120)]
N_USERS = 300


def save_version(folder: Path, version: str, seed: int) -> Path:
    """A real saved popularity version over users 1..300 (each seed ranks the movies differently)."""
    rng = np.random.default_rng(seed)
    n = 3000
    data = TrainingData.from_triples(
        rng.integers(1, N_USERS + 1, n),
        rng.choice(ITEMS, n, p=_skew(rng)),
        np.ones(n),
        np.zeros(n),
        np.zeros(n),
        snapshot_id=f"snap-{version}",
    )
    create("popularity").fit(data).save(folder)
    manifest = {
        "model": "popularity",
        "version": version,
        "snapshot_id": f"snap-{version}",
        "code_version": "test",
        "trained_at": "2026-03-20T08:00:00",
        "params": {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _skew(rng: np.random.Generator) -> np.ndarray:
    w = rng.permutation(np.arange(1, len(ITEMS) + 1, dtype=float) ** 2)
    return w / w.sum()


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("models") / "popularity"
    base.mkdir()
    return [save_version(base / f"v000{k}", f"v000{k}", seed=k) for k in range(1, 6)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, versions):
    with Fleet(tmp_path_factory.mktemp("fleet"), versions[0], replicas=2) as f:
        yield f


def version_header(r: httpx.Response) -> str:
    """The version of an X-Model header: `popularity/v0002; ...` -> `v0002`."""
    return r.headers["x-model"].split(";")[0].split("/")[1]


def test_three_rollouts_under_concurrent_load_never_fail_a_request(fleet, versions) -> None:
    names = [v.name for v in versions]
    phase = [0]  # rollouts finished so far: during rollout k, versions k (old) and k + 1 (new) may answer
    stop = threading.Event()
    problems: list[str] = []
    counts: list[int] = []

    async def client(seed: int) -> None:
        # Plain HTTP/1.1 on one kept-alive connection, no retry (stricter than the world's aiohttp client,
        # which resends a GET once when the server closed the connection under it): a request lost because
        # nginx or a replica closed the connection, any non-200 and any answer over 600 ms is a problem.
        rng = random.Random(seed)
        reader = writer = None
        while not stop.is_set():
            if writer is None:
                reader, writer = await asyncio.open_connection(fleet.host, fleet.port)
            sent = phase[0]
            writer.write(f"GET /recommend/{rng.randint(1, N_USERS + 50)} HTTP/1.1\r\nHost: fleet\r\n\r\n".encode())
            try:
                async with asyncio.timeout(0.6):
                    status, headers, text = await _response(reader)
            except (OSError, EOFError, TimeoutError, ValueError, KeyError) as exc:
                problems.append(f"request lost: {type(exc).__name__}: {exc}")
                writer.close()
                reader = writer = None
                continue
            model = headers.get("x-model", "")
            allowed = names[sent : phase[0] + 2]
            if status != 200 or model.split(";")[0].split("/")[-1] not in allowed:
                problems.append(f"{status} {model} (allowed {allowed}) {text[:80]}")
            if headers.get("connection", "").lower() == "close":  # announced: not a lost request
                writer.close()
                reader = writer = None
            counts.append(1)
        if writer is not None:
            writer.close()

    async def hammer() -> None:
        await asyncio.gather(*(client(k) for k in range(8)))

    threads = [threading.Thread(target=asyncio.run, args=(hammer(),))]
    for t in threads:
        t.start()
    try:
        for k in range(1, 4):
            report = fleet.rollout(versions[k])
            phase[0] = k
            assert report.version == f"popularity/{names[k]}" and set(report.replica_seconds) == {
                r.port for r in fleet.replicas
            }
            for r in fleet.replicas:  # every replica serves the new version, asked directly
                health = httpx.get(f"{r.url}/healthz").json()
                assert health["provenance"]["model_version"] == names[k]
            with httpx.Client(base_url=fleet.url) as http:
                assert {version_header(http.get(f"/recommend/{u}")) for u in range(1, 41)} == {names[k]}
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert problems == []
    assert len(counts) > 300  # the clients really hammered through all three rollouts
    assert fleet.previous == versions[2].resolve() and fleet.champion == versions[3].resolve()


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 answer with a Content-Length."""
    line = await reader.readline()
    if not line:
        raise EOFError("connection closed with a request in flight")
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, value = line.decode("latin-1").split(":", 1)
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body.decode("utf-8", "replace")


def test_canary_share_promote_and_rollback_on_every_replica(fleet, versions) -> None:
    champion = fleet.champion.name
    fleet.load_challenger(versions[4], share=0.3, salt=11)
    users = range(1, 201)
    want = {u: "challenger" if traffic.in_challenger(u, 11, 0.3) else "champion" for u in users}
    for base in [fleet.url] + [r.url for r in fleet.replicas]:  # sticky: the same arm whichever replica answers
        with httpx.Client(base_url=base) as http:
            got = {u: http.get(f"/recommend/{u}").headers["x-model"].rsplit("arm=", 1)[1] for u in users}
        assert got == want, base
    states = fleet.set_share(1.0)
    assert [s["share"] for s in states] == [1.0, 1.0] and {s["salt"] for s in states} == {11}
    with httpx.Client(base_url=fleet.url) as http:
        assert {version_header(http.get(f"/recommend/{u}")) for u in users} == {"v0005"}
    fleet.rollback()
    with httpx.Client(base_url=fleet.url) as http:
        assert {version_header(http.get(f"/recommend/{u}")) for u in users} == {champion}
    with pytest.raises(FleetError, match=r"POST /admin/promote answered 409: no challenger is loaded"):
        fleet.promote()
    fleet.load_challenger(versions[4], share=0.5)
    fleet.promote()
    assert [s["champion"]["provenance"]["model_version"] for s in fleet.state()] == ["v0005", "v0005"]
    assert all(s["challenger"] is None for s in fleet.state())
    assert fleet.champion == versions[4].resolve() and fleet.previous.name == champion


def test_admin_is_not_reachable_through_nginx(fleet) -> None:
    with httpx.Client(base_url=fleet.url) as http:
        for method, path in (
            ("GET", "/admin/state"),
            ("POST", "/admin/promote"),
            ("GET", "/recommend/../admin/state"),
            ("GET", "/%61dmin/state"),
            ("GET", "/explain/5"),
            ("GET", "/metrics"),
        ):
            r = http.request(method, httpx.URL(fleet.url + path))
            assert r.status_code in (403, 404), (path, r.status_code, r.text)
        assert http.get("/healthz").json()["status"] == "ok"
    for r in fleet.replicas:  # the replica's public port has no admin; its admin port is loopback and needs the token
        assert httpx.get(f"{r.url}/admin/state").status_code == 404
        assert httpx.get(f"{r.url}/explain/5").status_code == 404
        assert httpx.get(f"{r.admin_url}/admin/state").status_code == 401
        assert httpx.post(f"{r.admin_url}/admin/load", json={"folder": "x", "drain": True}).status_code == 401
        state = httpx.get(f"{r.admin_url}/admin/state", headers=fleet.tokens.headers())
        assert state.status_code == 200 and state.json()["champion"]["folder"] == str(fleet.champion)
        assert r.host == "127.0.0.1"


def test_a_failed_load_names_the_replica_and_puts_it_back(fleet, tmp_path) -> None:
    broken = fleet.root / "popularity" / "v0099"  # inside the artifacts root: the load itself fails
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"model": "popularity", "version": "v0099"}))
    with pytest.raises(
        FleetError,
        match=rf"replica {fleet.replicas[0].url}: POST /admin/load answered 400: "
        r"cannot load that version as champion: its files are missing",
    ):
        fleet.rollout(broken)
    assert not fleet.state()[0]["draining"]  # drained while it loaded, serving again afterwards
    with httpx.Client(base_url=fleet.url) as http:
        assert {http.get(f"/recommend/{u}").status_code for u in range(1, 21)} == {200}


def test_stop_leaves_no_process_behind(tmp_path, versions) -> None:
    fleet = Fleet(tmp_path / "fleet", versions[0], replicas=1).start()
    pids = [r.proc.pid for r in fleet.replicas] + [fleet.nginx.proc.pid]
    pids += [
        int(p) for p in Path(f"/proc/{fleet.nginx.proc.pid}/task/{fleet.nginx.proc.pid}/children").read_text().split()
    ]
    report = fleet.rollout(versions[1])  # one replica: loaded in place, nothing to drain to
    assert list(report.replica_seconds) == [fleet.replicas[0].port]
    fleet.stop()
    fleet.stop()  # twice is fine
    alive = [p for p in pids if _alive(p)]
    assert alive == []


def test_a_missing_version_is_an_error_before_anything_starts(tmp_path) -> None:
    with pytest.raises(FleetError, match=r"version folder .*nowhere: cannot read model and version"):
        Fleet(tmp_path / "fleet", tmp_path / "nowhere").start()
    assert not (tmp_path / "fleet").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's wait is missing.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_serving_on_every_interface_keeps_replicas_and_admin_on_loopback(tmp_path, versions) -> None:
    with Fleet(
        tmp_path / "fleet", versions[0], replicas=1, host="0.0.0.0"
    ) as fleet:  # every interface: the point of the test
        r = fleet.replicas[0]
        listening = _listening()
        assert listening[fleet.port] == "0.0.0.0"
        assert listening[r.port] == "127.0.0.1" and listening[r.admin_port] == "127.0.0.1"
        assert httpx.get(f"http://127.0.0.1:{fleet.port}/admin/state").status_code == 403  # nginx: not forwarded


def _listening() -> dict[int, str]:
    """Port -> IPv4 address of every listening TCP socket (Linux /proc/net/tcp)."""
    out = {}
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        if state == "0A":  # LISTEN
            addr, port = local.split(":")
            out[int(port, 16)] = ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return out
