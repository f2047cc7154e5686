"""The Prometheus rules: promtool accepts them, their unit tests pass, and every alert is tested and justified."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from movielab.demo.prometheus import find_prometheus

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES, RULE_TESTS, README = RULES_DIR / "alerts.yml", RULES_DIR / "alerts_test.yml", RULES_DIR / "README.md"
PROMTOOL = find_prometheus("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)\s*$", RULES.read_text(), re.MULTILINE)


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=RULES_DIR, check=False
    )


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(re.findall(r'- (?:alert|record): ', RULES.read_text()))} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    # The same tests against rules whose drift threshold moved must fail: the tests look at thresholds.
    (tmp_path / "alerts.yml").write_text(RULES.read_text().replace("(drift_psi) > 0.25", "(drift_psi) > 0.5"))
    (tmp_path / "alerts_test.yml").write_text(RULE_TESTS.read_text())
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", "alerts_test.yml"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "StrongDrift" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    tests = RULE_TESTS.read_text()
    names = alert_names()
    assert len(names) >= 10
    silent = set(re.findall(r"alertname: (\w+), exp_alerts: \[\]", tests))
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests))
    assert not set(names) - silent, f"alerts never tested silent: {sorted(set(names) - silent)}"
    assert not set(names) - firing, f"alerts never tested firing: {sorted(set(names) - firing)}"


def test_every_alert_has_a_justification() -> None:
    readme = README.read_text()
    missing = [
        n for n in alert_names() if not re.search(rf"^\| `{n}` \(\w+\) \| .+ \| .{{40,}} \|$", readme, re.MULTILINE)
    ]
    assert not missing, f"alerts without a justification row in {README.name}: {missing}"


def test_every_alert_has_severity_summary_and_description() -> None:
    blocks = re.split(r"^\s*- (?:alert|record): ", RULES.read_text(), flags=re.MULTILINE)[1:]
    alerts = [b for b in blocks if "severity" in b or "annotations" in b]
    assert len(alerts) == len(alert_names())
    for block in alerts:
        name = block.split()[0]
        assert re.search(r"severity: (page|ticket)", block), name
        assert "summary:" in block and "description:" in block, name
