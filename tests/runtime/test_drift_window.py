"""Window decisions on real, seeded data: false-positive rate under no drift, detection delay after shifts of
known size, the consecutive-windows state machine and its persisted form, and the time a large window takes."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tritonops_runtime.drift.profile import build_profile
from tritonops_runtime.drift.stats import FeatureScore
from tritonops_runtime.drift.window import TrackerState, advance, check_settings, decide, evaluate_window

NUMERIC, CLASSES = 6, (0, 1, 2, 3)
CLASS_P = (0.4, 0.3, 0.2, 0.1)


def draw(rng: np.random.Generator, rows: int, shift: float = 0.0) -> npt.NDArray[np.float64]:
    """Six N(0, 1) features (the first shifted by ``shift`` sigma) and one categorical feature."""
    x = rng.normal(size=(rows, NUMERIC + 1))
    x[:, 0] += shift
    x[:, NUMERIC] = rng.choice(CLASSES, p=CLASS_P, size=rows)
    return x


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return build_profile(draw(np.random.default_rng(100), 20000), categorical=[NUMERIC], input_names=["f"])


def binomial_bound(alpha: float, trials: int) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


@pytest.mark.parametrize(("method", "correction"), [("ks", "holm"), ("ks", "bh"), ("chi2", "holm"), ("chi2", "bh")])
def test_false_positive_rate_within_alpha(profile: dict[str, Any], method: str, correction: str) -> None:
    rng, alpha, windows = np.random.default_rng(200), 0.05, 300
    flagged = sum(evaluate_window(profile, draw(rng, 300), method=method, threshold=alpha,
                                  correction=correction).drifted for _ in range(windows))
    assert flagged / windows <= binomial_bound(alpha, windows)


def test_score_methods_stay_quiet_without_drift(profile: dict[str, Any]) -> None:
    rng = np.random.default_rng(201)
    for _ in range(100):
        window = draw(rng, 1000)
        assert not evaluate_window(profile, window, method="psi", threshold=0.1).drifted
        assert not evaluate_window(profile, window, method="js", threshold=0.1).drifted


def windows_until_declared(profile: dict[str, Any], method: str, threshold: float, shift: float,
                           consecutive: int, seed: int) -> tuple[int | None, TrackerState]:
    """Ten clean windows (drift must not be declared), then shifted ones: how many until it is."""
    rng, state = np.random.default_rng(seed), TrackerState()
    for _ in range(10):
        state = advance(state, evaluate_window(profile, draw(rng, 1000), method=method,
                                               threshold=threshold).drifted, consecutive)
        assert not state.declared
    for k in range(1, 11):
        result = evaluate_window(profile, draw(rng, 1000, shift), method=method, threshold=threshold)
        assert not result.drifted or "f[0]" in result.drifted_features
        state = advance(state, result.drifted, consecutive)
        if state.event == "declared":
            return k, state
    return None, state


@pytest.mark.parametrize(("method", "threshold"), [("ks", 0.05), ("chi2", 0.05), ("psi", 0.1), ("js", 0.1)])
@pytest.mark.parametrize("shift", [0.5, 1.0])
def test_detection_delay_after_a_mean_shift(profile: dict[str, Any], method: str, threshold: float,
                                            shift: float) -> None:
    delay, state = windows_until_declared(profile, method, threshold, shift, consecutive=3, seed=300)
    assert delay == 3  # every shifted window drifts: declared exactly at consecutiveWindows
    assert state.declarations == 1 and state.consecutive == 3


def test_effect_sizes_grow_with_the_shift(profile: dict[str, Any]) -> None:
    rng = np.random.default_rng(400)
    for method in ("psi", "js", "ks", "chi2"):
        scores = [evaluate_window(profile, draw(rng, 2000, shift), method=method, threshold=0.05).features[0].score
                  for shift in (0.0, 0.5, 1.0, 2.0)]
        assert scores == sorted(scores), method
    psi = [evaluate_window(profile, draw(rng, 5000, s), method="psi").features[0].score for s in (0.0, 1.0)]
    assert psi[0] < 0.01 and psi[1] > 0.5


def test_output_class_mix_drift() -> None:
    rng = np.random.default_rng(500)
    x = rng.normal(size=(5000, 3))
    probs = rng.dirichlet([4.0, 2.0, 1.0], size=5000)
    profile = build_profile(x, probs, output_names=["OUTPUT0"])
    same = evaluate_window(profile, rng.normal(size=(800, 3)), rng.dirichlet([4.0, 2.0, 1.0], size=800),
                           method="chi2", threshold=0.05)
    assert not same.drifted and same.features[-1].role == "output" and same.features[-1].test == "chi2"
    moved = evaluate_window(profile, rng.normal(size=(800, 3)), rng.dirichlet([1.0, 2.0, 4.0], size=800),
                            method="ks", threshold=0.05)
    assert moved.drifted_features == ("OUTPUT0",)
    assert evaluate_window(profile, x[:500], probs[:500], method="psi").score < 0.05


def score(name: str, value: float, p: float | None = None) -> FeatureScore:
    return FeatureScore(name, "input", "numeric", "ks" if p is not None else "psi", value, value, p, 100)


def test_decide_for_scores_and_p_values() -> None:
    result = decide([score("a", 0.2), score("b", 0.21), score("c", 0.05)], method="psi", threshold=0.2, rows=100)
    assert result.drifted_features == ("b",) and result.score == 0.21 and result.p_value is None
    assert result.mean_score == pytest.approx(0.46 / 3)
    p_scores = [score("a", 0.3, 0.001), score("b", 0.1, 0.02), score("c", 0.1, 0.04)]
    holm = decide(p_scores, method="ks", threshold=0.05, correction="holm", rows=100)
    assert [f.p_adjusted for f in holm.features] == pytest.approx([0.003, 0.04, 0.04])
    assert holm.drifted_features == ("a", "b", "c") and holm.p_value == pytest.approx(0.003)
    strict = decide(p_scores, method="ks", threshold=0.01, correction="bh", rows=100)
    assert strict.drifted_features == ("a",) and strict.drifted
    assert json.loads(json.dumps(holm.to_dict()))["features"][0]["pAdjusted"] == pytest.approx(0.003)


@pytest.mark.parametrize(("method", "threshold", "correction", "message"), [
    ("ks", 1.0, "holm", "significance level alpha and must be < 1"),
    ("js", 1.5, "holm", "JS distance threshold and must be < 1"),
    ("psi", 0.0, "holm", "positive number"),
    ("psi", math.nan, "holm", "positive number"),
    ("wasserstein", 0.1, "holm", "method must be one of psi, js, ks, chi2"),
    ("ks", 0.05, "bonferroni", "correction must be one of holm, bh, none"),
])
def test_settings_are_checked(method: str, threshold: float, correction: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_settings(method, threshold, correction)


def test_window_shape_errors(profile: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"inputs of shape \(10, 3\) do not match the profile's 7 input"):
        evaluate_window(profile, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="the drift profile has no outputs"):
        evaluate_window(profile, np.zeros((10, 7)), np.zeros(10))


# --- the state machine -------------------------------------------------------------------------------------

def run(flags: list[bool], k: int, state: TrackerState | None = None) -> list[TrackerState]:
    states, current = [], state or TrackerState()
    for flag in flags:
        current = advance(current, flag, k)
        states.append(current)
    return states


def test_declared_after_consecutive_windows_once_and_cleared_by_a_clean_window() -> None:
    flags = [False, True, True, False, True, True, True, True, False, True]
    states = run(flags, 3)
    assert [s.event for s in states] == ["none"] * 6 + ["declared", "none", "cleared", "none"]
    assert [s.consecutive for s in states] == [0, 1, 2, 0, 1, 2, 3, 4, 0, 1]
    assert [s.declared for s in states] == [False] * 6 + [True, True, False, False]
    last = states[-1]
    assert (last.windows, last.drifted_windows, last.declarations) == (10, 7, 1)
    assert [s.event for s in run([True, False, True], 1)] == ["declared", "cleared", "declared"]


def test_state_survives_a_restart() -> None:
    flags = [True, True, False, True, True, True, True, False, True, True]
    straight = run(flags, 3)
    for cut in range(len(flags)):
        saved = json.loads(json.dumps(straight[cut].to_dict()))
        assert run(flags[cut + 1:], 3, TrackerState.from_dict(saved)) == straight[cut + 1:]
    assert TrackerState.from_dict(None) == TrackerState()
    lowered = advance(TrackerState.from_dict(run([True, True], 5)[-1].to_dict()), True, 2)
    assert lowered.event == "declared"


@pytest.mark.parametrize(("change", "message"), [
    ({"version": 2}, "version must be 1"),
    ({"consecutive": -1}, "consecutive must be an integer >= 0"),
    ({"windows": True}, "windows must be an integer"),
    ({"declared": "yes"}, "declared must be true or false"),
    ({"event": "boom"}, "event must be one of"),
    ({"consecutive": 5}, "consecutive <= driftedWindows <= windows"),
])
def test_bad_state_is_rejected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackerState.from_dict({**run([True, True, False, True], 3)[-1].to_dict(), **change})
    with pytest.raises(ValueError, match="consecutive_windows must be >= 1"):
        advance(TrackerState(), True, 0)


# --- performance -------------------------------------------------------------------------------------------

def test_a_10k_by_100_window_is_fast() -> None:
    rng = np.random.default_rng(600)
    reference = rng.normal(size=(20000, 100))
    reference[:, :5] = rng.integers(0, 8, size=(20000, 5))
    profile = build_profile(reference, rng.dirichlet([1.0] * 5, size=20000), categorical=range(5))
    window = rng.normal(size=(10000, 100)).astype(np.float32)
    window[:, :5] = rng.integers(0, 8, size=(10000, 5))
    outputs = rng.dirichlet([1.0] * 5, size=10000)
    limits = {"psi": 1.0, "js": 1.0, "chi2": 1.0, "ks": 3.0}
    for method, limit in limits.items():
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            result = evaluate_window(profile, window, outputs, method=method, threshold=0.05)
            best = min(best, time.perf_counter() - start)
        assert len(result.features) == 101 and result.rows == 10000
        assert best < limit, f"{method}: {best:.3f} s"
