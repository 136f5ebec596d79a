"""The Grafana dashboard of the chart: well-formed, queries only metrics that exist, and computes what it says.

Every query is checked three ways: its metric names and label matchers against the metrics Triton and the
operator export (and the labels the scrape configuration adds), its syntax with ``promtool check rules``,
and, for the Canary row, its result on synthetic series with ``promtool test rules``.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tools import CHART, run, tool

DASHBOARD = CHART / "dashboards" / "tritonops.json"
# Labels every Triton series gets from the scrape configuration (metrics.podMonitor, or the documented job).
SCRAPE_LABELS = {"namespace", "pod", "revision", "modeldeployment", "job", "instance"}
# Triton's metrics (--metrics-port) the dashboard may use, with Triton's own labels. The summaries need
# --metrics-config summary_latencies=true.
TRITON = {
    "nv_inference_request_success": {"model", "version"},
    "nv_inference_request_failure": {"model", "version", "reason"},
    "nv_inference_request_duration_us": {"model", "version"},
    "nv_inference_queue_duration_us": {"model", "version"},
    "nv_inference_request_summary_us": {"model", "version", "quantile"},
}
# The operator's metrics (tritonops run --metrics-port), with their labels.
OPERATOR = {
    "tritonops_api_requests_total": {"verb", "resource", "code"},
    "tritonops_canary_weight_percent": {"namespace", "name"},
    "tritonops_canary_step": {"namespace", "name"},
    "tritonops_canary_decision": {"namespace", "name", "decision"},
    "tritonops_canary_check_value": {"namespace", "name", "check"},
    "tritonops_canary_check_failed": {"namespace", "name", "check"},
    "tritonops_rollout_duration_seconds_bucket": {"outcome", "le"},
    "tritonops_rollout_duration_seconds_sum": {"outcome"},
    "tritonops_rollout_duration_seconds_count": {"outcome"},
}
KNOWN = {name: labels | SCRAPE_LABELS for name, labels in TRITON.items()} | OPERATOR
CANARY_PANELS = {"Requests / s by revision", "Error ratio by revision", "p99 latency by revision", "Canary weight",
                 "Canary step", "Canary decision", "Analysis check values", "Failed analysis checks",
                 "Rollouts finished", "Rollout duration"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable (the selector inside label_values)."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert m, variable
            yield f"variable {variable['name']}", m.group(1)


def _without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (identifiers that are not functions, keywords or labels)."""
    s = _without_strings(expr)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery durations
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end():].lstrip().startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue  # a function or an aggregation
        names.add(m.group())
    return names


