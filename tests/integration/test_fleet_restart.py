"""`Fleet.restart_exited` (the `control restart-replicas` mitigation): a replica killed during a canary comes back
on its old ports behind the same nginx, serving the champion and the challenger at the same share and salt."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from movielab.recommender.errors import FleetError
from movielab.recommender.serving import traffic as split
from movielab.recommender.serving.fleet import Fleet
from movielab.recommender.serving.nginx import find_nginx

sys.path.insert(0, str(Path(__file__).parent))
from test_fleet import save_version

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"),
]


def test_a_killed_replica_restarts_on_its_ports_with_the_canary_split(tmp_path) -> None:
    base = tmp_path / "models" / "popularity"
    champion, challenger = (save_version(base / v, v, seed=k) for k, v in enumerate(("v0001", "v0002"), 1))
    with Fleet(tmp_path / "fleet", champion, replicas=2) as fleet:
        assert fleet.restart_exited() == []  # every replica runs: nothing to do
        fleet.load_challenger(challenger, share=0.4, salt=7)
        victim = fleet.replicas[1]
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while victim.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(FleetError, match="replica\\(s\\) exited"):
            fleet.set_share(0.5)  # operations refuse a fleet with a dead member ...
        assert fleet.restart_exited() == [victim.port]  # ... until it is restarted
        again = fleet.replicas[1]
        assert (again.port, again.admin_port) == (victim.port, victim.admin_port) and again.pid != victim.pid
        states = fleet.state()
        assert [(s["share"], s["salt"]) for s in states] == [(0.4, 7), (0.4, 7)]
        assert [s["challenger"]["provenance"]["model_version"] for s in states] == ["v0002", "v0002"]
        want = {u: "v0002" if split.in_challenger(u, 7, 0.4) else "v0001" for u in range(1, 101)}
        with httpx.Client(base_url=again.url) as http:  # the restarted replica itself
            got = {u: http.get(f"/recommend/{u}").headers["x-model"].split(";")[0].split("/")[1] for u in want}
        assert got == want


def test_coldstart_lists_reach_every_replica_and_a_restarted_one(tmp_path) -> None:
    from movielab.recommender.ingest.coldstart import ColdStartList

    champion = save_version(tmp_path / "models" / "popularity" / "v0001", "v0001", seed=1)
    new_user = 900_001  # the version knows users 1..300 only
    cold = ColdStartList(new_user, ("scream+1996", "fargo+1996"), ("Scream",), (), ("Horror",), "lexical-v1", "global")
    with Fleet(tmp_path / "fleet", champion, replicas=2) as fleet:
        assert fleet.set_coldstart([cold]) == 1
        for r in fleet.replicas:  # each replica itself, not only through nginx
            got = httpx.get(f"{r.url}/recommend/{new_user}")
            assert got.text == "scream+1996,fargo+1996" and "source=coldstart" in got.headers["x-model"]
        victim = fleet.replicas[0]
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while victim.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fleet.restart_exited() == [victim.port]
        got = httpx.get(f"{fleet.replicas[0].url}/recommend/{new_user}")
        assert got.text == "scream+1996,fargo+1996" and "source=coldstart" in got.headers["x-model"]
        assert httpx.get(f"{fleet.url}/recommend/{new_user}").text == "scream+1996,fargo+1996"
