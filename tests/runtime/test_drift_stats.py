"""The drift detectors against scipy's reference implementations and direct formulas, on seeded data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]

from tritonops_runtime.drift.profile import build_profile
from tritonops_runtime.drift.stats import (
    EPSILON,
    adjust,
    benjamini_hochberg,
    bin_counts,
    category_counts,
    category_key,
    chi2_homogeneity,
    holm,
    js_distance,
    ks_2sample,
    psi,
    score_feature,
    tally,
)


def direct_psi(expected: list[float], actual: list[float], eps: float = EPSILON) -> float:
    """PSI written out bin by bin, with the documented smoothing p -> (p + eps) / (1 + k eps)."""
    k, e_total, a_total = len(expected), sum(expected), sum(actual)
    total = 0.0
    for e_count, a_count in zip(expected, actual, strict=True):
        e = (e_count / e_total + eps) / (1 + k * eps)
        a = (a_count / a_total + eps) / (1 + k * eps)
        total += (a - e) * math.log(a / e)
    return total


# --- Kolmogorov-Smirnov ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("n_live", "n_ref", "shift", "discrete"), [
    (500, 2000, 0.0, False), (500, 2000, 0.3, False), (5000, 1000, 0.05, False),
    (120, 130, 0.0, False), (1000, 2000, 0.0, True), (800, 2000, 1.0, True),
])
def test_ks_matches_scipy_ks_2samp(n_live: int, n_ref: int, shift: float, discrete: bool) -> None:
    rng = np.random.default_rng(7)
    ref, live = rng.normal(size=n_ref), rng.normal(shift, 1.0, size=n_live)
    if discrete:  # many ties on both sides
        ref, live = np.round(ref * 2), np.round(live * 2)
    d, p = ks_2sample(np.sort(ref), live)
    expected = stats.ks_2samp(live, ref, method="asymp")
    assert d == pytest.approx(float(expected.statistic), abs=1e-15)
    assert p == pytest.approx(float(expected.pvalue), rel=1e-12, abs=1e-300)
    two_sample = stats.kstest(live, ref, method="asymp")
    assert (d, p) == pytest.approx((float(two_sample.statistic), float(two_sample.pvalue)), rel=1e-12)


def test_ks_matches_the_default_method_for_large_windows() -> None:
    rng = np.random.default_rng(8)
    ref, live = rng.normal(size=2000), rng.normal(0.05, 1.0, size=12000)  # > 10000: scipy's auto is asymptotic
    d, p = ks_2sample(np.sort(ref), live)
    expected = stats.ks_2samp(live, ref)
    assert (d, p) == pytest.approx((float(expected.statistic), float(expected.pvalue)), rel=1e-12)


def test_ks_through_the_profile_uses_the_stored_sample() -> None:
    rng = np.random.default_rng(9)
    small = rng.normal(size=(1500, 1))  # fewer rows than ksSample: the sample is the whole sorted reference
    big = rng.normal(size=(30000, 1))
    live = rng.normal(0.1, 1.0, size=700)
    for reference in (small, big):
        feature = build_profile(reference)["inputs"][0]
        result = score_feature(feature, live, "ks")
        expected = stats.ks_2samp(live, np.asarray(feature["sample"]), method="asymp")
        assert (result.score, result.p_value) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-12)
        assert result.test == "ks" and result.n == 700
    direct = stats.ks_2samp(live, small[:, 0], method="asymp")
    assert score_feature(build_profile(small)["inputs"][0], live, "ks").p_value == pytest.approx(direct.pvalue)


# --- chi-squared -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("live", [
    [30, 25, 40, 5], [10, 10, 10, 10], [0, 50, 50, 0], [25, 25, 25, 25, 40],
])
def test_chi2_matches_chi2_contingency(live: list[int]) -> None:
    reference = [300, 250, 400, 50] + [0] * (len(live) - 4)  # the last live bin: a category unseen before
    statistic, p, dof = chi2_homogeneity(np.array(reference, float), np.array(live, float))
    table = np.array([reference, live])
    expected = stats.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
    assert (statistic, p, dof) == pytest.approx((expected.statistic, expected.pvalue, expected.dof), rel=1e-12)


def test_chi2_close_to_goodness_of_fit_for_a_huge_reference() -> None:
    fractions, live = np.array([0.2, 0.3, 0.5]), np.array([30.0, 25.0, 45.0])
    statistic, p, _ = chi2_homogeneity(fractions * 1e9, live)
    expected = stats.chisquare(live, fractions * live.sum())
    assert (statistic, p) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-6)


def test_chi2_degenerate_tables() -> None:
    assert chi2_homogeneity(np.array([10.0, 0.0]), np.array([5.0, 0.0])) == (0.0, 1.0, 0)
    assert chi2_homogeneity(np.array([10.0, 5.0]), np.array([0.0, 0.0]))[1] == 1.0


def test_chi2_feature_score_is_cramers_v() -> None:
    rng = np.random.default_rng(3)
    reference = rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2], size=(4000, 1))
    feature = build_profile(reference, categorical=[0])["inputs"][0]
    live = rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.3, 0.1], size=600)
    result = score_feature(feature, live.astype(float), "chi2")
    table = np.array([[*feature["counts"], 0], np.bincount(live, minlength=5)[1:]])
    expected = stats.chi2_contingency(table, correction=False)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert result.score == pytest.approx(stats.contingency.association(table, method="cramer"), rel=1e-12)
    assert score_feature(feature, live.astype(float), "ks").test == "chi2"  # KS means nothing on categories


# --- Jensen-Shannon and PSI --------------------------------------------------------------------------------

@pytest.mark.parametrize(("p", "q"), [
    ([1, 2, 3, 4], [4, 3, 2, 1]), ([10, 0, 5], [0, 3, 5]), ([1, 1], [1, 1]), ([5, 0], [0, 7]),
    ([0.1] * 10, [0.05] * 5 + [0.15] * 5),
])
def test_js_matches_scipy(p: list[float], q: list[float]) -> None:
    got = js_distance(np.array(p, float), np.array(q, float))
    assert got == pytest.approx(float(jensenshannon(p, q, base=2)), abs=1e-12)
    assert 0.0 <= got <= 1.0


def test_js_extremes() -> None:
    assert js_distance(np.array([3.0, 0.0]), np.array([0.0, 2.0])) == 1.0
    assert js_distance(np.array([3.0, 1.0]), np.array([6.0, 2.0])) == 0.0


@pytest.mark.parametrize(("expected", "actual"), [
    ([100, 100, 100, 100], [90, 110, 95, 105]), ([50, 0, 50], [40, 20, 40]), ([10, 20, 0], [10, 20, 0]),
    ([0.1, 0.2, 0.7], [0.3, 0.3, 0.4]),
])
def test_psi_matches_the_direct_formula(expected: list[float], actual: list[float]) -> None:
    got = psi(np.array(expected, float), np.array(actual, float))
    assert got == pytest.approx(direct_psi(expected, actual), rel=1e-12, abs=1e-15)
    assert psi(np.array(expected, float), np.array(actual, float), 1e-3) == pytest.approx(
        direct_psi(expected, actual, 1e-3), rel=1e-12, abs=1e-15)


def test_psi_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(11)
    feature = build_profile(rng.normal(size=(20000, 1)))["inputs"][0]
    same = score_feature(feature, rng.normal(size=10000), "psi")
    assert same.score < 0.01 and same.p_value is None
    assert score_feature(feature, rng.normal(size=10000), "js").score < 0.05
    shifted = score_feature(feature, rng.normal(2.0, 1.0, size=10000), "psi")
    assert shifted.score > 2.0
    counts = bin_counts(np.asarray(feature["edges"]), rng.normal(2.0, 1.0, size=10000))
    assert score_feature(feature, rng.normal(size=10000) * 0 + 5.0, "psi").score > 5.0  # all in the top bin
    assert direct_psi(feature["counts"], counts.tolist()) > 2.0


# --- bins and categories -----------------------------------------------------------------------------------

def test_bins_are_right_closed_with_open_outer_bins() -> None:
    edges = np.array([0.0, 1.0, 2.0])
    values = np.array([-5.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 1e9])
    direct = [sum(1 for v in values if (i == 0 or v > edges[i - 1]) and (i == 3 or v <= edges[i])) for i in range(4)]
    assert bin_counts(edges, values).tolist() == direct == [2, 2, 2, 2]


def test_categories_are_canonical_and_unseen_ones_pooled() -> None:
    assert [category_key(v) for v in (np.int64(3), 3.0, 2.5, True, b"cat", "dog", float("nan"), None)] == [
        3, 3, 2.5, 1, "cat", "dog", None, None]
    with pytest.raises(ValueError, match="not a number or a string"):
        category_key(object())
    assert tally(np.array([1.0, 1.0, np.nan, 2.0, np.inf])) == {1: 2, 2: 1}
    assert tally(np.array(["a", None, b"a", "b"], dtype=object)) == {"a": 2, "b": 1}
    counts = category_counts([1, 2, "x"], np.array([1, 2, 2, "x", "y", 7, None], dtype=object))
    assert counts.tolist() == [1, 2, 1, 2]


def test_missing_values_are_dropped_per_feature() -> None:
    rng = np.random.default_rng(5)
    feature = build_profile(rng.normal(size=(3000, 1)))["inputs"][0]
    live = rng.normal(size=400)
    live[:50] = np.nan
    live[50:60] = np.inf
    for method in ("psi", "js", "ks", "chi2"):
        assert score_feature(feature, live, method).n == 340
        assert score_feature(feature, np.full(10, np.nan), method).score == 0.0
    with pytest.raises(ValueError, match="method must be one of"):
        score_feature(feature, live, "t-test")


# --- multiple testing --------------------------------------------------------------------------------------

def holm_rejections(p: list[float], alpha: float) -> set[int]:
    """Holm's step-down procedure, as published: reject while p_(i) <= alpha / (m - i)."""
    m, rejected = len(p), set()
    for rank, index in enumerate(sorted(range(m), key=lambda i: p[i])):
        if p[index] > alpha / (m - rank):
            break
        rejected.add(index)
    return rejected


