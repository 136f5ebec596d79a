"""The drift monitor's Prometheus metrics: names, meaning and exposition.

The names are a contract: the operator's canary analysis (``PredictionDriftPSI`` reads
``tritonops_prediction_drift_psi``), its drift/retraining trigger and the chart's dashboards query them.
:data:`METRICS` is the table of every family; each carries the label ``model`` (the served model name, so
series aggregate across the pods of a deployment; Prometheus adds ``pod``/``instance`` itself).

Design choices:

- One custom collector (:class:`MonitorCollector`) registered in the monitor's own ``CollectorRegistry``
  (never the process-global one): at each scrape it asks the monitor for one consistent
  :class:`MetricsView` (taken under the monitor's lock) and builds every family from it. Nothing is updated
  on the loop's hot path, gauges and counters can never disagree with ``/v1/status``, and counters restored
  from the state file (windows, declarations) stay monotonic across container restarts.
- Families that describe the *last window* (scores, p-value, drifted, rows, timestamp, prediction PSI) are
  absent until the first window: "no data" rather than a misleading 0. The p-value is exported only for
  the p-value methods (ks, chi2); prediction PSI only when the window had outputs and the profile has some.
- Quality families exist only when ``--quality-metric`` is set; ``tritonops_quality`` is absent while no
  pair has joined (or the metric is undefined, e.g. AUC of one class).
- Capture counters are the collector's (:class:`~tritonops_runtime.drift.capture.CaptureCounters`), one family
  ``tritonops_capture_<field>_total`` per field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from tritonops_runtime.drift.capture import CaptureCounters
from tritonops_runtime.drift.quality import OUTCOMES, QualityView, feedback_counts
from tritonops_runtime.drift.stats import P_VALUE_METHODS
from tritonops_runtime.drift.window import TrackerState, WindowResult


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: its type, meaning and labels besides ``model``."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...] = ()


DRIFT_SCORE: Final = "tritonops_drift_score"
WINDOW_SCORE: Final = "tritonops_drift_window_score"
P_VALUE: Final = "tritonops_drift_p_value"
WINDOW_DRIFTED: Final = "tritonops_drift_window_drifted"
DETECTED: Final = "tritonops_drift_detected"
CONSECUTIVE: Final = "tritonops_drift_consecutive_windows"
WINDOWS: Final = "tritonops_drift_windows_total"
DECLARATIONS: Final = "tritonops_drift_declarations_total"
WINDOW_ROWS: Final = "tritonops_drift_window_rows"
WINDOW_TIMESTAMP: Final = "tritonops_drift_last_window_timestamp_seconds"
ROWS_PENDING: Final = "tritonops_drift_rows_pending"
WINDOW_ERRORS: Final = "tritonops_drift_window_errors_total"
PREDICTION_PSI: Final = "tritonops_prediction_drift_psi"
QUALITY: Final = "tritonops_quality"
QUALITY_PAIRS: Final = "tritonops_quality_pairs"
QUALITY_BELOW: Final = "tritonops_quality_below_minimum"
FEEDBACK: Final = "tritonops_feedback_total"
FEEDBACK_WAITING: Final = "tritonops_feedback_predictions"
CAPTURE_HELP: Final = {
    "files_read": "Trace files read (and deleted).",
    "files_not_json": "Trace files that were not valid JSON, read by the byte-level scanner.",
    "bytes_read": "Bytes of trace files read.",
    "records": "Traced requests read.",
    "rows": "Tensor rows buffered (inputs and outputs of every model).",
    "files_dropped_overload": "Trace files deleted unread because too many were waiting.",
    "files_dropped_oversize": "Trace files deleted unread because they were too large.",
    "files_corrupt": "Trace files deleted because they stayed incomplete or could not be parsed.",
    "entries_bad": "Unreadable entries inside trace files.",
    "tensors_skipped": "Tensors without usable data (FP16/BF16/BYTES, malformed, too large).",
    "records_unattributed": "Traced requests without a model name (trace level lacked TIMESTAMPS).",
    "ring_resets": "Capture buffers restarted because a tensor's row shape or dtype changed.",
    "io_errors": "I/O errors while listing, reading or deleting trace files.",
}


def capture_metric(field: str) -> str:
    """The family name of one capture counter."""
    return f"tritonops_capture_{field}_total"


METRICS: Final[dict[str, MetricSpec]] = {spec.name: spec for spec in (
    MetricSpec(DRIFT_SCORE, "gauge", "Drift score of each feature in the last window (PSI, JS distance, KS D "
               "or Cramer's V, per --method); role is input or output.", ("feature", "role")),
    MetricSpec(WINDOW_SCORE, "gauge", "The last window's aggregate drift score: the largest feature score."),
    MetricSpec(P_VALUE, "gauge", "The smallest multiple-testing-adjusted p-value of the last window (ks, chi2)."),
    MetricSpec(WINDOW_DRIFTED, "gauge", "1 when the last window drifted (any feature over the threshold)."),
    MetricSpec(DETECTED, "gauge", "1 while drift is declared (--consecutive-windows drifted windows in a row)."),
    MetricSpec(CONSECUTIVE, "gauge", "Drifted windows in a row, up to the last one."),
    MetricSpec(WINDOWS, "counter", "Windows evaluated (kept across container restarts by the state file)."),
    MetricSpec(DECLARATIONS, "counter", "Times drift was declared (once per episode)."),
    MetricSpec(WINDOW_ROWS, "gauge", "Rows of the input tensor in the last window."),
    MetricSpec(WINDOW_TIMESTAMP, "gauge", "Unix time at which the last window was evaluated."),
    MetricSpec(ROWS_PENDING, "gauge", "Input rows captured since the last window (a window needs --window-size)."),
    MetricSpec(WINDOW_ERRORS, "counter", "Windows that could not be evaluated (tensor shape does not match the "
               "reference profile)."),
    MetricSpec(PREDICTION_PSI, "gauge", "PSI of the last window's predictions (the --output tensor) against the "
               "reference profile's outputs, whatever --method is; the largest over output features."),
    MetricSpec(QUALITY, "gauge", "The quality metric over the last --quality-window labelled predictions.",
               ("metric",)),
    MetricSpec(QUALITY_PAIRS, "gauge", "Labelled predictions (rows) in the quality window."),
    MetricSpec(QUALITY_BELOW, "gauge", "1 when the quality window is full and the metric is worse than "
               "--quality-minimum (below it; above it for mse)."),
    MetricSpec(FEEDBACK, "counter", "Feedback labels and stored predictions by outcome: joined, unknown, invalid "
               "(labels), evicted, expired (predictions dropped for room or after the TTL).", ("outcome",)),
    MetricSpec(FEEDBACK_WAITING, "gauge", "Sampled predictions waiting for a label."),
    *(MetricSpec(capture_metric(f.name), "counter", CAPTURE_HELP.get(f.name, f"Capture counter {f.name}."))
      for f in dataclasses.fields(CaptureCounters)),
)}


@dataclass(frozen=True)
class MetricsView:
    """Everything exported, read at once from the monitor."""

    model: str
    state: TrackerState
    result: WindowResult | None
    window_timestamp: float | None
    prediction_psi: float | None
    rows_pending: int
    window_errors: int
    capture: Mapping[str, int]
    quality: QualityView | None = None
    feedback: Mapping[str, int] | None = None
    feedback_waiting: int = 0
    last_error: str | None = None


def _family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
    spec = METRICS[name]
    labels = ["model", *spec.labels]
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


class _Families:
    """Families being filled for one scrape, in table order."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.built: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def add(self, name: str, value: float, *labels: str) -> None:
        if name not in self.built:
            self.built[name] = _family(name)
        self.built[name].add_metric([self.model, *labels], value)

    def families(self) -> list[Metric]:
        return [self.built[name] for name in METRICS if name in self.built]