def matchers(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric, label names it is matched on) of every selector with braces."""
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", expr):
        yield m.group(1), set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", _without_strings(m.group(2))))


def test_dashboard_layout(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "model", "modeldeployment"} <= variables
    builtin = {"__rate_interval", "__range", "__interval"}
    for where, expr in queries(dashboard):
        used = set(re.findall(r"\$(\w+)", expr))
        assert used <= variables | builtin, (where, used - variables - builtin)
    for p in panels(dashboard):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and p.get("description"), p["title"]


def test_canary_row(dashboard: dict[str, Any]) -> None:
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    canary = next(r for r in rows if r["title"] == "Canary")
    after = min((r["gridPos"]["y"] for r in rows if r["gridPos"]["y"] > canary["gridPos"]["y"]), default=10**6)
    in_row = {p["title"] for p in dashboard["panels"]
              if p["type"] != "row" and canary["gridPos"]["y"] < p["gridPos"]["y"] < after}
    assert in_row == CANARY_PANELS
    by_title = {p["title"]: p for p in panels(dashboard)}
    exprs = {t: " ".join(x["expr"] for x in by_title[t]["targets"]) for t in CANARY_PANELS}
    for title in ("Requests / s by revision", "Error ratio by revision", "p99 latency by revision"):
        assert "by (namespace, revision)" in exprs[title] and 'modeldeployment=~"$modeldeployment"' in exprs[title]
    assert "nv_inference_request_failure" in exprs["Requests / s by revision"]
    assert 'quantile="0.99"' in exprs["p99 latency by revision"]
    for title, metric in (("Canary weight", "tritonops_canary_weight_percent"),
                          ("Canary step", "tritonops_canary_step"),
                          ("Canary decision", "tritonops_canary_decision"),
                          ("Analysis check values", "tritonops_canary_check_value"),
                          ("Failed analysis checks", "tritonops_canary_check_failed")):
        assert metric in exprs[title] and 'name=~"$modeldeployment"' in exprs[title], title
    assert "tritonops_rollout_duration_seconds" in exprs["Rollout duration"]
    decisions = by_title["Canary decision"]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {v["text"] for v in decisions.values()} == {"Progressing", "Paused", "Promoted", "Aborted"}


def test_every_query_uses_known_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, where
        assert names <= set(KNOWN), (where, names - set(KNOWN))
        used |= names
        for metric, labels in matchers(expr):
            assert labels <= KNOWN[metric], (where, metric, labels - KNOWN[metric])
    assert {"tritonops_canary_weight_percent", "tritonops_canary_step", "tritonops_canary_decision",
            "tritonops_canary_check_value", "tritonops_canary_check_failed",
            "tritonops_rollout_duration_seconds_bucket", "nv_inference_request_summary_us"} <= used


def test_known_operator_metrics_match_the_operator() -> None:
    """OPERATOR above is what the operator registers: names (with the suffixes of their types) and labels."""
    import prometheus_client

    for module in ("tritonops.kube", "tritonops.rollout_metrics"):  # where the metrics are defined
        importlib.import_module(module)
    registered: dict[str, set[str]] = {}
    for collector in list(prometheus_client.REGISTRY._collector_to_names):  # the defined metrics, not their samples
        name = getattr(collector, "_name", "")
        if name.startswith("tritonops_"):
            labels = set(getattr(collector, "_labelnames", ()))
            kind = getattr(collector, "_type", "")
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(kind, ("",))
            for suffix in suffixes:
                registered[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    assert set(OPERATOR) <= set(registered), set(OPERATOR) - set(registered)
    for name, labels in OPERATOR.items():
        assert registered[name] == labels, name


def _substitute(expr: str, namespace: str = "ml", modeldeployment: str = "clf") -> str:
    for var, value in (("$__rate_interval", "2m"), ("$__range", "1h"), ("$__interval", "1m"),
                       ("$namespace", namespace), ("$modeldeployment", modeldeployment), ("$model", ".*")):
        expr = expr.replace(var, value)
    return expr


def test_every_query_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query_{i}", "expr": _substitute(expr)}
             for i, (_, expr) in enumerate(queries(dashboard))]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([tool("promtool"), "check", "rules", "--lint=none", str(path)])


# Synthetic series, one sample a minute, as Prometheus would store them: namespace ml, ModelDeployment clf,
# stable revision clf-a (two pods), canary clf-b (one pod), and a clf in another namespace that the
# $namespace selection must leave out.
def _triton(metric: str, ns: str, rev: str, pod: str, values: str, **extra: str) -> dict[str, str]:
    labels = {"namespace": ns, "modeldeployment": "clf", "revision": rev, "pod": pod, "model": "clf",
              "version": "1", "job": "triton", "instance": f"{pod}:8002", **extra}
    return {"series": metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}


def _operator(metric: str, values: str, **labels: str) -> dict[str, str]:
    labels = {"job": "tritonops", "instance": "10.0.0.9:8080", **labels}
    return {"series": metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}


INPUT = [
    _triton("nv_inference_request_success", "ml", "clf-a", "clf-a-1", "0+90x60"),  # 1.5/s
    _triton("nv_inference_request_success", "ml", "clf-a", "clf-a-2", "0+90x60"),
    _triton("nv_inference_request_failure", "ml", "clf-a", "clf-a-1", "0x60", reason="BACKEND"),
    _triton("nv_inference_request_success", "ml", "clf-b", "clf-b-1", "0+30x60"),  # 0.5/s
    _triton("nv_inference_request_failure", "ml", "clf-b", "clf-b-1", "0+6x60", reason="BACKEND"),  # 0.1/s
    _triton("nv_inference_request_success", "other", "clf-z", "clf-z-1", "0+600x60"),
    _triton("nv_inference_request_summary_us", "ml", "clf-a", "clf-a-1", "20000x60", quantile="0.99"),
    _triton("nv_inference_request_summary_us", "ml", "clf-a", "clf-a-2", "30000x60", quantile="0.99"),
    _triton("nv_inference_request_summary_us", "ml", "clf-a", "clf-a-2", "9000x60", quantile="0.5"),
    _triton("nv_inference_request_summary_us", "ml", "clf-b", "clf-b-1", "50000x60", quantile="0.99"),
    _operator("tritonops_canary_weight_percent", "25x60", namespace="ml", name="clf"),
    _operator("tritonops_canary_weight_percent", "80x60", namespace="other", name="clf"),
    _operator("tritonops_canary_step", "1x60", namespace="ml", name="clf"),
    *(_operator("tritonops_canary_decision", f"{int(d == 'Paused')}x60", namespace="ml", name="clf", decision=d)
      for d in ("Progressing", "Paused", "Promoted", "Aborted")),
    _operator("tritonops_canary_check_value", "0.25x60", namespace="ml", name="clf", check="ErrorRate"),
    _operator("tritonops_canary_check_failed", "1x60", namespace="ml", name="clf", check="ErrorRate"),
    _operator("tritonops_canary_check_failed", "0x60", namespace="ml", name="clf", check="LatencyP99Ms"),
    # Two rollouts promoted (after 40 s and 200 s) and one aborted (after 500 s), all at minute 30.
    *(_operator("tritonops_rollout_duration_seconds_bucket", f"0x30 {n}x30", outcome="Promoted", le=le)
      for le, n in (("60", 1), ("300", 2), ("+Inf", 2))),
    _operator("tritonops_rollout_duration_seconds_sum", "0x30 240x30", outcome="Promoted"),
    _operator("tritonops_rollout_duration_seconds_count", "0x30 2x30", outcome="Promoted"),
    *(_operator("tritonops_rollout_duration_seconds_bucket", f"0x30 {n}x30", outcome="Aborted", le=le)
      for le, n in (("60", 0), ("300", 0), ("+Inf", 1))),
    _operator("tritonops_rollout_duration_seconds_sum", "0x30 500x30", outcome="Aborted"),
    _operator("tritonops_rollout_duration_seconds_count", "0x30 1x30", outcome="Aborted"),
]
A, B = '{namespace="ml",revision="clf-a"}', '{namespace="ml",revision="clf-b"}'
OP = '{namespace="ml",name="clf"}'
# (panel title, refId) -> expected samples at minute 60.
EXPECTED = {
    ("Requests / s by revision", "A"): [(A, 3), (B, 0.5)],
    ("Requests / s by revision", "B"): [(A, 0), (B, 0.1)],
    ("Error ratio by revision", "A"): [(A, 0), (B, 0.1 / 0.6)],
    ("p99 latency by revision", "A"): [(A, 30), (B, 50)],
    ("Canary weight", "A"): [(OP, 25)],
    ("Canary step", "A"): [(OP, 1)],
    ("Canary decision", "A"): [(OP, 2)],  # Paused
    ("Analysis check values", "A"): [('{namespace="ml",name="clf",check="ErrorRate"}', 0.25)],
    ("Failed analysis checks", "A"): [('{namespace="ml",name="clf",check="ErrorRate"}', 1),
                                      ('{namespace="ml",name="clf",check="LatencyP99Ms"}', 0)],
    ("Rollouts finished", "A"): [('{outcome="Promoted"}', 2), ('{outcome="Aborted"}', 1)],
    ("Rollout duration", "A"): [('{outcome="Promoted"}', 120), ('{outcome="Aborted"}', 500)],
    ("Rollout duration", "B"): [('{outcome="Promoted"}', 60), ('{outcome="Aborted"}', 300)],
    ("Rollout duration", "C"): [('{outcome="Promoted"}', 252), ('{outcome="Aborted"}', 300)],
}


def test_canary_queries_compute_what_their_panels_say(dashboard: dict[str, Any], tmp_path: Path) -> None:
    targets = {(p["title"], t["refId"]): t["expr"] for p in panels(dashboard) for t in p.get("targets", [])}
    assert {k for k in targets if k[0] in CANARY_PANELS} == set(EXPECTED)
    tests = [{"expr": _substitute(targets[key]), "eval_time": "60m",
              "exp_samples": [{"labels": labels, "value": value} for labels, value in samples]}
             for key, samples in EXPECTED.items()]
    path = tmp_path / "dashboard_test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": INPUT, "promql_expr_test": tests}]}))
    out = run([tool("promtool"), "test", "rules", str(path)], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
