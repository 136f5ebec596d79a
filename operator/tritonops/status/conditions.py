"""metav1.Condition helpers: build, merge (keeping lastTransitionTime stable) and derive the phase."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonops.status import reasons as r


@dataclass(frozen=True)
class Cond:
    """A desired condition before timestamps: type, status, reason, message."""

    type: str
    status: bool
    reason: str
    message: str


def _status_word(value: bool) -> str:
    return "True" if value else "False"


def merge(old: list[dict[str, Any]], new: list[Cond], generation: int, now: str) -> list[dict[str, Any]]:
    """Render ``new`` as metav1.Conditions, keeping ``lastTransitionTime`` unless the status flips.

    Conditions of types not in ``new`` (owned by other controllers) are kept as they are.
    """
    previous = {c.get("type"): c for c in old}
    rendered: list[dict[str, Any]] = []
    for cond in new:
        word = _status_word(cond.status)
        before = previous.get(cond.type)
        since = before["lastTransitionTime"] if before and before.get("status") == word else now
        rendered.append({"type": cond.type, "status": word, "observedGeneration": generation,
                         "lastTransitionTime": since, "reason": cond.reason, "message": cond.message[:32768]})
    ours = {c.type for c in new}
    rendered.extend(c for c in old if c.get("type") not in ours)
    return rendered


def find(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    """The condition of ``type_``, if present."""
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    """Whether the condition of ``type_`` is present and True."""
    cond = find(conditions, type_)
    return cond is not None and cond.get("status") == "True"


def phase(conditions: list[dict[str, Any]]) -> str:
    """The display phase, derived from conditions (never drives control flow)."""
    if is_true(conditions, r.INVALID_SPEC):
        return r.PHASE_INVALID
    if is_true(conditions, r.DEGRADED):
        return r.PHASE_DEGRADED
    if is_true(conditions, r.PROGRESSING):
        return r.PHASE_PROGRESSING
    if is_true(conditions, r.READY):
        return r.PHASE_READY
    return r.PHASE_PENDING
