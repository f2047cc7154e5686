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
