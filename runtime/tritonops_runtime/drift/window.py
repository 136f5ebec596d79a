"""One window's drift decision, and the count of consecutive drifted windows before drift is declared.

Design choices:

- ``evaluate_window`` scores every input feature, and every output feature when outputs are given, against the
  profile (``stats.score_feature``), then ``decide`` makes the window's aggregate decision. It reads only the
  window's arrays and the profile: memory is bounded by the window (one float64 copy of it, transposed so
  each feature is contiguous).
- **What ``threshold`` means** depends on the method (``spec.drift.threshold``):

  - ``psi`` and ``js``: a score threshold. A feature drifts when its score is > threshold (PSI: 0.1 is the
    usual "moderate", 0.2 (the default) "significant" shift; JS distance is in [0, 1], so its threshold must
    be < 1, and 0.1 is a reasonable start). No p-values, no correction.
  - ``ks`` and ``chi2``: the significance level alpha, in (0, 1), applied *after* the multiple-testing
    correction across all the window's features (inputs and outputs together): a feature drifts when its
    adjusted p-value is <= alpha. With ``holm`` (the default) the chance that a window from the reference
    distribution flags anything is at most alpha (family-wise); with ``bh`` alpha bounds the expected
    fraction of false discoveries among the flagged features, which has more power when many features
    shift at once; ``none`` tests each feature at alpha (not recommended beyond a few features).

- The window's aggregate: ``score`` is the largest feature score and ``mean_score`` the mean (every score is
  an effect size: PSI, JS distance, KS D or Cramer's V; the last three lie in [0, 1]); ``p_value`` is the
  smallest adjusted p-value (None for psi/js); ``drifted_features`` lists the features that drifted, and the
  window drifted when any did.
- ``advance`` is the state machine over successive windows: a drifted window adds one to ``consecutive``, a
  clean one resets it to 0. Drift is *declared* when ``consecutive`` reaches ``consecutiveWindows`` and stays
  declared until the next clean window (which clears it). ``event`` marks the edges (``declared`` exactly
  once per episode, ``cleared``), so a retraining trigger fires once, not on every drifted window. The state
  is a small frozen dataclass with a versioned plain-dict form (``to_dict``/``from_dict``) so the monitor can
  persist it and resume after a restart; lowering ``consecutiveWindows`` across a restart declares at the
  next drifted window if the count already reaches it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from tritonops_runtime.drift.profile import output_matrix
from tritonops_runtime.drift.stats import (
    CORRECTIONS,
    EPSILON,
    METHODS,
    P_VALUE_METHODS,
    FeatureScore,
    adjust,
    score_feature,
)

STATE_VERSION: Final = 1
EVENTS: Final = ("none", "declared", "cleared")


@dataclass(frozen=True)
class WindowResult:
    """The decision for one window (see the module docstring for the aggregate's meaning)."""

    method: str
    threshold: float
    correction: str
    rows: int
    features: tuple[FeatureScore, ...]
    score: float
    mean_score: float
    p_value: float | None
    drifted_features: tuple[str, ...]
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (camelCase keys)."""
        return {"method": self.method, "threshold": self.threshold, "correction": self.correction,
                "rows": self.rows, "score": self.score, "meanScore": self.mean_score, "pValue": self.p_value,
                "driftedFeatures": list(self.drifted_features), "drifted": self.drifted,
                "features": [feature.to_dict() for feature in self.features]}


def check_settings(method: str, threshold: float, correction: str) -> None:
    """ValueError unless the method, its threshold and the correction make sense together."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, not {correction!r}")
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a positive number, not {threshold!r}")
    if method != "psi" and threshold >= 1:
        what = "a JS distance threshold" if method == "js" else "the significance level alpha"
        raise ValueError(f"threshold for method {method} is {what} and must be < 1, not {threshold!r}")


def decide(scores: Sequence[FeatureScore], *, method: str, threshold: float, correction: str = "holm",
           rows: int) -> WindowResult:
    """The aggregate decision over one window's feature scores (all computed with ``method``)."""
    check_settings(method, threshold, correction)
    if not scores:
        raise ValueError("a window needs at least one feature score")
    if method in P_VALUE_METHODS:
        raw = np.array([1.0 if s.p_value is None else s.p_value for s in scores], dtype=np.float64)
        adjusted = adjust(raw, correction).tolist()
        scores = [dataclasses.replace(s, p_adjusted=p, drifted=p <= threshold)
                  for s, p in zip(scores, adjusted, strict=True)]
        p_value: float | None = min(adjusted)
    else:
        scores = [dataclasses.replace(s, drifted=s.score > threshold) for s in scores]
        p_value = None
    values = [s.score for s in scores]
    drifted = tuple(s.name for s in scores if s.drifted)
    return WindowResult(method=method, threshold=threshold, correction=correction, rows=rows,
                        features=tuple(scores), score=max(values), mean_score=math.fsum(values) / len(values),
                        p_value=p_value, drifted_features=drifted, drifted=bool(drifted))


