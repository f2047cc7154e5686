"""Alertmanager's routing of the shipped rules, its local rewrite for drills, and the drill profile of the rules."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from movielab.demo.alertmanager import CONFIG, DRILL_TIMINGS, AlertmanagerError, load_config, local_config
from movielab.demo.drill import RULES, drill_rules
from movielab.demo.prometheus import find_prometheus

AMTOOL = shutil.which("amtool")
PROMTOOL = find_prometheus("promtool")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed (Debian: prometheus-alertmanager)")


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_has_a_severity_and_a_team_that_the_routes_know() -> None:
    cfg = load_config()
    routed = {m for r in cfg["route"]["routes"] for m in r["matchers"]}
    assert routed == {'severity="page"', 'severity="ticket"'}
    for rule in rules():
        assert f'severity="{rule["labels"]["severity"]}"' in routed, rule["alert"]
        assert rule["labels"].get("team") in ("serving", "data", "models"), rule["alert"]
    assert cfg["route"]["group_by"] == ["alertname", "team"]


def test_inhibitions_name_alerts_that_exist() -> None:
    names = {r["alert"] for r in rules()}
    for rule in load_config()["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            pattern = re.fullmatch(r'alertname=~?"(.+)"', matcher)[1]
            assert {n for n in names if re.fullmatch(pattern, n)}, matcher


@needs_amtool
def test_amtool_accepts_the_config_and_routes_by_severity(tmp_path: Path) -> None:
    check = amtool("check-config", str(CONFIG))
    assert check.returncode == 0, check.stdout + check.stderr

    def route(*labels: str) -> str:
        return amtool("config", "routes", "test", "--config.file", str(CONFIG), *labels).stdout.strip()

    assert route("alertname=ServingReplicaDown", "severity=page", "team=serving") == "pager"
    assert route("alertname=StrongDrift", "severity=ticket", "team=models") == "tickets"
    assert route("alertname=Unlabelled") == "tickets"  # nothing falls through unseen
    local = tmp_path / "am.yml"
    local.write_text(yaml.safe_dump(local_config("http://127.0.0.1:9999", DRILL_TIMINGS)))
    check = amtool("check-config", str(local))
    assert check.returncode == 0, check.stdout + check.stderr


def test_local_config_points_every_webhook_at_the_pager_and_shortens_timings() -> None:
    cfg = local_config("http://127.0.0.1:9999", DRILL_TIMINGS)
    urls = [h["url"] for r in cfg["receivers"] for h in r["webhook_configs"]]
    assert urls == ["http://127.0.0.1:9999/page", "http://127.0.0.1:9999/ticket"]
    assert all(h["send_resolved"] for r in cfg["receivers"] for h in r["webhook_configs"])
    assert {k: cfg["route"][k] for k in DRILL_TIMINGS} == DRILL_TIMINGS
    assert [r.get("group_wait") for r in cfg["route"]["routes"]] == [None, "1s"]  # only where a route sets it
    assert load_config()["route"]["group_wait"] == "30s"  # the shipped file is left as it is
    with pytest.raises(AlertmanagerError, match="pager URL 'localhost:9' must be"):
        local_config("localhost:9")
    with pytest.raises(AlertmanagerError, match=r"unknown route timing\(s\) \['group_by'\]"):
        local_config(None, {"group_by": "1s"})


def test_load_config_names_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "am.yml"
    bad.write_text("receivers: []\n")
    with pytest.raises(AlertmanagerError, match=rf"{bad}: expected a mapping with 'route' and 'receivers'"):
        load_config(bad)


def test_the_drill_profile_divides_every_duration() -> None:
    text = "for: 10m\nexpr: rate(x[5m]) > avg_over_time(y[1d] offset 1h) and deriv(z[10m]) > 0\nfor: 1m\n"
    assert drill_rules(text, 60) == (
        "for: 10s\nexpr: rate(x[20s]) > avg_over_time(y[1440s] offset 60s) and deriv(z[20s]) > 0\nfor: 1s\n"
    )
    assert drill_rules("for: 2m\nrate(x[1h])", 120, min_range_s=5) == "for: 1s\nrate(x[30s])"
    with pytest.raises(ValueError, match="scale must be positive"):
        drill_rules(text, 0)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")
def test_promtool_accepts_the_drill_profile_of_the_shipped_rules(tmp_path: Path) -> None:
    text = drill_rules(RULES.read_text(), 60)
    assert "for: 10m" not in text and "[5m]" not in text and "for: 10s" in text
    path = tmp_path / "alerts.yml"
    path.write_text(text)
    done = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--scenarios", "nope"], "unknown ['nope']; known: replica"), (["--scale", "0"], "--scale must be positive")],
)
def test_drill_refuses_bad_arguments_before_starting_anything(argv, message, capsys) -> None:
    from movielab.demo.drill import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