def test_holm_adjusted_p_values_reproduce_the_step_down_procedure() -> None:
    rng = np.random.default_rng(13)
    for _ in range(200):
        p = np.concatenate([rng.uniform(size=8), rng.uniform(0, 0.01, size=rng.integers(0, 5))])
        adjusted = holm(p)
        assert np.all(adjusted >= p) and np.all(adjusted <= 1.0)
        for alpha in (0.01, 0.05, 0.2):
            assert {i for i, a in enumerate(adjusted) if a <= alpha} == holm_rejections(p.tolist(), alpha)


def test_bh_matches_scipy_false_discovery_control() -> None:
    rng = np.random.default_rng(17)
    for _ in range(50):
        p = np.concatenate([rng.uniform(size=20), rng.uniform(0, 0.001, size=3)])
        assert benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p, method="bh"), rel=1e-12)
    assert adjust(np.array([0.01, 0.04]), "none").tolist() == [0.01, 0.04]
    with pytest.raises(ValueError, match="correction"):
        adjust(np.array([0.5]), "bonferroni")


def test_feature_score_to_dict() -> None:
    feature: dict[str, Any] = build_profile(np.arange(100.0).reshape(-1, 1), input_names=["x"])["inputs"][0]
    out = score_feature(feature, np.arange(50.0), "ks", role="output").to_dict()
    assert out["name"] == "x" and out["role"] == "output" and out["n"] == 50 and out["pAdjusted"] is None