def _columns(matrix: npt.NDArray[Any]) -> Sequence[npt.NDArray[Any]]:
    """The matrix's columns, each contiguous (numbers as one float64 copy, transposed)."""
    if matrix.dtype.kind in "biuf":
        return list(np.ascontiguousarray(matrix.T, dtype=np.float64))
    return [matrix[:, j] for j in range(matrix.shape[1])]


def evaluate_window(profile: Mapping[str, Any], inputs: npt.ArrayLike, outputs: npt.ArrayLike | None = None, *,
                    method: str = "psi", threshold: float = 0.2, correction: str = "holm",
                    epsilon: float = EPSILON) -> WindowResult:
    """Compare a live window (``inputs`` rows, and optionally the ``outputs`` the model gave for them) with
    a validated profile (``profile.load_profile``). ValueError on shapes that do not match the profile."""
    check_settings(method, threshold, correction)
    features = profile["inputs"]
    x = np.asarray(inputs)
    x = x.reshape(-1, 1) if x.ndim == 1 and len(features) == 1 else x
    if x.ndim != 2 or x.shape[1] != len(features) or x.shape[0] == 0:
        raise ValueError(f"inputs of shape {x.shape} do not match the profile's {len(features)} input feature(s)")
    scores = [score_feature(feature, column, method, role="input", epsilon=epsilon)
              for feature, column in zip(features, _columns(x), strict=True)]
    if outputs is not None:
        y = output_matrix(profile, outputs)
        scores += [score_feature(feature, column, method, role="output", epsilon=epsilon)
                   for feature, column in zip(profile["outputs"]["features"], _columns(y), strict=True)]
    return decide(scores, method=method, threshold=threshold, correction=correction, rows=int(x.shape[0]))


# --- consecutive windows ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrackerState:
    """Where the drift monitor stands across windows; ``event`` is what the last window changed."""

    consecutive: int = 0
    declared: bool = False
    windows: int = 0
    drifted_windows: int = 0
    declarations: int = 0
    event: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """The persisted form: a versioned plain dict."""
        return {"version": STATE_VERSION, "consecutive": self.consecutive, "declared": self.declared,
                "windows": self.windows, "driftedWindows": self.drifted_windows,
                "declarations": self.declarations, "event": self.event}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrackerState:
        """Restore ``to_dict``'s form (None: a fresh state); ValueError naming the bad field."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            raise ValueError(f"drift tracker state: version must be {STATE_VERSION}")
        counts = {}
        for key in ("consecutive", "windows", "driftedWindows", "declarations"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"drift tracker state: {key} must be an integer >= 0, got {value!r}")
            counts[key] = value
        if not isinstance(data.get("declared"), bool):
            raise ValueError(f"drift tracker state: declared must be true or false, got {data.get('declared')!r}")
        if data.get("event") not in EVENTS:
            raise ValueError(f"drift tracker state: event must be one of {', '.join(EVENTS)}")
        if counts["consecutive"] > counts["driftedWindows"] or counts["driftedWindows"] > counts["windows"]:
            raise ValueError("drift tracker state: consecutive <= driftedWindows <= windows does not hold")
        return cls(consecutive=counts["consecutive"], declared=data["declared"], windows=counts["windows"],
                   drifted_windows=counts["driftedWindows"], declarations=counts["declarations"],
                   event=data["event"])


def advance(state: TrackerState, window_drifted: bool, consecutive_windows: int) -> TrackerState:
    """The state after one more window (pure). Drift is declared once ``consecutive_windows`` drifted windows
    follow each other, and cleared by the next clean window."""
    if consecutive_windows < 1:
        raise ValueError(f"consecutive_windows must be >= 1, not {consecutive_windows}")
    windows = state.windows + 1
    if not window_drifted:
        return dataclasses.replace(state, consecutive=0, declared=False, windows=windows,
                                   event="cleared" if state.declared else "none")
    consecutive = state.consecutive + 1
    declare = not state.declared and consecutive >= consecutive_windows
    return dataclasses.replace(state, consecutive=consecutive, declared=state.declared or declare, windows=windows,
                               drifted_windows=state.drifted_windows + 1,
                               declarations=state.declarations + int(declare),
                               event="declared" if declare else "none")
