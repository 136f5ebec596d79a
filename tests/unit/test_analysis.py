"""Canary analysis as tables: the PromQL of each check and the verdict of a window (tritonops.analysis)."""

from __future__ import annotations

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
    with pytest.raises(ValueError, match="ErrorRate, LatencyP99Ms or QueueTimeP99Ms"):
        a.builtin_query("Throughput", "ml", "clf-b", 30)


@pytest.mark.parametrize(("values", "requests", "result", "failed"), [
    ({"ErrorRate": 0.0, "LatencyP99Ms": 12.0, "custom": 1.0}, 500, a.PASSED, []),
    ({"ErrorRate": 0.2, "LatencyP99Ms": 12.0, "custom": 1.0}, 500, a.FAILED, ["ErrorRate"]),
    ({"ErrorRate": 0.0, "LatencyP99Ms": None, "custom": 0.0}, 500, a.FAILED, ["LatencyP99Ms", "custom"]),
    ({"ErrorRate": 0.0, "LatencyP99Ms": 12.0, "custom": 1.0}, 20, a.INCONCLUSIVE, []),  # too little traffic
    ({"ErrorRate": None, "LatencyP99Ms": None, "custom": None}, None, a.INCONCLUSIVE, []),  # no traffic series
])
def test_verdicts(values: dict[str, float | None], requests: float | None, result: str, failed: list[str]) -> None:
    window = a.judge(a.checks(SPEC, "ml", "clf-b"), values, requests, min_requests=100)
    assert (window.result, window.failed) == (result, failed)
    assert window.message().startswith(result)


def test_the_message_carries_the_numbers() -> None:
    window = a.judge(a.checks(SPEC, "ml", "clf-b"), {"ErrorRate": 0.25, "LatencyP99Ms": None, "custom": 2.0},
                     400.0, 100)
    assert window.message() == "Failed: ErrorRate=0.25, LatencyP99Ms=no data, custom=2 over 400 requests"
