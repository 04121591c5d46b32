"""The chart's Grafana dashboard: in the ConfigMap format Grafana's sidecar discovers, type-checked by the
TypeScript compiler against Grafana's published dashboard schema (@grafana/schema), and every query
naming only metrics the operator exports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chart.monitoring import (
    SCRAPE_METRICS,
    dashboard,
    dashboard_config_map,
    dashboard_queries,
    exported_names,
    names_in,
    panels,
)
from support.paths import CHART
from support.tools import tsc

SOURCE = CHART / "dashboards" / "secure-model-operator.json"
# Grafana's types name some values with TypeScript enums, whose JSON form is their value: the check takes
# each enum as the union of its values, and everything else as the schema declares it.
CHECK = """\
import type {{ Dashboard }} from '@grafana/schema';
type Json<T> = T extends string ? `${{T}}` : T extends readonly (infer U)[] ? Json<U>[]
  : T extends object ? {{ [K in keyof T]: Json<T[K]> }} : T;
export const dashboard: Json<Dashboard> = {json};
"""


def schema_check(board: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    """tsc --strict on the dashboard as a literal of Grafana's Dashboard type: an unknown key, a missing
    required one or a value of the wrong type is an error."""
    (directory / "node_modules").symlink_to(tsc().parents[1])
    (directory / "dashboard.ts").write_text(CHECK.format(json=json.dumps(board, indent=2)))
    return subprocess.run(
        [
            str(tsc()),
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "dashboard.ts",
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_dashboard_is_a_config_map_grafanas_sidecar_discovers() -> None:
    config_map = dashboard_config_map()

    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "securemodels-system"
    (key,) = config_map["data"]
    assert key.endswith(".json")
    assert json.loads(config_map["data"][key]) == json.loads(SOURCE.read_text())

    elsewhere = dashboard_config_map(
        {"namespace": "grafana", "labels": {"dashboards": "platform"}, "annotations": {"folder": "Security"}}
    )
    assert elsewhere["metadata"]["namespace"] == "grafana"
    assert elsewhere["metadata"]["labels"]["dashboards"] == "platform"
    assert elsewhere["metadata"]["annotations"] == {"folder": "Security"}


def test_the_dashboard_matches_grafanas_schema(tmp_path: Path) -> None:
    result = schema_check(dashboard(), tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        (lambda board: board.update(refreshInterval="1m"), "'\"refreshInterval\"' does not exist"),
        (lambda board: board["panels"][1]["gridPos"].update(w="half"), "not assignable to type 'number'"),
        (lambda board: board["panels"][1].update(grid=board["panels"][1].pop("gridPos")), "'\"grid\"'"),
        (lambda board: board["templating"]["list"][1].update(hide="no"), "not assignable"),
    ],
    ids=["unknown-key", "wrong-type", "renamed-key", "bad-variable"],
)
def test_the_schema_check_refuses_a_broken_dashboard(tmp_path: Path, breakage: Any, error: str) -> None:
    board = dashboard()
    breakage(board)

    result = schema_check(board, tmp_path)

    assert result.returncode != 0
    assert error in result.stdout


def test_every_dashboard_query_names_only_metrics_the_operator_exports() -> None:
    exported = exported_names() | SCRAPE_METRICS
    queries = dashboard_queries(dashboard())

    assert len(queries) > 20
    for query in queries:
        used = names_in(query)
        assert used, query
        assert used <= exported, (query, sorted(used - exported))


def test_the_metric_name_check_catches_an_unknown_metric() -> None:
    """The positive control of the test above: a misspelt metric and a broken query are both caught."""
    board = dashboard()
    board["panels"][1]["targets"][0]["expr"] = 'max(securemodels_managed_resource{job=~"$job"})'

    (first, *_) = dashboard_queries(board)
    assert not names_in(first) <= exported_names()
    with pytest.raises(ValueError, match="offset"):
        names_in("sum(securemodels_compliant) offset 5m")


def test_every_panel_queries_the_chosen_data_source_and_operator() -> None:
    board = dashboard()
    variables = {variable["name"] for variable in board["templating"]["list"]}

    assert {"datasource", "job", "namespace"} <= variables
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
