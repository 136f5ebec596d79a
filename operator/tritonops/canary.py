"""The canary step machine and the replica-ratio split: pure functions, no clock, no I/O (issue 9, part 1).

A Canary rollout walks ``spec.rollout.canary.steps`` in order. Each reconcile cycle observes a
:class:`Gate` (is the canary side ready at the size the current step asks for, what weight that size
achieves, the background analysis verdict so far, what the user asked for) and :func:`advance` turns the
recorded :class:`Progress` (kept in ``status.rollout``, so a restarted operator resumes exactly) into the
next one, completing as many steps as the observations allow:

- ``setWeight``: completes once the canary side is ready at the step's weight; the weight recorded is the
  one the traffic router achieves (with replica ratios, 1 canary pod of 4 is 25 %), never the one asked for;
- ``pause``: completes after ``durationSeconds`` from the step's start, or, without a duration, only when
  a user promotes;
- ``analysis``: completes after ``durationSeconds`` if the analysis has *Passed* by then.

The analysis runs in the background once the canary takes traffic (:mod:`tritonops.analysis` turns its
windows into the verdict): a *Failed* verdict aborts at once (all traffic back to stable); an
*Inconclusive* one (too little canary traffic to judge, after the analysis's own limit) pauses the rollout
until a user promotes the step; neither ever promotes. After the last step the canary is promoted, and a
canary with analysis checks only on a *Passed* verdict. A new canary revision restarts from step 0 against
the same stable revision (:func:`start`).

:mod:`tritonops.rollout_plan` composes it into the planner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

SET_WEIGHT: Final = "setWeight"
PAUSE: Final = "pause"
ANALYSIS: Final = "analysis"

PROGRESSING: Final = "Progressing"
PAUSED: Final = "Paused"
PROMOTED: Final = "Promoted"
ABORTED: Final = "Aborted"

PASSED: Final = "Passed"
FAILED: Final = "Failed"
INCONCLUSIVE: Final = "Inconclusive"


@dataclass(frozen=True)
class Step:
    """One entry of ``spec.rollout.canary.steps``."""

    kind: str
    weight: int = 0
    seconds: int | None = None  # pause/analysis duration; None: a pause until promoted


def parse_steps(canary: dict[str, Any]) -> list[Step]:
    """The steps of ``spec.rollout.canary`` (the schema guarantees exactly one kind per entry)."""
    steps = []
    for raw in canary.get("steps", []):
        if SET_WEIGHT in raw:
            steps.append(Step(SET_WEIGHT, weight=int(raw[SET_WEIGHT])))
        else:
            kind = PAUSE if PAUSE in raw else ANALYSIS
            seconds = (raw.get(kind) or {}).get("durationSeconds")
            steps.append(Step(kind, seconds=int(seconds) if seconds is not None else None))
    return steps


@dataclass(frozen=True)
class Progress:
    """Where one canary revision's rollout stands (``status.rollout``)."""

    canary: str
    step: int = 0  # index of the current step; len(steps) once every step is done
    weight: int = 0  # percent of traffic the canary takes now (as achieved, not as asked)
    step_started: datetime | None = None  # pauses and analysis windows count from here
    decision: str = PROGRESSING
    reason: str = ""
    decided_at: datetime | None = None  # when it was promoted or aborted (scale-down delays count from here)


@dataclass(frozen=True)
class Gate:
    """What one reconcile cycle observed."""

    canary_ready: bool  # every canary pod that should take traffic at the current target reports ready
    achieved_weight: int = 0  # the weight the router achieves at the current target
    verdict: str = ""  # background analysis so far: Passed, Failed, Inconclusive, or "" (still collecting)
    promote: bool = False  # a user asked to go on (ends a pause, an inconclusive halt)
    promote_full: bool = False  # a user asked to skip the remaining steps
    abort: bool = False
    paused: bool = False  # spec.rollout.paused, or a pause annotation naming this canary
    verdict_reason: str = ""  # the numbers behind a Failed or Inconclusive verdict
    analysis_required: bool = False  # the canary has analysis checks: promotion needs a Passed verdict


