"""Canary analysis as pure functions: the checks' PromQL, a window's verdict, and the record of windows.

A check is a ``spec.rollout.canary.analysis.metrics[]`` entry: a built-in metric computed from Triton's own
counters and summaries, or a custom PromQL query with ``{{namespace}}`` and ``{{revision}}`` placeholders,
judged by ``thresholdRange`` (fail below ``min`` or above ``max``). Triton's series are selected by the
``namespace`` and ``revision`` labels that the scrape configuration copies from the pod (its namespace and
its ``tritonops.io/revision`` label; the chart's PodMonitor does this).

Timing: windows of ``intervalSeconds`` run in the background from the moment the canary first takes traffic
(``since``), for as long as the rollout is Progressing or Paused. The controller asks :func:`due` whether a
window is due, measures it (:func:`tritonops.prom.measure`), and the planner folds it into
``status.rollout.analysis`` with :func:`record`; :func:`verdict` turns that record into the step machine's
verdict.

Verdict rules (fail closed, never promote on doubt):
- a check without a value (no series, a provider error) fails, like a value out of its range; so does a
  window whose request count cannot be read (Prometheus down, the canary not scraped);
- fewer than ``minRequests`` canary requests in the window make the window *Inconclusive*, not Passed;
- otherwise the window passes when every check does;
- ``failureLimit`` failed windows (in all, over the rollout) abort the canary; ``inconclusiveLimit``
  inconclusive windows in a row pause it with a condition saying the traffic is too low to judge. We pause
  rather than fail (Flagger fails, Argo Rollouts marks it inconclusive and pauses): too little traffic says
  nothing against the model, and rolling back a good version on a quiet night would be a false alarm; the
  canary keeps its small share while a user decides, and it never promotes without a Passed window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from tritonops.canary import PAUSED, PROGRESSING, parse_time, stamp

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


PREDICTION_DRIFT = "PredictionDriftPSI"
DRIFT_SERIES = "tritonops_prediction_drift_psi"  # the drift monitor exports it once a window is complete


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
    if name == PREDICTION_DRIFT:  # the drift monitor's last window, worst pod (spec.drift.enabled)
        return f"max({DRIFT_SERIES}{{{sel}}})"
    raise ValueError(f"no built-in metric {name!r}: ErrorRate, LatencyP99Ms, QueueTimeP99Ms or PredictionDriftPSI, "
                     "or give a query")


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
    revision: str = ""
    checks: tuple[Check, ...] = ()
    errors: tuple[str, ...] = ()  # what the provider said when it could not answer

    def message(self) -> str:
        parts = [f"{name}={'no data' if value is None else f'{value:.4g}'}" for name, value in self.values.items()]
        bounds = {c.name: c for c in self.checks}
        for name in self.failed:
            if (c := bounds.get(name)) is not None:
                parts[list(self.values).index(name)] += f" (min {c.min})" if c.max is None else f" (max {c.max})"
        text = f"{self.result}: {', '.join(parts)}" if parts else self.result
        text = f"{text} over {self.requests:.0f} requests" if self.requests is not None else text
        return f"{text}; {self.errors[0]}" if self.errors else text


def judge(checks_: list[Check], values: dict[str, float | None], requests: float | None,
          min_requests: int, revision: str = "", errors: tuple[str, ...] = ()) -> Window:
    """The verdict of one window (see the module docstring for the rules)."""
    if requests is None:
        why = errors or ("no request series for the canary: is Prometheus scraping the model pods with "
                         "namespace and revision labels?",)
        return Window(FAILED, None, values, ["requests"], revision, tuple(checks_), why)
    if requests < min_requests:
        return Window(INCONCLUSIVE, requests, values, [], revision, tuple(checks_), errors)
    if any(DRIFT_SERIES in c.query and values.get(c.name) is None for c in checks_):
        why = (*errors, "PredictionDriftPSI: the canary's drift monitor has not completed a window yet")
        return Window(INCONCLUSIVE, requests, values, [], revision, tuple(checks_), why)
    failed = [c.name for c in checks_ if c.failed(values.get(c.name))]
    return Window(FAILED if failed else PASSED, requests, values, failed, revision, tuple(checks_), errors)


# --- when to measure, and the record of windows in status.rollout.analysis ----------------------


@dataclass(frozen=True)
class Settings:
    """``spec.rollout.canary.analysis`` with its defaults."""

    interval: int
    failure_limit: int
    inconclusive_limit: int
    min_requests: int


def settings(canary: dict[str, Any]) -> Settings | None:
    """The analysis settings of ``spec.rollout.canary``, or None when it has no checks."""
    spec = canary.get("analysis") or {}
    if not spec.get("metrics"):
        return None
    return Settings(int(spec.get("intervalSeconds", 60)), int(spec.get("failureLimit", 2)),
                    int(spec.get("inconclusiveLimit", 3)), int(spec.get("minRequests", 20)))


@dataclass(frozen=True)
class Run:
    """One window to measure now."""

    namespace: str
    revision: str
    checks: list[Check]
    requests_query: str
    min_requests: int


def seconds_until_due(state: dict[str, Any], interval: int, now: datetime) -> float | None:
    """Seconds until the next window is due; None while the canary takes no traffic yet."""
    since = parse_time(state.get("since"))
    if since is None:
        return None
    last = parse_time(state.get("lastRunAt")) or since
    return max(0.0, interval - (now - last).total_seconds())


def due(md: dict[str, Any], now: datetime) -> Run | None:
    """The window to measure for ``md``'s canary now, or None (no analysis, no canary, not yet)."""
    spec, status = md["spec"], md.get("status") or {}
    rollout, revision = status.get("rollout") or {}, status.get("canaryRevision")
    cfg = settings(spec.get("rollout", {}).get("canary") or {})
    if cfg is None or not revision or rollout.get("decision") not in (PROGRESSING, PAUSED):
        return None
    wait = seconds_until_due(rollout.get("analysis") or {}, cfg.interval, now)
    if wait is None or wait > 0:
        return None
    namespace = md["metadata"]["namespace"]
    analysis = spec["rollout"]["canary"]["analysis"]
    return Run(namespace, revision, checks(analysis, namespace, revision),
               requests_query(namespace, revision, cfg.interval), cfg.min_requests)


