"""The canary step machine and the replica-ratio split, as tables (tritonops.canary)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tritonops import canary as c

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
STEPS = c.parse_steps({"steps": [{"setWeight": 10}, {"pause": {"durationSeconds": 60}}, {"setWeight": 50},
                                 {"analysis": {"durationSeconds": 120}}, {"pause": {}}, {"setWeight": 100}]})
READY = c.Gate(canary_ready=True, achieved_weight=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_steps_parse_with_their_kinds_and_durations() -> None:
    expected = [c.Step("setWeight", weight=10), c.Step("pause", seconds=60), c.Step("setWeight", weight=50),
                c.Step("analysis", seconds=120), c.Step("pause"), c.Step("setWeight", weight=100)]
    assert expected == STEPS


def test_weight_moves_only_when_the_canary_is_ready_and_records_the_achieved_weight() -> None:
    p = c.start("md-b", T0)
    assert c.target_weight(STEPS, p) == 10
    waiting = c.advance(STEPS, p, c.Gate(canary_ready=False, achieved_weight=25), at(5))
    assert (waiting.step, waiting.weight, waiting.decision) == (0, 0, c.PROGRESSING)
    moved = c.advance(STEPS, p, c.Gate(canary_ready=True, achieved_weight=25), at(5))
    assert (moved.step, moved.weight, moved.step_started) == (1, 25, at(5))


@pytest.mark.parametrize(("elapsed", "step"), [(59, 1), (60, 2)])
def test_a_timed_pause_ends_after_its_duration(elapsed: float, step: int) -> None:
    p = c.Progress("md-b", step=1, weight=10, step_started=T0)
    gate = c.Gate(canary_ready=False)  # not ready for step 2's weight yet: stops right after the pause
    assert c.advance(STEPS, p, gate, at(elapsed)).step == step
    assert c.next_check(STEPS, p, at(elapsed)) == max(0.0, 60 - elapsed)


@pytest.mark.parametrize(("elapsed", "verdict", "step", "decision"), [
    (119, c.PASSED, 3, c.PROGRESSING),  # the window is not over
    (120, "", 3, c.PROGRESSING),  # no verdict yet: wait
    (120, c.PASSED, 4, c.PAUSED),  # passed, then the indefinite pause
    (30, c.FAILED, 3, c.ABORTED),  # a failed check aborts at once
    (120, c.INCONCLUSIVE, 3, c.PAUSED),  # too little traffic: a human decides
])
def test_analysis_step(elapsed: float, verdict: str, step: int, decision: str) -> None:
    p = c.Progress("md-b", step=3, weight=50, step_started=T0)
    out = c.advance(STEPS, p, c.Gate(canary_ready=True, achieved_weight=50, verdict=verdict), at(elapsed))
    assert (out.step, out.decision) == (step, decision)
    assert out.weight == (0 if decision == c.ABORTED else 50)


def test_an_indefinite_pause_waits_for_a_promotion_and_one_promotion_passes_one_pause() -> None:
    p = c.Progress("md-b", step=4, weight=50, step_started=T0)
    held = c.advance(STEPS, p, READY, at(10_000))
    assert (held.step, held.decision) == (4, c.PAUSED) and "until promoted" in held.reason
    assert c.next_check(STEPS, held, at(10_000)) is None
    gate = c.Gate(canary_ready=True, achieved_weight=50, promote=True)
    resumed = c.advance(STEPS, held, gate, at(10_001))
    assert (resumed.decision, resumed.step) == (c.PROGRESSING, 5)  # setWeight 100 waits for its pods
    again = c.advance(STEPS, resumed, c.Gate(canary_ready=True, achieved_weight=100, promote=True), at(10_002))
    assert (again.decision, again.weight, again.step) == (c.PROMOTED, 100, len(STEPS))


def test_background_failure_aborts_in_any_step_and_a_finished_rollout_stays_finished() -> None:
    for step in range(len(STEPS)):
        p = c.Progress("md-b", step=step, weight=10, step_started=T0)
        out = c.advance(STEPS, p, c.Gate(canary_ready=True, verdict=c.FAILED), at(1))
        assert (out.decision, out.weight, out.step) == (c.ABORTED, 0, step)
        assert c.target_weight(STEPS, out) == 0
        assert c.advance(STEPS, out, replace(READY, verdict=c.PASSED, promote_full=True), at(2)) == out


def test_user_decisions_override_the_steps() -> None:
    p = c.Progress("md-b", step=1, weight=10, step_started=T0)
    assert c.advance(STEPS, p, replace(READY, abort=True), at(1)).decision == c.ABORTED
    full = c.advance(STEPS, p, replace(READY, promote_full=True), at(1))
    assert (full.decision, full.weight) == (c.PROMOTED, 100)
    paused = c.advance(STEPS, p, replace(READY, paused=True), at(1000))
    assert (paused.decision, paused.step) == (c.PAUSED, 1)
    at_weight_step = c.advance(STEPS, c.Progress("md-b", step=2, weight=10, step_started=T0),
                               replace(READY, paused=True), at(1))
    assert c.target_weight(STEPS, at_weight_step) == 10  # paused: hold what serves, do not scale to 50
    resumed = c.advance(STEPS, paused, c.Gate(canary_ready=False), at(1000))
    assert (resumed.decision, resumed.step) == (c.PROGRESSING, 2)


@pytest.mark.parametrize("decision", [c.PROGRESSING, c.PAUSED, c.PROMOTED, c.ABORTED])
@pytest.mark.parametrize("step", range(len(STEPS) + 1))
def test_a_restarted_operator_resumes_from_the_recorded_progress(step: int, decision: str) -> None:
    """What status.rollout records is all a restarted operator needs: it reads back the same progress."""
    p = c.Progress("md-b", step=step, weight=50, step_started=at(42), decision=decision, reason="why")
    assert c.from_status(c.to_status(p), "md-b", "md-b", at(999)) == p
    assert c.from_status(c.to_status(p), "md-b", "md-c", at(999)) == c.start("md-c", at(999))  # another canary


def test_a_new_canary_revision_restarts_at_step_zero() -> None:
    assert c.start("md-c", at(500)) == c.Progress("md-c", step=0, weight=0, step_started=at(500))


def test_no_steps_promotes_once_observed() -> None:
    assert c.advance([], c.start("md-b", T0), c.Gate(canary_ready=True), T0).decision == c.PROMOTED


@pytest.mark.parametrize(("total", "weight", "surge", "stable", "canary", "achieved"), [
    (4, 0, False, 4, 0, 0),
    (4, 25, False, 3, 1, 25),  # 1 canary pod of 4 = 25 %
    (4, 10, False, 3, 1, 25),  # the smallest step up is one pod
    (4, 50, False, 2, 2, 50),
    (4, 100, False, 1, 3, 75),  # stable keeps one replica until promotion
    (1, 50, False, 1, 0, 0),  # NoSurge with one replica cannot split before promotion
    (4, 20, True, 4, 1, 20),
    (4, 50, True, 4, 4, 50),
    (4, 90, True, 4, 4, 50),  # surge caps the canary at stable's size: 100 % needs the promotion
    (3, 10, True, 3, 1, 25),
])
def test_replica_split(total: int, weight: int, surge: bool, stable: int, canary: int, achieved: int) -> None:
    split = c.split_replicas(total, weight, surge)
    assert (split.stable, split.canary, split.weight) == (stable, canary, achieved)
    if not surge:
        assert split.stable + split.canary == total  # NoSurge: the GPU count stays constant


def test_a_weight_step_after_a_pause_waits_for_readiness_at_its_own_weight() -> None:
    p = c.Progress("md-b", step=1, weight=10, step_started=T0)
    out = c.advance(STEPS, p, c.Gate(canary_ready=True, achieved_weight=10), at(60))  # ready at 10 %, not 50
    assert (out.step, out.weight) == (2, 10) and c.target_weight(STEPS, out) == 50


def test_a_step_start_is_rounded_up_so_a_timed_pause_never_ends_early() -> None:
    now = datetime(2026, 11, 30, 12, 0, 0, 400_000, tzinfo=UTC)
    started = c.start("clf-b", now).step_started
    assert started == datetime(2026, 11, 30, 12, 0, 1, tzinfo=UTC)
    assert c.from_status(c.to_status(c.start("clf-b", now)), "clf-b", "clf-b", now).step_started == started