def whole_second(now: datetime) -> datetime:
    """``now`` rounded *up* to a whole second: status times have one-second precision, and a step start
    rounded down would end a timed pause up to a second early (measured on the real node)."""
    return now if not now.microsecond else now.replace(microsecond=0) + timedelta(seconds=1)


def start(canary: str, now: datetime) -> Progress:
    """A fresh rollout of ``canary`` (also when a new spec replaces the canary mid-rollout)."""
    return Progress(canary, step_started=whole_second(now))


def target_weight(steps: list[Step], progress: Progress) -> int:
    """The weight the traffic router should aim for now: the current setWeight step's (unless paused), else
    the weight that serves."""
    if progress.decision == ABORTED:
        return 0
    if progress.decision == PROMOTED:
        return 100
    if progress.decision == PAUSED:
        return progress.weight  # a paused rollout holds what serves now
    if progress.step < len(steps) and steps[progress.step].kind == SET_WEIGHT:
        return steps[progress.step].weight
    return progress.weight


def _elapsed(progress: Progress, now: datetime) -> float:
    return (now - progress.step_started).total_seconds() if progress.step_started else 0.0


def _complete(step: Step, progress: Progress, gate: Gate, now: datetime) -> Progress | None:
    """``progress`` moved past ``step``, or None while the step must wait."""
    done = replace(progress, step=progress.step + 1, step_started=whole_second(now), decision=PROGRESSING, reason="")
    if step.kind == SET_WEIGHT:
        return replace(done, weight=gate.achieved_weight) if gate.canary_ready else None
    if step.kind == PAUSE:
        if gate.promote or (step.seconds is not None and _elapsed(progress, now) >= step.seconds):
            return done
        return None
    if _elapsed(progress, now) >= (step.seconds or 0) and gate.verdict == PASSED:
        return done
    return None


def _halt(progress: Progress, gate: Gate) -> Progress | None:
    """Decisions that override the steps: abort, a failed analysis, a full promotion, a pause."""
    if gate.abort:
        return replace(progress, weight=0, decision=ABORTED, reason="aborted by a user")
    if gate.verdict == FAILED:
        return replace(progress, weight=0, decision=ABORTED, reason=f"the analysis failed: {gate.verdict_reason}")
    if gate.promote_full:
        return replace(progress, weight=100, decision=PROMOTED, reason="promoted by a user, remaining steps skipped")
    if gate.paused:
        return replace(progress, decision=PAUSED, reason="paused (spec.rollout.paused or tritonops.io/pause)")
    if gate.verdict == INCONCLUSIVE and not gate.promote:
        return replace(progress, decision=PAUSED, reason="the analysis is inconclusive, too little canary traffic "
                       f"to judge ({gate.verdict_reason}); promote the step to go on")
    return None


def advance(steps: list[Step], progress: Progress, gate: Gate, now: datetime) -> Progress:
    """The next progress after one cycle's observations (a finished rollout stays as it is)."""
    if progress.decision in (PROMOTED, ABORTED):
        return progress
    nxt = _advance(steps, progress, gate, now)
    return replace(nxt, decided_at=now) if nxt.decision in (PROMOTED, ABORTED) else nxt


def _advance(steps: list[Step], progress: Progress, gate: Gate, now: datetime) -> Progress:
    if (halted := _halt(progress, gate)) is not None:
        return halted
    current = replace(progress, decision=PROGRESSING, reason="")
    while current.step < len(steps):
        step = steps[current.step]
        moved = _complete(step, current, gate, now)
        if moved is None:
            if step.kind == PAUSE and step.seconds is None:
                return replace(current, decision=PAUSED, reason=f"step {current.step}: paused until promoted")
            return current
        current = moved
        # One promotion moves past one pause; readiness was observed for the previous step's weight, so a
        # following setWeight step waits for the next cycle, when the router has sized the canary for it.
        gate = replace(gate, promote=False, canary_ready=False)
    if gate.analysis_required and gate.verdict != PASSED and not gate.promote:
        return replace(current, reason="every step done; waiting for a passing analysis window to promote")
    return replace(current, weight=100, decision=PROMOTED, reason="every step passed")


