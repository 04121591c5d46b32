"""The chart's alerting rules, judged by the real promtool: they load, every alert fires and clears on
synthetic series as tests/chart/alerts.test.yaml says, the tests catch a broken rule, and every rule names
only metrics the operator exports and links to a runbook section that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.helm import render
from chart.monitoring import SCRAPE_METRICS, alerts, exported_names, names_in, rules
from support.paths import ROOT
from support.tools import promtool

UNIT_TESTS = Path(__file__).parent / "alerts.test.yaml"
RUNBOOK = ROOT / "docs" / "operations.md"
# A rule that never fires, and one that always does: each must make the unit tests fail.
BREAKAGES = {"never fires": "vector(1) < 0", "never clears": "vector(1)"}


def promtool_test(directory: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` with the unit tests and `spec` as their rules.yaml."""
    (directory / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    return subprocess.run(
        [str(promtool()), "test", "rules", UNIT_TESTS.name],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_rules_and_the_dashboard_are_off_by_default() -> None:
    objects = render()

    assert not [item for item in objects if item["kind"] == "PrometheusRule"]
    assert not [item for item in objects if item["metadata"]["name"].endswith("-dashboard")]


def test_promtool_checks_the_rendered_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))

    result = subprocess.run(
        [str(promtool()), "check", "rules", str(tmp_path / "rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(rules()))} rules found" in result.stdout


def test_every_alert_fires_and_clears_in_the_promtool_unit_tests(tmp_path: Path) -> None:
    spec = rules()
    result = promtool_test(tmp_path, spec)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    for alert in alerts(spec):
        seen = [check for check in checks if check["alertname"] == alert["alert"]]
        firing = [check["eval_time"] for check in seen if check["exp_alerts"]]
        quiet = [check["eval_time"] for check in seen if not check["exp_alerts"]]
        assert firing, f"{alert['alert']} is never seen firing"
        assert len(quiet) >= 2, f"{alert['alert']} is not seen quiet both before and after it fires"


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_unit_tests_fail_when_any_rule_is_broken(tmp_path: Path, breakage: str) -> None:
    """Each alert in turn replaced by one that never fires, or never clears: promtool must fail."""
    spec = rules()
    survivors = []
    for index, alert in enumerate(alerts(spec)):
        broken = yaml.safe_load(yaml.safe_dump(spec))
        alerts(broken)[index]["expr"] = BREAKAGES[breakage]
        (tmp_path / alert["alert"]).mkdir()

        result = promtool_test(tmp_path / alert["alert"], broken)

        if result.returncode == 0 or f"alertname: {alert['alert']}" not in result.stdout + result.stderr:
            survivors.append(alert["alert"])
    assert survivors == []


def test_every_alert_names_only_metrics_the_operator_exports() -> None:
    exported = exported_names() | SCRAPE_METRICS

    for alert in alerts(rules()):
        used = names_in(alert["expr"])
        assert used, alert["alert"]
        assert used <= exported, (alert["alert"], sorted(used - exported))


def github_anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.MULTILINE):
        text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_links_to_a_runbook_section_that_exists() -> None:
    sections = github_anchors(RUNBOOK.read_text())

    for alert in alerts(rules()):
        link = alert["annotations"]["runbook_url"]
        path, _, anchor = link.partition("#")
        assert path == "docs/operations.md", link
        assert anchor in sections, f"{alert['alert']}: docs/operations.md has no section #{anchor}"
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]


def test_the_runbook_links_start_with_the_given_base_and_the_job_is_the_releases() -> None:
    base = "https://git.example.com/platform/secure-model-operator/blob/v0.1.0/"
    spec = rules({"metrics": {"prometheusRule": {"enabled": True, "runbookBaseURL": base}}})

    for alert in alerts(spec):
        assert alert["annotations"]["runbook_url"].startswith(f"{base}docs/operations.md#")
        assert 'job="smo-secure-model-operator-metrics"' in alert["expr"], alert["alert"]


def test_the_ca_alert_follows_the_configured_ca_lifetime() -> None:
    """Rotation starts with a third of the lifetime left; the alert fires with a quarter left."""
    (default,) = [item for item in alerts(rules()) if item["alert"] == "SecureModelCAExpiring"]
    (short,) = [
        item
        for item in alerts(rules({"config": {"caDurationHours": 48}}))
        if item["alert"] == "SecureModelCAExpiring"
    ]

    assert default["expr"].strip().endswith(f"< {8760 * 3600 // 4}")
    assert short["expr"].strip().endswith(f"< {48 * 3600 // 4}")
