"""Drift detectors: PSI, Jensen-Shannon distance, two-sample Kolmogorov-Smirnov and chi-squared, per feature,
plus the Holm-Bonferroni and Benjamini-Hochberg corrections applied across features.

Design choices (all of them are properties the tests check):

- **Bins** come from the reference profile (``profile.py``): a numeric feature has the interior quantile cut
  points ``e_0 < ... < e_{k-2}`` of the reference (ties removed) and ``k`` right-closed bins
  ``(-inf, e_0], (e_0, e_1], ..., (e_{k-2}, +inf)``: the outer bins are open so live values beyond the
  reference's range still land in a bin. A categorical feature's bins are its reference categories plus one
  last "unseen" bin for categories the reference never had (reference fraction 0).
- **PSI** = sum_i (a_i - e_i) ln(a_i / e_i) over the bins, where e is the reference and a the live fraction.
  Empty bins would make it infinite, so both sides are smoothed: p_i -> (p_i + eps) / (1 + k eps) with
  ``eps = 1e-4`` (``EPSILON``). The smoothed fractions still sum to 1, identical histograms still give exactly
  0, a bin empty on both sides contributes exactly 0, and a bin empty on one side contributes a finite, large
  term (about a ln(a / eps)). PSI has no p-value.
- **Jensen-Shannon distance** (base 2, in [0, 1]) = sqrt(JSD) on the same bins, unsmoothed (0 log 0 = 0; the
  mixture is positive wherever either side is): the same number as ``scipy.spatial.distance.jensenshannon(p,
  q, base=2)``. No p-value.
- **Kolmogorov-Smirnov** is the two-sample test of the live values against the reference sample stored in the
  profile (up to ``ksSample`` values per numeric feature, see ``profile.py``): statistic and p-value are those
  of ``scipy.stats.ks_2samp(live, sample, method="asymp")``, i.e. D = sup |F_live - F_ref| over both samples'
  points (ties handled by evaluating the right-continuous ECDFs), and the p-value of Smirnov's limiting
  distribution ``kstwo.sf(D, round(n m / (n + m)))``. ks_2samp's ``method="auto"`` gives the same number
  whenever either sample exceeds 10000 values; below that it computes the exact distribution, which costs
  O(n m) per feature and differs little at window sizes of 100 and more, so the asymptotic one is used.
  The KS score is D, in [0, 1].
- **Chi-squared** is the test of homogeneity of the 2 x k table (reference counts, live counts), i.e.
  ``scipy.stats.chi2_contingency(table, correction=False)`` after dropping bins empty on both sides. It is
  used rather than a goodness-of-fit test against the reference fractions because the reference is itself a
  sample: the two-sample form does not inflate false positives when the reference is not much larger than
  the window, and a category unseen in the reference needs no epsilon. Its score is Cramer's V =
  sqrt(chi2 / N) (in [0, 1]; N the table total), comparable across features with different bin counts; the
  chi-squared value itself is kept as the statistic. Under method ``ks``, categorical features use this test
  (KS is meaningless on unordered categories); under ``chi2`` numeric features use it on their quantile bins.
- **Multiple testing**: adjusted p-values (Holm's step-down, FWER; Benjamini-Hochberg's step-up, FDR), so a
  feature drifts when its adjusted p-value is <= alpha, whatever alpha is.
- Non-finite numeric values and missing categorical values (None, NaN) in a live window are dropped per
  feature; each score reports the number of values it used. A feature with none left scores 0 (p-value 1).
- Everything is vectorised per feature over the window's rows; only the feature loop is in Python.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy import special
from scipy.stats import kstwo

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Category = int | float | str

METHODS: Final = ("psi", "js", "ks", "chi2")
P_VALUE_METHODS: Final = frozenset({"ks", "chi2"})
CORRECTIONS: Final = ("holm", "bh", "none")
EPSILON: Final = 1e-4


# --- binning ---------------------------------------------------------------------------------------------

def bin_counts(edges: FloatArray, values: FloatArray) -> IntArray:
    """Counts of (finite) ``values`` in the bins (-inf, e_0], (e_0, e_1], ..., (e_last, +inf)."""
    index = np.searchsorted(edges, values, side="left")
    return np.bincount(index, minlength=len(edges) + 1).astype(np.int64)


def category_key(value: Any) -> Category | None:
    """The canonical (JSON) form of a category value: integral numbers become ints, bytes are decoded as
    UTF-8, bools are 0/1; None for a missing value (None, NaN, infinities). ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool | np.bool_ | int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            return None
        return int(number) if number.is_integer() else number
    raise ValueError(f"category value {value!r} of type {type(value).__name__} is not a number or a string")