def next_check(steps: list[Step], progress: Progress, now: datetime) -> float | None:
    """Seconds until a timed step can complete (a requeue hint), or None when only an event can move it."""
    if progress.decision != PROGRESSING or progress.step >= len(steps):
        return None
    step = steps[progress.step]
    if step.kind == SET_WEIGHT or step.seconds is None:
        return None
    return max(0.0, step.seconds - _elapsed(progress, now))


@dataclass(frozen=True)
class Split:
    """Replicas of each side, and the share of traffic that gives when the Service balances evenly."""

    stable: int
    canary: int

    @property
    def weight(self) -> int:
        total = self.stable + self.canary
        return round(100 * self.canary / total) if total else 0


def split_replicas(total: int, weight: int, surge: bool) -> Split:
    """Replica counts that realise ``weight`` percent on the canary as closely as replicas allow.

    ``surge`` (capacityPolicy Surge): stable keeps every replica until promotion and the canary is added
    beside it, so 100 % is reached only by promoting. Not ``surge`` (NoSurge): the canary's replicas are
    taken from stable's, the total (and so the GPU count) stays constant, and stable keeps at least one
    replica until promotion (with one replica in all, the canary gets none before promotion).
    """
    if total <= 0 or weight <= 0:
        return Split(max(total, 0), 0)
    if surge:
        canary = total if weight >= 100 else max(1, round(total * weight / (100 - weight)))
        return Split(total, min(canary, total))
    canary = min(max(1, round(total * weight / 100)), total - 1)
    return Split(total - canary, canary)


def route_split(total: int, weight: int, surge: bool) -> Split:
    """Replicas when a Gateway API route sets the weight (the pods only need the capacity for it).

    The canary gets its share of ``total`` rounded up (one pod at least); Surge keeps every stable
    replica, NoSurge takes the canary's from stable's (stable keeps one at least until promotion).
    """
    if total <= 0 or weight <= 0:
        return Split(max(total, 0), 0)
    canary = min(total, -(-total * weight // 100))
    return Split(total, canary) if surge else Split(max(1, total - canary), min(canary, max(total - 1, 0)))


def stamp(now: datetime) -> str:
    """A status time: RFC 3339, seconds precision, UTC."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time from the status, or None."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def from_status(rollout: dict[str, Any], recorded_canary: str | None, canary: str, now: datetime) -> Progress:
    """The progress recorded in ``status.rollout`` for ``canary``; a fresh start for any other revision."""
    if recorded_canary != canary or "currentStepIndex" not in rollout:
        return start(canary, now)
    return Progress(canary, step=int(rollout["currentStepIndex"]), weight=int(rollout.get("weight", 0)),
                    step_started=parse_time(rollout.get("stepStartedAt")),
                    decision=rollout.get("decision", PROGRESSING), reason=rollout.get("message", ""),
                    decided_at=parse_time(rollout.get("decidedAt")))


def to_status(progress: Progress) -> dict[str, Any]:
    """``status.rollout`` fields of ``progress`` (times in RFC 3339, seconds, UTC)."""
    out: dict[str, Any] = {"currentStepIndex": progress.step, "weight": progress.weight,
                           "decision": progress.decision}
    if progress.step_started:
        out["stepStartedAt"] = stamp(progress.step_started)
    if progress.reason:
        out["message"] = progress.reason
    if progress.decided_at:
        out["decidedAt"] = stamp(progress.decided_at)
    return out
