"""Holdout metrics, computed with numpy alone (scikit-learn is not a dependency of the runtime image).

Classification (``scores``: an (n, k) matrix of class probabilities, ``labels``: n class indices):

- ``accuracy``: the fraction of rows whose argmax is the label (ties go to the lowest class, as numpy's argmax);
- ``f1``: macro F1 over the classes present in the labels or the predictions (scikit-learn's default label
  set), each ``2 TP / (2 TP + FP + FN)``;
- ``auc``: macro one-vs-rest ROC AUC: for each class with both positive and negative rows, the Mann-Whitney
  statistic of its score column (``(R+ - n+ (n+ + 1) / 2) / (n+ n-)``, R+ the sum of the positives' ranks,
  tied scores given their average rank, so a tie counts one half), averaged without weights. Classes absent
  from the holdout (or present in every row) are skipped; when none is left, AUC is undefined (NaN). This is
  scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")`` except that it raises where we skip.

Regression: ``mse`` (mean of the squared errors over every element) and ``mae``.

Which way is better: accuracy, f1 and auc are higher-is-better, mse and mae lower-is-better
(:data:`HIGHER_IS_BETTER`).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CLASSIFICATION_METRICS: Final = ("accuracy", "f1", "auc")
REGRESSION_METRICS: Final = ("mse", "mae")
HIGHER_IS_BETTER: Final = {"accuracy": True, "f1": True, "auc": True, "mse": False, "mae": False}


def accuracy(predicted: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Fraction of equal entries."""
    p, y = np.asarray(predicted), np.asarray(labels)
    return float(np.mean(p == y)) if y.size else float("nan")


def macro_f1(predicted: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Unweighted mean of the per-class F1 over the classes seen in ``labels`` or ``predicted``."""
    p, y = np.asarray(predicted), np.asarray(labels)
    classes = np.union1d(p, y)
    if classes.size == 0:
        return float("nan")
    scores = []
    for k in classes:
        tp = np.sum((p == k) & (y == k))
        fp = np.sum((p == k) & (y != k))
        fn = np.sum((p != k) & (y == k))
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def average_ranks(values: npt.ArrayLike) -> FloatArray:
    """1-based ranks of ``values``, ties sharing their average rank (``scipy.stats.rankdata``'s default)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start index of each run of equal values, and one past the end of the last run.
    bounds = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1], True])
    starts, ends = bounds[:-1], bounds[1:]
    run_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty_like(x)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def binary_auc(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` (NaN unless both classes occur)."""
    s, pos = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(positive, dtype=bool).ravel()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(average_ranks(s)[pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def macro_auc_ovr(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Macro one-vs-rest AUC of an (n, k) score matrix; classes without positives or negatives are skipped."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if s.ndim != 2:
        raise ValueError(f"scores must be an (n, classes) matrix, got shape {s.shape}")
    if s.shape[1] == 2:  # binary: both columns give the same AUC; use the positive class's column
        return binary_auc(s[:, 1], y == 1)
    aucs = [binary_auc(s[:, k], y == k) for k in range(s.shape[1])]
    defined = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(defined)) if defined else float("nan")


def mse(outputs: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    """Mean squared error over every element."""
    diff = np.asarray(outputs, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return float(np.mean(diff * diff)) if diff.size else float("nan")


def mae(outputs: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    """Mean absolute error over every element."""
    diff = np.asarray(outputs, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return float(np.mean(np.abs(diff))) if diff.size else float("nan")


def classification_metrics(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> dict[str, float]:
    """accuracy, macro F1 and macro one-vs-rest AUC of an (n, k) probability matrix against class indices."""
    p, y = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    predicted = p.argmax(axis=1)
    return {"accuracy": accuracy(predicted, y), "f1": macro_f1(predicted, y), "auc": macro_auc_ovr(p, y)}


def regression_metrics(outputs: npt.ArrayLike, targets: npt.ArrayLike) -> dict[str, float]:
    """mse and mae (``targets`` already shaped like ``outputs``)."""
    return {"mse": mse(outputs, targets), "mae": mae(outputs, targets)}
