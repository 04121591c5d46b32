"""What the monitoring tests share: the chart's rules and dashboard as rendered, the metric names an
expression uses (parsed by a PromQL parser), and the names the operator's registry exports."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
from prometheus_client.metrics_core import Metric

from chart.helm import one, render
from securemodels import metrics

# Scraping adds it: what the operator exports, as Prometheus sees the target.
SCRAPE_METRICS = frozenset({"up"})
# The sample names of each metric type in the exposition format (prometheus_client adds `_created`).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Grafana's variables, as Grafana interpolates them before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
LABEL_VALUES = re.compile(r"^label_values\((?P<query>.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$")


def exported_names() -> set[str]:
    """Every sample name the operator's registry can expose, whatever metrics it holds."""
    families: list[Metric] = list(metrics.REGISTRY.collect())
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def names_in(expression: str) -> set[str]:
    """The metric names an expression selects. Raises ValueError when it does not parse."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return found


def rules(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec of the chart's PrometheusRule: the rule file promtool reads."""
    objects = render({"metrics": {"prometheusRule": {"enabled": True}}, **(values or {})})
    spec: dict[str, Any] = one(objects, "PrometheusRule")["spec"]
    return spec


def alerts(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in spec["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_config_map(values: dict[str, Any] | None = None) -> dict[str, Any]:
    objects = render({"metrics": {"grafanaDashboard": {"enabled": True, **(values or {})}}})
    return one(objects, "ConfigMap", "smo-secure-model-operator-dashboard")


def dashboard() -> dict[str, Any]:
    (text,) = dashboard_config_map()["data"].values()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside rows too."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def interpolated(query: str) -> str:
    """A dashboard query as Prometheus receives it: Grafana's interval variables replaced, and the
    dashboard's own variables as the regular expressions they become."""
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return re.sub(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?", ".*", query)


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target and every query variable (label_values(<selector>, label))."""
    found = [
        target["expr"] for panel in panels(board) for target in panel.get("targets", []) if "expr" in target
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = LABEL_VALUES.match(query)
        assert match, f"variable {variable['name']}: {query} is not label_values(<selector>, <label>)"
        found.append(match["query"])
    return [interpolated(query) for query in found]
