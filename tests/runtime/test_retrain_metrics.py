"""The retraining metrics (numpy only) against scipy and hand-computed values; the gate; output readings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F

from tritonops_runtime.retrain.config import RetrainConfig
from tritonops_runtime.retrain.evaluate import Gate, probabilities, score
from tritonops_runtime.retrain.metrics import (
    accuracy,
    average_ranks,
    binary_auc,
    classification_metrics,
    macro_auc_ovr,
    macro_f1,
    mae,
    mse,
)
from tritonops_runtime.retrain.train import log_probabilities, loss_fn


def test_average_ranks_match_scipy() -> None:
    rng = np.random.default_rng(0)
    for values in (rng.integers(0, 5, size=200).astype(float), rng.normal(size=57), np.ones(4), np.array([3.0])):
        assert np.array_equal(average_ranks(values), stats.rankdata(values))


def test_binary_auc_by_hand() -> None:
    assert binary_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75  # the classic example: 3 of 4 pairs ordered
    assert binary_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert binary_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert binary_auc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5  # ties count one half
    assert binary_auc([0.2, 0.5, 0.5, 0.7], [0, 0, 1, 1]) == (1 + 1 + 0.5 + 1) / 4
    assert math.isnan(binary_auc([0.1, 0.2], [1, 1]))


def test_binary_auc_matches_mann_whitney() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=300), 1)  # rounded: many ties
    positive = rng.random(300) < 0.3 + 0.4 * (scores > 0)
    u = stats.mannwhitneyu(scores[positive], scores[~positive]).statistic
    assert binary_auc(scores, positive) == pytest.approx(u / (positive.sum() * (~positive).sum()), abs=1e-12)


def test_macro_auc_ovr() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, size=200)
    scores = rng.dirichlet([1, 1, 1], size=200) + 0.3 * np.eye(3)[labels]
    expected = np.mean([stats.mannwhitneyu(scores[labels == k, k], scores[labels != k, k]).statistic
                        / ((labels == k).sum() * (labels != k).sum()) for k in range(3)])
    assert macro_auc_ovr(scores, labels) == pytest.approx(expected, abs=1e-12)
    # class 2 absent from the labels: skipped, not counted as 0 or 0.5
    two = labels[labels < 2]
    assert macro_auc_ovr(scores[labels < 2], two) == pytest.approx(np.mean(
        [binary_auc(scores[labels < 2][:, k], two == k) for k in (0, 1)]))
    # binary: the positive column's AUC
    p1 = scores[:, 0] / scores[:, :2].sum(1)
    binary = np.stack([1 - p1, p1], axis=1)
    assert macro_auc_ovr(binary, labels == 0) == binary_auc(p1, labels == 0)
    assert math.isnan(macro_auc_ovr(scores[:3], np.array([1, 1, 1])[:3] * 0))


def test_f1_accuracy_and_errors_by_hand() -> None:
    labels, predicted = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 2, FP 1, FN 0 -> 0.8; class 2: TP 1, FP 0, FN 1 -> 2/3
    assert macro_f1(predicted, labels) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert accuracy(predicted, labels) == pytest.approx(4 / 6)
    assert macro_f1([3, 3], [0, 0]) == 0.0  # classes 0 and 3, both F1 0
    assert macro_f1([1, 1], [1, 1]) == 1.0
    assert mse([[1.0], [3.0]], [[0.0], [1.0]]) == 2.5
    assert mae([1.0, 3.0, -1.0], [0.0, 1.0, 0.0]) == pytest.approx(4 / 3)
    metrics = classification_metrics(np.eye(3)[[0, 1, 2, 0]], [0, 1, 2, 1])
    # AUC per class: 0: 2.5 of 3 pairs (one tie); 1: 3 of 4 (two ties); 2: 3 of 3
    assert metrics["accuracy"] == 0.75 and metrics["auc"] == pytest.approx((5 / 6 + 3 / 4 + 1) / 3)


def cfg(**kw: object) -> RetrainConfig:
    return RetrainConfig("file:///m", "file:///d", "file:///o", scratch=Path("/tmp"), **kw)  # type: ignore[arg-type]


def test_gate_higher_is_better() -> None:
    gate = Gate.from_config(cfg(), {"accuracy": 0.80, "f1": 0.7, "auc": 0.9})
    assert gate.passes({"accuracy": 0.80}) and gate.passes({"accuracy": 0.9})
    assert gate.failures({"accuracy": 0.79}) == ["the candidate's accuracy 0.7900 vs the serving model's 0.8000: "
                                                 "needs an improvement of at least 0"]
    tolerant = Gate.from_config(cfg(min_improvement=-0.02, min_metric=0.785), {"accuracy": 0.80})
    assert tolerant.passes({"accuracy": 0.79})
    assert tolerant.failures({"accuracy": 0.775}) == [
        "the candidate's accuracy 0.7750 vs the serving model's 0.8000: needs at most 0.02 worse",
        "the candidate's accuracy 0.7750 is not at least 0.785 (--min-metric)"]
    strict = Gate.from_config(cfg(min_improvement=0.05), {"accuracy": 0.80})
    assert not strict.passes({"accuracy": 0.84}) and strict.passes({"accuracy": 0.85})
    assert "undefined" in Gate.from_config(cfg(metric="auc"), {"auc": 0.9}).failures({"auc": math.nan})[0]
    assert Gate.from_config(cfg(metric="auc"), {"auc": math.nan}).passes({"auc": 0.6})  # only bounds left


def test_gate_lower_is_better() -> None:
    gate = Gate.from_config(cfg(task="regression", min_metric=0.5), {"mse": 0.4, "mae": 0.5})
    assert gate.metric == "mse" and gate.passes({"mse": 0.3})
    assert len(gate.failures({"mse": 0.6})) == 2
    assert "is not at most 0.5" in gate.failures({"mse": 0.6})[1]


def test_outputs_read_as_probabilities() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert np.allclose(probabilities(logits, "logits"), torch.softmax(torch.tensor(logits), 1).numpy())
    assert np.allclose(probabilities(np.array([[0.8], [0.1]]), "probabilities"), [[0.2, 0.8], [0.9, 0.1]])
    assert np.allclose(probabilities(np.array([0.0]), "logits"), [[0.5, 0.5]])
    bad = score(np.array([[np.nan, 1.0]]), np.array([0]), cfg())
    assert all(math.isnan(v) for v in bad.values())


def test_losses() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.1, 0.0]])
    labels = torch.tensor([0, 2])
    expected = F.cross_entropy(logits, labels)
    assert torch.allclose(loss_fn(logits, labels, "classification", "logits"), expected)
    assert torch.allclose(loss_fn(torch.softmax(logits, 1), labels, "classification", "probabilities"), expected)
    one = torch.tensor([[0.3], [-1.0]])
    assert torch.allclose(log_probabilities(one, "logits").exp(), log_probabilities(torch.sigmoid(one),
                                                                                    "probabilities").exp(), atol=1e-6)
    target = torch.tensor([1.0, 2.0])
    assert float(loss_fn(torch.tensor([[0.0], [0.0]]), target, "regression", "probabilities")) == 2.5