def _window(out: _Families, view: MetricsView) -> None:
    result = view.result
    if result is None:
        return
    for feature in result.features:
        out.add(DRIFT_SCORE, feature.score, feature.name, feature.role)
    out.add(WINDOW_SCORE, result.score)
    if result.method in P_VALUE_METHODS and result.p_value is not None:
        out.add(P_VALUE, result.p_value)
    out.add(WINDOW_DRIFTED, float(result.drifted))
    out.add(WINDOW_ROWS, result.rows)
    if view.window_timestamp is not None:
        out.add(WINDOW_TIMESTAMP, view.window_timestamp)
    if view.prediction_psi is not None:
        out.add(PREDICTION_PSI, view.prediction_psi)


def _quality(out: _Families, view: MetricsView) -> None:
    if view.quality is None:
        return
    if math.isfinite(view.quality.value):
        out.add(QUALITY, view.quality.value, view.quality.metric)
    out.add(QUALITY_PAIRS, view.quality.pairs)
    out.add(QUALITY_BELOW, float(view.quality.below_minimum))
    for outcome in OUTCOMES:
        out.add(FEEDBACK, (view.feedback or {}).get(outcome, 0), outcome)
    out.add(FEEDBACK_WAITING, view.feedback_waiting)


def families(view: MetricsView) -> list[Metric]:
    """Every family of one view, in :data:`METRICS` order."""
    out = _Families(view.model)
    _window(out, view)
    out.add(DETECTED, float(view.state.declared))
    out.add(CONSECUTIVE, view.state.consecutive)
    out.add(WINDOWS, view.state.windows)
    out.add(DECLARATIONS, view.state.declarations)
    out.add(ROWS_PENDING, view.rows_pending)
    out.add(WINDOW_ERRORS, view.window_errors)
    _quality(out, view)
    for field, value in view.capture.items():
        if capture_metric(field) in METRICS:
            out.add(capture_metric(field), value)
    return out.families()


class MonitorCollector(Collector):
    """Builds every family from ``source()`` at scrape time."""

    def __init__(self, source: Callable[[], MetricsView]) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        for name in METRICS:
            yield _family(name)

    def collect(self) -> Iterator[Metric]:
        yield from families(self._source())


def registry_for(source: Callable[[], MetricsView]) -> CollectorRegistry:
    """A new registry holding only the monitor's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(source))
    return registry


def status_document(view: MetricsView, settings: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/v1/status`` JSON: the same view as the metrics, with the window's per-feature detail."""
    return {"model": view.model, "settings": dict(settings), "reference": dict(reference),
            "lastWindow": view.result.to_dict() if view.result else None,
            "lastWindowTimestamp": view.window_timestamp, "predictionDriftPSI": view.prediction_psi,
            "tracker": view.state.to_dict(), "rowsPending": view.rows_pending, "windowErrors": view.window_errors,
            "lastError": view.last_error, "quality": view.quality.to_dict() if view.quality else None,
            "feedback": {**feedback_counts(view.feedback), "waiting": view.feedback_waiting},
            "capture": dict(view.capture)}
