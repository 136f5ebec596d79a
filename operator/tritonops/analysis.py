"""Canary analysis as pure functions: the PromQL of each check, and the verdict over their values (issue 9).

A check is a ``spec.rollout.canary.analysis.metrics[]`` entry: a built-in metric computed from Triton's own
counters and summaries, or a custom PromQL query with ``{{namespace}}`` and ``{{revision}}`` placeholders,
judged by ``thresholdRange`` (fail below ``min`` or above ``max``). Triton's series are selected by the
``namespace`` and ``revision`` labels that the scrape configuration copies from the pod (its namespace and
its ``tritonops.io/revision`` label).

Verdict rules (fail closed, never promote on doubt):
- a check without a value (no series, a provider error) fails, like a value out of its range;
- fewer than ``minRequests`` canary requests in the window make the window *Inconclusive*, not Passed;
- otherwise the window passes when every check does.

Not wired into the planner yet: specs that ask for analysis are still refused with InvalidSpec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

PASSED: Final = "Passed"
FAILED: Final = "Failed"
INCONCLUSIVE: Final = "Inconclusive"

_SUCCESS = "nv_inference_request_success"
_FAILURE = "nv_inference_request_failure"


@dataclass(frozen=True)
class Check:
    """One metric to evaluate for a canary revision."""

    name: str
    query: str
    min: float | None = None
    max: float | None = None

    def failed(self, value: float | None) -> bool:
        """Out of range, or no value at all (fail closed)."""
        if value is None:
            return True
        return (self.min is not None and value < self.min) or (self.max is not None and value > self.max)


def _selector(namespace: str, revision: str) -> str:
    return f'namespace="{namespace}",revision="{revision}"'


def requests_query(namespace: str, revision: str, window_seconds: int) -> str:
    """Requests the revision answered in the window, successful or not."""
    sel, w = _selector(namespace, revision), f"{window_seconds}s"
    return f"sum(increase({_SUCCESS}{{{sel}}}[{w}])) + sum(increase({_FAILURE}{{{sel}}}[{w}]))"


def builtin_query(name: str, namespace: str, revision: str, window_seconds: int) -> str:
    """PromQL of a built-in metric (ErrorRate as a fraction; latencies in milliseconds, worst pod's p99)."""
    sel, w = _selector(namespace, revision), f"{window_seconds}s"
    if name == "ErrorRate":
        return f"sum(increase({_FAILURE}{{{sel}}}[{w}])) / ({requests_query(namespace, revision, window_seconds)})"
    summaries = {"LatencyP99Ms": "nv_inference_request_summary_us", "QueueTimeP99Ms": "nv_inference_queue_summary_us"}
    if name in summaries:  # Triton's summaries need --metrics-config summary_latencies=true
        return f'max({summaries[name]}{{{sel},quantile="0.99"}}) / 1000'
    raise ValueError(f"no built-in metric {name!r}: ErrorRate, LatencyP99Ms or QueueTimeP99Ms, or give a query")


def checks(analysis: dict[str, Any], namespace: str, revision: str) -> list[Check]:
    """The checks of ``spec.rollout.canary.analysis`` for one canary revision."""
    window = int(analysis.get("intervalSeconds", 60))
    out = []
    for metric in analysis.get("metrics", []):
        bounds = metric.get("thresholdRange", {})
        if metric.get("query"):
            query = metric["query"].replace("{{namespace}}", namespace).replace("{{revision}}", revision)
        else:
            query = builtin_query(metric["name"], namespace, revision, window)
        out.append(Check(metric["name"], query, bounds.get("min"), bounds.get("max")))
    return out


@dataclass(frozen=True)
class Window:
    """The verdict of one analysis window, with the numbers behind it."""

    result: str
    requests: float | None
    values: dict[str, float | None]
    failed: list[str]  # names of the failed checks

    def message(self) -> str:
        parts = [f"{name}={'no data' if value is None else f'{value:.4g}'}" for name, value in self.values.items()]
        text = f"{self.result}: {', '.join(parts)}" if parts else self.result
        return f"{text} over {self.requests:.0f} requests" if self.requests is not None else text


def judge(checks_: list[Check], values: dict[str, float | None], requests: float | None,
          min_requests: int) -> Window:
    """The verdict of one window (see the module docstring for the rules)."""
    if requests is None or requests < min_requests:
        return Window(INCONCLUSIVE, requests, values, [])
    failed = [c.name for c in checks_ if c.failed(values.get(c.name))]
    return Window(FAILED if failed else PASSED, requests, values, failed)