def tally(values: npt.NDArray[Any]) -> dict[Category, int]:
    """Count the category values of one column, missing values left out."""
    items: Iterable[tuple[Any, int]]
    if values.dtype.kind in "biuf":
        present = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        keys, counts = np.unique(present, return_counts=True)
        items = zip(keys.tolist(), counts.tolist(), strict=True)
    else:
        items = Counter(values.tolist()).items()
    out: dict[Category, int] = {}
    for value, count in items:
        key = category_key(value)
        if key is not None:
            out[key] = out.get(key, 0) + int(count)
    return out


def category_counts(categories: list[Category], values: npt.NDArray[Any]) -> IntArray:
    """Counts per reference category, plus a last slot for the values the reference never had."""
    index = {category: i for i, category in enumerate(categories)}
    counts = np.zeros(len(categories) + 1, dtype=np.int64)
    for key, count in tally(values).items():
        counts[index.get(key, len(categories))] += count
    return counts


def numeric_column(values: npt.NDArray[Any], name: str) -> FloatArray:
    """One column as float64, or ValueError naming the feature."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"feature {name!r} is numeric but its values are not numbers: {err}") from None


# --- detectors -------------------------------------------------------------------------------------------

def _smooth(fractions: FloatArray, epsilon: float) -> FloatArray:
    return (fractions + epsilon) / (1.0 + len(fractions) * epsilon)


def psi(reference: FloatArray, live: FloatArray, epsilon: float = EPSILON) -> float:
    """Population stability index of the ``live`` histogram against the ``reference`` one (counts or
    fractions, same bins; each is normalised), both smoothed by ``epsilon`` (see the module docstring)."""
    ref = _smooth(np.asarray(reference, dtype=np.float64) / np.sum(reference), epsilon)
    act = _smooth(np.asarray(live, dtype=np.float64) / np.sum(live), epsilon)
    return float(np.sum((act - ref) * np.log(act / ref)))


def js_distance(reference: FloatArray, live: FloatArray) -> float:
    """Jensen-Shannon distance, base 2, of two histograms on the same bins (each normalised): in [0, 1]."""
    p = np.asarray(reference, dtype=np.float64) / np.sum(reference)
    q = np.asarray(live, dtype=np.float64) / np.sum(live)
    m = (p + q) / 2.0
    divergence = (float(np.sum(special.rel_entr(p, m))) + float(np.sum(special.rel_entr(q, m)))) / math.log(2.0)
    return min(1.0, math.sqrt(max(divergence / 2.0, 0.0)))


def ks_2sample(reference_sorted: FloatArray, live: FloatArray) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and asymptotic p-value; ``reference_sorted`` must be sorted.

    The same numbers as ``scipy.stats.ks_2samp(live, reference, method="asymp")``.
    """
    ref, act = reference_sorted, np.sort(live)
    both = np.concatenate([act, ref])
    diffs = np.searchsorted(act, both, side="right") / len(act) - np.searchsorted(ref, both, side="right") / len(ref)
    statistic = float(max(np.max(diffs), min(max(-np.min(diffs), 0.0), 1.0)))
    big, small = max(len(act), len(ref)), min(len(act), len(ref))
    effective_n = round(big * small / (big + small))
    p_value = float(np.clip(kstwo.sf(statistic, effective_n), 0.0, 1.0))
    return statistic, p_value