def _check_record(c: Check, window: Window) -> dict[str, Any]:
    value = window.values.get(c.name)
    out: dict[str, Any] = {"name": c.name, "result": FAILED if c.name in window.failed else PASSED}
    if window.result == INCONCLUSIVE:
        out["result"] = INCONCLUSIVE
    if value is not None:
        out["value"] = round(value, 6)
    out.update({k: v for k, v in (("min", c.min), ("max", c.max)) if v is not None})
    return out


def record(state: dict[str, Any], window: Window | None, weight: int, now: datetime) -> dict[str, Any]:
    """``status.rollout.analysis`` after this cycle: the canary's first traffic, and the window measured."""
    out = dict(state)
    if weight > 0 and "since" not in out:
        out["since"] = stamp(now)
    if window is None:
        return out
    failed, inconclusive = window.result == FAILED, window.result == INCONCLUSIVE
    out.update({"lastRunAt": stamp(now), "windows": int(out.get("windows", 0)) + 1, "result": window.result,
                "failures": int(out.get("failures", 0)) + failed,
                "inconclusive": int(out.get("inconclusive", 0)) + 1 if inconclusive else 0,
                "message": window.message()[:1024], "checks": [_check_record(c, window) for c in window.checks]})
    if window.requests is not None:
        out["requests"] = round(window.requests, 3)
    else:
        out.pop("requests", None)
    return out


def verdict(state: dict[str, Any], cfg: Settings) -> tuple[str, str]:
    """The step machine's verdict from the record, and the numbers behind it."""
    message = str(state.get("message", ""))
    if int(state.get("failures", 0)) >= cfg.failure_limit:
        return FAILED, f"{state['failures']} failed window(s), limit {cfg.failure_limit}; last: {message}"
    if int(state.get("inconclusive", 0)) >= cfg.inconclusive_limit:
        return INCONCLUSIVE, f"{state['inconclusive']} window(s) in a row under minRequests {cfg.min_requests}"
    return (PASSED, message) if state.get("result") == PASSED else ("", message)
