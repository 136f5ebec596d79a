"""The operator's rollout metrics: canary weight, step, decision, analysis checks and rollout durations;
and a counter of the drift → retraining loop's events (drift declared, Jobs started and ended, candidates
rolled out, promoted, rolled back), by reason.

Series of a ModelDeployment exist only while a canary is in flight (or just ended); they are removed when
it ends or the object is deleted, so dashboards never show a stale weight.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from tritonops.canary import parse_time
from tritonops.status import reasons as r

CANARY_WEIGHT = Gauge("tritonops_canary_weight_percent", "Percent of traffic on the canary revision (achieved)",
                      ("namespace", "name"))
ROLLOUT_STEP = Gauge("tritonops_canary_step", "Index of the canary step being executed", ("namespace", "name"))
ROLLOUT_DECISION = Gauge("tritonops_canary_decision", "1 for the canary's current decision",
                         ("namespace", "name", "decision"))
CHECK_VALUE = Gauge("tritonops_canary_check_value", "Value of a canary analysis check in its last window",
                    ("namespace", "name", "check"))
CHECK_FAILED = Gauge("tritonops_canary_check_failed", "1 when the check failed its last window (no value "
                     "counts as failed)", ("namespace", "name", "check"))
ROLLOUT_DURATION = Histogram("tritonops_rollout_duration_seconds", "Time from a canary's start to its end",
                             ("outcome",), buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 86400))
LOOP_EVENTS = Counter("tritonops_lifecycle_events_total", "Events of the drift and retraining loop, by reason "
                      "(DriftDetected, RetrainingStarted, CandidateAccepted, CandidateRejected, ...)",
                      ("namespace", "name", "reason"))
DECISIONS = ("Progressing", "Paused", "Promoted", "Aborted")
_checks: dict[tuple[str, str], set[str]] = {}
LOOP_REASONS = frozenset((r.EVENT_DRIFT_DETECTED, r.EVENT_DRIFT_CLEARED, r.EVENT_QUALITY_DROPPED,
                          r.EVENT_RETRAINING_STARTED, r.EVENT_CANDIDATE_ACCEPTED, r.EVENT_CANDIDATE_REJECTED,
                          r.EVENT_RETRAINING_FAILED, r.EVENT_CANDIDATE_ROLLOUT, r.EVENT_CANDIDATE_PROMOTED,
                          r.EVENT_CANDIDATE_ROLLED_BACK))


def record_rollout(namespace: str, name: str, status: dict[str, Any] | None) -> None:
    """Export the canary's weight, step, decision and checks (every series removed when no canary is in flight)."""
    rollout = (status or {}).get("rollout") or {}
    if "decision" not in rollout:
        forget_rollout(namespace, name)
        return
    CANARY_WEIGHT.labels(namespace, name).set(rollout.get("weight", 0))
    ROLLOUT_STEP.labels(namespace, name).set(rollout.get("currentStepIndex", 0))
    for decision in DECISIONS:
        ROLLOUT_DECISION.labels(namespace, name, decision).set(1 if rollout["decision"] == decision else 0)
    checks = (rollout.get("analysis") or {}).get("checks") or []
    for check in checks:
        if "value" in check:
            CHECK_VALUE.labels(namespace, name, check["name"]).set(check["value"])
        CHECK_FAILED.labels(namespace, name, check["name"]).set(1 if check.get("result") == "Failed" else 0)
    _checks.setdefault((namespace, name), set()).update(c["name"] for c in checks)


def record_end(old: dict[str, Any] | None, new: dict[str, Any] | None, now: datetime) -> None:
    """Observe a canary's duration when this cycle ended it (promoted, aborted)."""
    old, new_rollout = old or {}, (new or {}).get("rollout") or {}
    old_rollout = old.get("rollout") or {}
    started = parse_time(old_rollout.get("startedAt"))
    if not old.get("canaryRevision") or started is None or new is None:
        return
    if new_rollout.get("decision") == "Aborted" and old_rollout.get("decision") != "Aborted":
        ROLLOUT_DURATION.labels("Aborted").observe((now - started).total_seconds())
    elif new.get("stableRevision") == old["canaryRevision"]:
        ROLLOUT_DURATION.labels("Promoted").observe((now - started).total_seconds())


def forget_rollout(namespace: str, name: str) -> None:
    """Remove every rollout series of one ModelDeployment."""
    for gauge in (CANARY_WEIGHT, ROLLOUT_STEP):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    for decision in DECISIONS:
        with contextlib.suppress(KeyError):
            ROLLOUT_DECISION.remove(namespace, name, decision)
    for check in _checks.pop((namespace, name), set()):
        for gauge in (CHECK_VALUE, CHECK_FAILED):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name, check)


def record_loop_events(namespace: str, name: str, reasons: list[str]) -> None:
    """Count the loop's events of one cycle (the reasons in :mod:`tritonops.status.reasons`)."""
    for reason in reasons:
        if reason in LOOP_REASONS:
            LOOP_EVENTS.labels(namespace, name, reason).inc()
