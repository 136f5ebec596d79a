"""Model quality from ground truth: sampled predictions joined with labels the client posts later.

The join key is the client's request id (the KServe v2 ``"id"``, which Triton copies into the trace record;
see :mod:`tritonops_runtime.drift.capture`). Only *sampled* requests are traced, so only their labels can join:
a label for a request that was not sampled (or whose trace is not read yet, or has expired) is ``unknown``.

Design choices:

- **Store** (:class:`PredictionStore`): request id -> the prediction rows (the ``--output`` tensor of that
  request, ``(rows, k)``), kept for ``ttl_s`` (``--feedback-ttl-seconds``) and bounded by ``max_entries``
  (``--max-feedback``) and :data:`MAX_STORE_BYTES`: past either bound the oldest entries are evicted (outcome
  ``evicted``); past the TTL they expire (outcome ``expired``, purged lazily and by the monitor's loop). A
  request id seen again replaces the older prediction (ids are the client's; the newest is the one a label
  will refer to). A prediction is removed when a label joins it, so a second label for the same id is
  ``unknown`` and a pair is never counted twice; a label that does not fit is ``invalid`` and leaves the
  prediction for a corrected label.
- **Labels** (:func:`pairs_for`): one pair per row. Classification metrics (``accuracy``, ``f1``, ``auc``) take
  a class index (a whole number >= 0, and < k when the prediction is a k-column score matrix) for a one-row
  request, or a list of one index per row. ``mse`` takes anything with as many numbers as the prediction
  (a number for one value, a vector for one row of k outputs, a matrix for several rows).
- **Window** (:class:`QualityWindow`): the last ``size`` pairs (``--quality-window``). The metric is computed
  with :mod:`tritonops_runtime.retrain.metrics` (the same functions that gate retraining): the predicted
  class is the argmax of a score matrix (the value itself for a one-column output); ``auc`` is the macro
  one-vs-rest AUC of the scores (binary AUC of the single column for a one-column output). Quality is
  *below minimum* when the window is full (``size`` pairs) and the metric is below ``--quality-minimum`` -
  for ``mse``, where lower is better, when it is *above* it (the flag's value is then a maximum). An
  undefined metric (NaN: e.g. AUC of a window holding one class) is never below the minimum.
- The request body is parsed strictly (:func:`parse_feedback`): anything malformed is a
  :class:`FeedbackError` naming the field (the HTTP layer answers 400, nothing is joined).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from tritonops_runtime.retrain.metrics import HIGHER_IS_BETTER, accuracy, binary_auc, macro_auc_ovr, macro_f1, mse

Array = npt.NDArray[Any]
QUALITY_METRICS: Final = ("accuracy", "f1", "auc", "mse")
OUTCOMES: Final = ("joined", "unknown", "invalid", "evicted", "expired")
MAX_STORE_BYTES: Final = 64 << 20  # predictions held for feedback, whatever --max-feedback says
MAX_ID_LENGTH: Final = 1024


class FeedbackError(ValueError):
    """A malformed feedback body; ``str()`` names the field (``items[2].label: ...``)."""


class InvalidLabel(ValueError):
    """A well-formed label that does not fit the stored prediction."""


# --- parsing ---------------------------------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise FeedbackError(f"body: {name} is not allowed")


def _item(obj: Any, where: str) -> tuple[str, Array]:
    at = f"{where}." if where else ""
    if not isinstance(obj, dict):
        raise FeedbackError(f"{where or 'body'}: must be an object with id and label")
    request_id = obj.get("id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_ID_LENGTH:
        raise FeedbackError(f"{at}id: must be a non-empty string of at most {MAX_ID_LENGTH} characters, "
                            f"got {request_id!r}"[:300])
    if "label" not in obj:
        raise FeedbackError(f"{at}label: missing")
    return request_id, _label(obj["label"], f"{at}label")


def _numbers_only(value: Any) -> bool:
    if isinstance(value, list):
        return all(_numbers_only(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _label(value: Any, where: str) -> Array:
    problem = f"{where}: must be a number or a (rectangular) list of numbers"
    if not _numbers_only(value):
        raise FeedbackError(problem)
    try:
        label = np.asarray(value, dtype=np.float64)
    except (ValueError, OverflowError):
        raise FeedbackError(problem) from None
    if label.size == 0 or not np.all(np.isfinite(label)):
        raise FeedbackError(f"{where}: must hold at least one finite number")
    return label


def parse_feedback(body: bytes) -> list[tuple[str, Array]]:
    """``{"id": ..., "label": ...}`` or ``{"items": [{"id": ..., "label": ...}, ...]}`` -> (id, label) pairs."""
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except FeedbackError:
        raise
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError included
        raise FeedbackError(f"body: not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise FeedbackError("body: must be a JSON object: {\"id\", \"label\"} or {\"items\": [...]}")
    if "items" not in doc:
        return [_item(doc, "")]
    if "id" in doc or "label" in doc:
        raise FeedbackError("body: give either id and label, or items, not both")
    items = doc["items"]
    if not isinstance(items, list):
        raise FeedbackError("items: must be a list of {\"id\", \"label\"} objects")
    return [_item(item, f"items[{i}]") for i, item in enumerate(items)]


# --- pairs and metrics -----------------------------------------------------------------------------------

def pairs_for(metric: str, prediction: Array, label: Array) -> list[tuple[Array, Array]]:
    """(prediction row, label row) pairs of one request; InvalidLabel when the label does not fit."""
    rows = prediction.reshape(len(prediction), -1) if prediction.ndim else prediction.reshape(1, 1)
    if metric == "mse":
        if label.size != rows.size:
            raise InvalidLabel(f"{label.size} value(s) for a prediction of shape {tuple(prediction.shape)}")
        return list(zip(rows, label.reshape(rows.shape), strict=True))
    classes = label.reshape(-1)
    if len(classes) != len(rows):
        raise InvalidLabel(f"{len(classes)} class index(es) for {len(rows)} predicted row(s)")
    width = rows.shape[1]
    if np.any(classes < 0) or np.any(classes != np.round(classes)) or (width > 1 and np.any(classes >= width)):
        raise InvalidLabel(f"class indices must be whole numbers in 0..{width - 1 if width > 1 else 'n'}")
    return list(zip(rows, classes.astype(np.int64), strict=True))


def predicted_classes(scores: Array) -> Array:
    """The argmax of a score matrix; a one-column output is the class itself."""
    return scores.argmax(axis=1) if scores.shape[1] > 1 else scores[:, 0]


def quality_value(metric: str, predictions: Array, labels: Array) -> float:
    """``metric`` of stacked predictions (n, k) against labels (n,) or (n, k), with retrain.metrics."""
    if metric == "accuracy":
        return accuracy(predicted_classes(predictions), labels)
    if metric == "f1":
        return macro_f1(predicted_classes(predictions), labels)
    if metric == "auc":
        if predictions.shape[1] == 1:
            return binary_auc(predictions[:, 0], labels == 1)
        return macro_auc_ovr(predictions, labels)
    if metric == "mse":
        return mse(predictions, labels)
    raise ValueError(f"quality metric must be one of {', '.join(QUALITY_METRICS)}, not {metric!r}")


def below_minimum(metric: str, value: float, minimum: float) -> bool:
    """Whether ``value`` is worse than ``minimum`` (for lower-is-better metrics: above it); NaN never is."""
    if math.isnan(value):
        return False
    return value < minimum if HIGHER_IS_BETTER[metric] else value > minimum


# --- state -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QualityView:
    """The quality window as exported: metric name and value (NaN until a pair), pairs, the verdict."""

    metric: str
    value: float
    pairs: int
    window: int
    minimum: float
    below_minimum: bool

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value if math.isfinite(self.value) else None,
                "pairs": self.pairs, "window": self.window, "minimum": self.minimum,
                "higherIsBetter": HIGHER_IS_BETTER[self.metric], "belowMinimum": self.below_minimum}


class QualityWindow:
    """The last ``size`` (prediction, label) pairs and the metric over them."""

    def __init__(self, metric: str, size: int, minimum: float) -> None:
        if metric not in QUALITY_METRICS:
            raise ValueError(f"quality metric must be one of {', '.join(QUALITY_METRICS)}, not {metric!r}")
        if size < 1:
            raise ValueError(f"quality window must be >= 1, not {size}")
        self.metric, self.size, self.minimum = metric, size, minimum
        self._pairs: deque[tuple[Array, Array]] = deque(maxlen=size)
        self._value: float | None = float("nan")  # None: to be recomputed

    def add(self, pairs: Sequence[tuple[Array, Array]]) -> None:
        """Append pairs (the oldest fall out). A prediction of another shape than the window's (a new model
        with other outputs) starts the window over."""
        for prediction, label in pairs:
            if self._pairs and self._pairs[-1][0].shape != prediction.shape:
                self._pairs.clear()
            self._pairs.append((prediction, label))
        if pairs:
            self._value = None

    def value(self) -> float:
        """The metric over the window (NaN while empty), computed when asked after a change: a scrape or a
        status read pays for it once, not every feedback request."""
        if self._value is None:
            predictions = np.stack([p for p, _ in self._pairs]).astype(np.float64)
            self._value = quality_value(self.metric, predictions, np.stack([y for _, y in self._pairs]))
        return self._value

    def view(self) -> QualityView:
        value, full = self.value(), len(self._pairs) >= self.size
        return QualityView(self.metric, value, len(self._pairs), self.size, self.minimum,
                           full and below_minimum(self.metric, value, self.minimum))


class PredictionStore:
    """Request id -> prediction rows, for ``ttl_s``, at most ``max_entries`` and ``max_bytes`` (oldest out).

    Not locked: :class:`Feedback` serialises access.
    """

    def __init__(self, ttl_s: float, max_entries: int, max_bytes: int = MAX_STORE_BYTES) -> None:
        if ttl_s <= 0 or max_entries < 1 or max_bytes < 1:
            raise ValueError("feedback TTL, max entries and max bytes must be positive")
        self.ttl_s, self.max_entries, self.max_bytes = ttl_s, max_entries, max_bytes
        self._items: OrderedDict[str, tuple[float, Array]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def _drop_oldest(self) -> None:
        _, (_, prediction) = self._items.popitem(last=False)
        self._bytes -= prediction.nbytes

    def expire(self, now: float) -> int:
        """Drop the entries older than the TTL; returns how many."""
        count = 0
        while self._items and now - next(iter(self._items.values()))[0] > self.ttl_s:
            self._drop_oldest()
            count += 1
        return count

    def remember(self, request_id: str, prediction: Array, now: float) -> int:
        """Keep ``prediction`` for ``request_id``; returns how many entries were evicted to make room."""
        old = self._items.pop(request_id, None)
        if old is not None:
            self._bytes -= old[1].nbytes
        if prediction.nbytes > self.max_bytes:
            return 1  # dropped at once: it alone is over the byte budget
        self._items[request_id] = (now, prediction)
        self._bytes += prediction.nbytes
        evicted = 0
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            self._drop_oldest()
            evicted += 1
        return evicted

    def get(self, request_id: str, now: float) -> Array | None:
        entry = self._items.get(request_id)
        return None if entry is None or now - entry[0] > self.ttl_s else entry[1]

    def pop(self, request_id: str) -> None:
        entry = self._items.pop(request_id, None)
        if entry is not None:
            self._bytes -= entry[1].nbytes


class Feedback:
    """The store, the quality window and the outcome counters, behind one lock (HTTP threads and the
    monitor's loop both call in)."""

    def __init__(self, window: QualityWindow, ttl_s: float, max_entries: int, max_bytes: int = MAX_STORE_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.store = PredictionStore(ttl_s, max_entries, max_bytes)
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._clock = clock
        self._lock = threading.Lock()

    def remember(self, request_id: str, prediction: Array) -> None:
        """Keep a sampled request's prediction for its label (from the monitor's loop)."""
        with self._lock:
            now = self._clock()
            self.counts["expired"] += self.store.expire(now)
            self.counts["evicted"] += self.store.remember(request_id, prediction, now)

    def expire(self) -> None:
        with self._lock:
            self.counts["expired"] += self.store.expire(self._clock())

    def join(self, items: Sequence[tuple[str, Array]]) -> dict[str, int]:
        """Join labels with stored predictions; returns ``{"joined", "unknown", "invalid"}`` for these items."""
        answer = {"joined": 0, "unknown": 0, "invalid": 0}
        pairs: list[tuple[Array, Array]] = []
        with self._lock:
            now = self._clock()
            self.counts["expired"] += self.store.expire(now)
            for request_id, label in items:
                prediction = self.store.get(request_id, now)
                if prediction is None:
                    answer["unknown"] += 1
                    continue
                try:
                    pairs.extend(pairs_for(self.window.metric, prediction, label))
                except InvalidLabel:
                    answer["invalid"] += 1
                    continue
                self.store.pop(request_id)
                answer["joined"] += 1
            self.window.add(pairs)
            for outcome, count in answer.items():
                self.counts[outcome] += count
        return answer

    def snapshot(self) -> tuple[QualityView, dict[str, int], int]:
        """(the quality window, outcome totals, predictions waiting for a label)."""
        with self._lock:
            return self.window.view(), dict(self.counts), len(self.store)


def feedback_counts(counts: Mapping[str, int] | None) -> dict[str, int]:
    """Every outcome's total (zeros when feedback is off)."""
    return {outcome: int((counts or {}).get(outcome, 0)) for outcome in OUTCOMES}