def chi2_homogeneity(reference: FloatArray, live: FloatArray) -> tuple[float, float, int]:
    """Chi-squared test of homogeneity of the 2 x k table (reference counts, live counts), bins empty on
    both sides dropped, no continuity correction: (statistic, p-value, degrees of freedom)."""
    table = np.vstack([np.asarray(reference, dtype=np.float64), np.asarray(live, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    dof = table.shape[1] - 1
    if dof < 1 or np.any(table.sum(axis=1) == 0):
        return 0.0, 1.0, max(dof, 0)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(special.chdtrc(dof, statistic)), dof


# --- multiple testing ------------------------------------------------------------------------------------

def holm(p_values: FloatArray) -> FloatArray:
    """Holm-Bonferroni adjusted p-values (step-down; controls the family-wise error rate)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted
    return out


def benjamini_hochberg(p_values: FloatArray) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values (step-up; controls the false discovery rate)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted
    return out


def adjust(p_values: FloatArray, correction: str) -> FloatArray:
    """``holm``, ``bh`` or ``none`` (the p-values as they are)."""
    if correction == "holm":
        return holm(p_values)
    if correction == "bh":
        return benjamini_hochberg(p_values)
    if correction == "none":
        return np.asarray(p_values, dtype=np.float64).copy()
    raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, not {correction!r}")


# --- one feature -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureScore:
    """One feature's result in one window. ``test`` is the test actually applied (``chi2`` for a categorical
    feature under method ``ks``); ``score`` its effect size (PSI, JS distance, KS D, Cramer's V) and
    ``statistic`` the raw test statistic (the chi-squared value for chi2, else the score); ``p_adjusted`` and
    ``drifted`` are filled in by the window decision (``window.py``)."""

    name: str
    role: str
    kind: str
    test: str
    score: float
    statistic: float
    p_value: float | None
    n: int
    p_adjusted: float | None = None
    drifted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (camelCase keys)."""
        return {"name": self.name, "role": self.role, "kind": self.kind, "test": self.test, "score": self.score,
                "statistic": self.statistic, "pValue": self.p_value, "pAdjusted": self.p_adjusted, "n": self.n,
                "drifted": self.drifted}


def _live_histogram(feature: Mapping[str, Any], values: npt.NDArray[Any]) -> tuple[IntArray, IntArray]:
    """(reference counts, live counts) on the feature's bins (categories + the unseen slot)."""
    if feature["kind"] == "categorical":
        live = category_counts(list(feature["categories"]), values)
        return np.append(np.asarray(feature["counts"], dtype=np.int64), 0), live
    column = numeric_column(values, feature["name"])
    live = bin_counts(np.asarray(feature["edges"], dtype=np.float64), column[np.isfinite(column)])
    return np.asarray(feature["counts"], dtype=np.int64), live


def score_feature(feature: Mapping[str, Any], values: npt.NDArray[Any], method: str, *, role: str = "input",
                  epsilon: float = EPSILON) -> FeatureScore:
    """Score one live column against one profile feature (``profile.py`` format) with ``method``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    name, kind = str(feature["name"]), str(feature["kind"])
    test = "chi2" if method == "ks" and kind == "categorical" else method
    if test == "ks":
        column = numeric_column(values, name)
        column = column[np.isfinite(column)]
        if column.size == 0:
            return FeatureScore(name, role, kind, test, 0.0, 0.0, 1.0, 0)
        d, p = ks_2sample(np.asarray(feature["sample"], dtype=np.float64), column)
        return FeatureScore(name, role, kind, test, d, d, p, int(column.size))
    reference, live = _live_histogram(feature, values)
    n = int(live.sum())
    if n == 0:
        return FeatureScore(name, role, kind, test, 0.0, 0.0, None if test in ("psi", "js") else 1.0, 0)
    if test == "psi":
        score = psi(reference.astype(np.float64), live.astype(np.float64), epsilon)
        return FeatureScore(name, role, kind, test, score, score, None, n)
    if test == "js":
        score = js_distance(reference.astype(np.float64), live.astype(np.float64))
        return FeatureScore(name, role, kind, test, score, score, None, n)
    statistic, p, _ = chi2_homogeneity(reference.astype(np.float64), live.astype(np.float64))
    cramers_v = min(1.0, math.sqrt(statistic / float(reference.sum() + n)))
    return FeatureScore(name, role, kind, test, cramers_v, statistic, p, n)
