"""Canary analysis as tables: the PromQL of each check and the verdict of a window (tritonops.analysis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tritonops import analysis as a

SPEC = {"intervalSeconds": 30, "metrics": [
    {"name": "ErrorRate", "thresholdRange": {"max": 0.01}},
    {"name": "LatencyP99Ms", "thresholdRange": {"max": 50}},
    {"name": "custom", "query": 'sum(up{namespace="{{namespace}}",revision="{{revision}}"})',
     "thresholdRange": {"min": 1}},
]}


def test_checks_select_the_canary_revision_and_fill_custom_placeholders() -> None:
    checks = a.checks(SPEC, "ml", "clf-b")
    assert [c.name for c in checks] == ["ErrorRate", "LatencyP99Ms", "custom"]
    error_rate = checks[0].query
    assert 'nv_inference_request_failure{namespace="ml",revision="clf-b"}[30s]' in error_rate
    assert 'nv_inference_request_success{namespace="ml",revision="clf-b"}[30s]' in error_rate
    p99 = 'max(nv_inference_request_summary_us{namespace="ml",revision="clf-b",quantile="0.99"}) / 1000'
    assert checks[1].query == p99
    assert checks[2].query == 'sum(up{namespace="ml",revision="clf-b"})' and checks[2].min == 1


def test_an_unknown_builtin_names_the_fix() -> None:
    with pytest.raises(ValueError, match="ErrorRate, LatencyP99Ms, QueueTimeP99Ms or PredictionDriftPSI"):
        a.builtin_query("Throughput", "ml", "clf-b", 30)


def test_prediction_drift_is_the_monitors_worst_pod_and_inconclusive_before_its_first_window() -> None:
    query = a.builtin_query("PredictionDriftPSI", "ml", "clf-b", 30)
    assert query == 'max(tritonops_prediction_drift_psi{namespace="ml",revision="clf-b"})'
    check = a.Check("PredictionDriftPSI", query, max=0.2)
    assert a.judge([check], {"PredictionDriftPSI": None}, 500, 20).result == a.INCONCLUSIVE
    assert a.judge([check], {"PredictionDriftPSI": 0.5}, 500, 20).result == a.FAILED
    assert a.judge([check], {"PredictionDriftPSI": 0.05}, 500, 20).result == a.PASSED


@pytest.mark.parametrize(("values", "requests", "result", "failed"), [
    ({"ErrorRate": 0.0, "LatencyP99Ms": 12.0, "custom": 1.0}, 500, a.PASSED, []),
    ({"ErrorRate": 0.2, "LatencyP99Ms": 12.0, "custom": 1.0}, 500, a.FAILED, ["ErrorRate"]),
    ({"ErrorRate": 0.0, "LatencyP99Ms": None, "custom": 0.0}, 500, a.FAILED, ["LatencyP99Ms", "custom"]),
    ({"ErrorRate": 0.0, "LatencyP99Ms": 12.0, "custom": 1.0}, 20, a.INCONCLUSIVE, []),  # too little traffic
    ({"ErrorRate": None, "LatencyP99Ms": None, "custom": None}, None, a.FAILED, ["requests"]),  # not scraped
])
def test_verdicts(values: dict[str, float | None], requests: float | None, result: str, failed: list[str]) -> None:
    window = a.judge(a.checks(SPEC, "ml", "clf-b"), values, requests, min_requests=100)
    assert (window.result, window.failed) == (result, failed)
    assert window.message().startswith(result)


def test_the_message_carries_the_numbers() -> None:
    window = a.judge(a.checks(SPEC, "ml", "clf-b"), {"ErrorRate": 0.25, "LatencyP99Ms": None, "custom": 2.0},
                     400.0, 100)
    assert window.message() == ("Failed: ErrorRate=0.25 (max 0.01), LatencyP99Ms=no data (max 50), custom=2 "
                                "over 400 requests")


T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def _md(rollout: dict[str, Any], analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}],
                                                         "analysis": analysis or SPEC}}}
    return {"metadata": {"name": "clf", "namespace": "ml"}, "spec": spec,
            "status": {"canaryRevision": "clf-b", "rollout": rollout}}


@pytest.mark.parametrize(("rollout", "seconds", "due"), [
    ({"decision": "Progressing"}, 0, False),  # no traffic on the canary yet: nothing to measure
    ({"decision": "Progressing", "analysis": {"since": "2026-11-30T12:00:00Z"}}, 29, False),
    ({"decision": "Progressing", "analysis": {"since": "2026-11-30T12:00:00Z"}}, 30, True),
    ({"decision": "Paused", "analysis": {"since": "2026-11-30T12:00:00Z"}}, 30, True),  # keeps watching
    ({"decision": "Aborted", "analysis": {"since": "2026-11-30T12:00:00Z"}}, 30, False),
    ({"decision": "Progressing", "analysis": {"since": "2026-11-30T12:00:00Z",
                                              "lastRunAt": "2026-11-30T12:00:30Z"}}, 45, False),
    ({"decision": "Progressing", "analysis": {"since": "2026-11-30T12:00:00Z",
                                              "lastRunAt": "2026-11-30T12:00:30Z"}}, 60, True),
])
def test_a_window_is_due_every_interval_once_the_canary_takes_traffic(rollout: dict[str, Any], seconds: int,
                                                                       due: bool) -> None:
    run = a.due(_md(rollout), T0 + timedelta(seconds=seconds))
    assert (run is not None) == due
    if run:
        assert run.revision == "clf-b" and [c.name for c in run.checks] == ["ErrorRate", "LatencyP99Ms", "custom"]
        assert 'revision="clf-b"' in run.requests_query and "[30s]" in run.requests_query


def test_no_analysis_no_run() -> None:
    md = _md({"decision": "Progressing", "analysis": {"since": "2026-11-30T12:00:00Z"}})
    del md["spec"]["rollout"]["canary"]["analysis"]
    assert a.due(md, T0 + timedelta(hours=1)) is None


def _window(result: str) -> a.Window:
    requests = {a.PASSED: 500.0, a.FAILED: 500.0, a.INCONCLUSIVE: 3.0}[result]
    values = {"ErrorRate": 0.5 if result == a.FAILED else 0.0, "LatencyP99Ms": 10.0, "custom": 1.0}
    return a.judge(a.checks(SPEC, "ml", "clf-b"), values, requests, 100, "clf-b")


CFG = a.Settings(interval=30, failure_limit=2, inconclusive_limit=2, min_requests=100)


@pytest.mark.parametrize(("results", "verdict"), [
    ([], ""),
    ([a.PASSED], a.PASSED),
    ([a.FAILED], ""),  # one failure is tolerated with failureLimit 2
    ([a.FAILED, a.PASSED], a.PASSED),
    ([a.FAILED, a.PASSED, a.FAILED], a.FAILED),  # failures count in all, not in a row
    ([a.INCONCLUSIVE], ""),
    ([a.INCONCLUSIVE, a.INCONCLUSIVE], a.INCONCLUSIVE),
    ([a.INCONCLUSIVE, a.PASSED, a.INCONCLUSIVE], ""),  # inconclusive windows count in a row
])
def test_the_record_of_windows_gives_the_verdict(results: list[str], verdict: str) -> None:
    state: dict[str, Any] = a.record({}, None, 25, T0)
    assert state == {"since": "2026-11-30T12:00:00Z"}
    for i, result in enumerate(results):
        state = a.record(state, _window(result), 25, T0 + timedelta(seconds=30 * (i + 1)))
    assert a.verdict(state, CFG)[0] == verdict
    assert state.get("windows", 0) == len(results)


def test_the_record_keeps_each_checks_numbers() -> None:
    state = a.record({"since": "2026-11-30T12:00:00Z"}, _window(a.FAILED), 25, T0 + timedelta(seconds=30))
    assert state["checks"][0] == {"name": "ErrorRate", "result": a.FAILED, "value": 0.5, "max": 0.01}
    assert state["checks"][2] == {"name": "custom", "result": a.PASSED, "value": 1.0, "min": 1}
    assert state["lastRunAt"] == "2026-11-30T12:00:30Z" and state["requests"] == 500.0
    assert state["message"].startswith("Failed: ErrorRate=0.5 (max 0.01)")
