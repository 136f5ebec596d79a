"""What a reconcile cycle reports besides conditions: ``status.history`` entries and Kubernetes Events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonops.analysis import FAILED
from tritonops.canary import ABORTED, PAUSED
from tritonops.rollout_plan import CanaryPlan, describe
from tritonops.status import reasons as r
from tritonops.status.conditions import find


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the ModelDeployment."""

    type: str  # Normal | Warning
    reason: str
    message: str


def history(history: list[dict[str, Any]], spec: dict[str, Any], promoted: str | None,
            stamp: str) -> list[dict[str, Any]]:
    """``status.history`` after this cycle: ``promoted`` (the revision promoted now, if any) added."""
    if not promoted:
        return history
    out = [dict(h, retiredAt=h.get("retiredAt") or stamp, outcome="Superseded")
           if h.get("outcome") == "Promoted" else h for h in history]
    model = spec["model"]
    entry = {"revision": promoted, "storageUri": model["storageUri"],
             "modelVersion": int(model.get("version", 1)), "promotedAt": stamp, "outcome": "Promoted"}
    if model.get("digest"):
        entry["digest"] = model["digest"]
    return [*out, entry][-max(history_limit(spec), 1):]


def history_limit(spec: dict[str, Any]) -> int:
    return int(spec.get("rollout", {}).get("revisionHistoryLimit", 10))


def condition_events(old: list[dict[str, Any]], new: list[dict[str, Any]], promoted: str | None) -> list[Event]:
    """A Normal event for a promotion, a Warning when InvalidSpec or Degraded turns True (or its reason changes)."""
    events = []
    if promoted:
        events.append(Event("Normal", r.EVENT_REVISION_PROMOTED, f"revision {promoted} is now serving"))
    for type_ in (r.INVALID_SPEC, r.DEGRADED):
        before, after = find(old, type_), find(new, type_)
        flipped = after and after["status"] == "True" and (
            before is None or before.get("status") != "True" or before.get("reason") != after["reason"])
        if flipped and after:
            events.append(Event("Warning", after["reason"], after["message"]))
    return events


def canary_events(old: dict[str, Any] | None, canary: CanaryPlan | None) -> list[Event]:
    """A Normal event when a canary finishes a step or starts waiting for a user (aborts warn via Degraded)."""
    if canary is None:
        return []
    p, old = canary.progress, old or {}
    events = []
    if p.step > int(old.get("currentStepIndex", 0)) and p.decision != ABORTED:
        events.append(Event("Normal", r.EVENT_CANARY_STEP, f"revision {p.canary}: {describe(canary)}"))
    if p.decision == PAUSED and old.get("decision") != PAUSED:
        events.append(Event("Normal", r.CANARY_PAUSED, f"revision {p.canary}: {p.reason}"))
    before, after = (old.get("analysis") or {}), (canary.analysis or {})
    if after.get("windows", 0) > before.get("windows", 0) and after.get("result") == FAILED:
        events.append(Event("Warning", r.EVENT_ANALYSIS_FAILED, f"revision {p.canary}: {after.get('message', '')}"))
    return events
