"""``tritonops-drift-monitor``: the sidecar beside tritonserver that turns sampled requests into drift and
quality metrics (console script ``tritonops_runtime.drift.monitor:main``).

At start it fetches the reference profile (``--reference``, any of the fetcher's URI schemes and credentials,
:func:`tritonops_runtime.sources.resolve`; ``--reference-digest`` checked) and exits 1 with one redacted line
naming the flag if that fails (the container restarts and Kubernetes shows the line as its
``terminated.message``). Then one loop thread polls Triton's trace files (:class:`TraceCollector`) and
evaluates windows, and a ``ThreadingHTTPServer`` (:mod:`.server`) serves ``/metrics`` (:mod:`.exporter`),
``/v1/status``, ``/healthz`` and ``/v1/feedback`` (:mod:`.quality`). SIGTERM/SIGINT stop both within a second
(exit 0); a loop thread that dies exits 1.

Design choices:

- **Tumbling windows.** The loop keeps its own buffer of the rows captured since the last window
  (:class:`WindowBuffer`) instead of reading the collector's rings: rows stay grouped by request, so inputs
  and outputs of the same requests line up. Every ``--interval-seconds``, when at least ``--window-size``
  new rows of ``--input`` arrived, the newest ``window-size`` of them are evaluated (older ones are
  dropped: windows never overlap and never wait for a backlog) and the buffer empties; with fewer the rows
  wait (``rowsPending``). The output part holds the ``--output`` rows of the same requests; a request
  without outputs (an error answer), or whose output row count differs from its input's, drops out of it.
  Memory: at most ``window-size`` rows (plus one request's) are buffered.
- **Prediction PSI** is computed on every window with outputs against the profile's outputs whatever
  ``--method`` is (the canary analysis's ``PredictionDriftPSI``); with several output features, the largest.
- **State.** The tracker (:class:`TrackerState`) is written after each window to ``--state-file``
  (a temporary file, fsync, rename: never half-written) with the model name and the profile's digest, and
  read back at start. A corrupt file is logged and ignored; one written for another model or reference
  profile is ignored too (a new model version must not inherit the old one's drift count).
- A window whose tensor does not fit the profile (wrong feature count) is logged, counted
  (``tritonops_drift_window_errors_total``) and dropped; the monitor carries on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from prometheus_client.exposition import generate_latest

from tritonops_runtime import contract as c
from tritonops_runtime.drift.buffers import (
    STATE_FORMAT,
    WindowBuffer,
    as_rows,
    prediction_psi,
    restore_state,
    save_state,
)
from tritonops_runtime.drift.capture import CaptureLimits, TraceCollector
from tritonops_runtime.drift.exporter import MetricsView, registry_for, status_document
from tritonops_runtime.drift.profile import load_profile
from tritonops_runtime.drift.quality import (
    QUALITY_METRICS,
    Feedback,
    FeedbackError,
    QualityWindow,
    parse_feedback,
)
from tritonops_runtime.drift.server import MonitorHTTPServer, parse_listen, serve
from tritonops_runtime.drift.stats import CORRECTIONS, METHODS
from tritonops_runtime.drift.tracefile import TraceRecord
from tritonops_runtime.drift.window import WindowResult, advance, check_settings, evaluate_window
from tritonops_runtime.errors import FetchError
from tritonops_runtime.redaction import known_secrets, redact, redact_text
from tritonops_runtime.sources import resolve

PROG: Final = "tritonops-drift-monitor"
MAX_PROFILE_BYTES: Final = 64 << 20

STALL_S: Final = 60.0  # /healthz fails when the loop has not turned for this long
log = logging.getLogger("tritonops.drift")


class UsageError(ValueError):
    """Bad flags: one line, exit 2."""


@dataclass(frozen=True)
class MonitorConfig:
    """The sidecar's settings (its flags)."""

    reference: str
    model: str
    input: str
    window_size: int
    interval_seconds: float
    method: str
    threshold: float
    consecutive_windows: int
    output: str | None = None
    reference_digest: str | None = None
    trace_prefix: Path = Path(c.CAPTURE_DIR) / c.TRACE_FILE
    correction: str = "holm"
    listen: str = f"0.0.0.0:{c.DRIFT_PORT}"
    state_file: Path | None = Path(c.DRIFT_STATE_FILE)
    quality_metric: str | None = None
    quality_minimum: float | None = None
    quality_window: int = 1000
    feedback_ttl_seconds: float = 3600.0
    max_feedback: int = 100_000

    @property
    def poll_seconds(self) -> float:
        return min(1.0, self.interval_seconds)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def _parser() -> argparse.ArgumentParser:
    """The flags; their defaults are :class:`MonitorConfig`'s (``SUPPRESS``: absent flags keep them)."""
    p = _Parser(prog=PROG, description="Drift and quality monitor for one Triton model (a sidecar).",
                argument_default=argparse.SUPPRESS)
    add = p.add_argument
    add("--trace-prefix", type=Path, help=f"Triton's trace file (default {c.CAPTURE_DIR}/{c.TRACE_FILE})")
    add("--reference", required=True, help="reference profile URI (file, pvc, http(s), s3, gs)")
    add("--reference-digest", help="expected sha256:<hex> of the profile")
    add("--model", required=True, help="the served model name (traces of other models are ignored)")
    add("--input", required=True, help="input tensor compared with the profile's inputs")
    add("--output", help="output tensor (prediction drift and quality)")
    add("--window-size", type=int, required=True, help="rows per window")
    add("--interval-seconds", type=float, required=True, help="how often a window may be evaluated")
    add("--method", choices=METHODS, required=True)
    add("--threshold", type=float, required=True, help="score threshold (psi, js) or alpha (ks, chi2)")
    add("--consecutive-windows", type=int, required=True, help="drifted windows in a row to declare drift")
    add("--correction", choices=CORRECTIONS, help="multiple-testing correction (default holm)")
    add("--listen", help=f"HOST:PORT of the HTTP endpoint (default 0.0.0.0:{c.DRIFT_PORT})")
    add("--state-file", type=_optional_path, help=f"tracker state file (default {c.DRIFT_STATE_FILE}; '': none)")
    add("--quality-metric", choices=QUALITY_METRICS)
    add("--quality-minimum", type=float, help="least acceptable quality (for mse: the most)")
    add("--quality-window", type=int, help="labelled predictions the quality is computed over (default 1000)")
    add("--feedback-ttl-seconds", type=float, help="how long predictions wait for a label (default 3600)")
    add("--max-feedback", type=int, help="most predictions waiting for a label (default 100000)")
    return p


def parse_args(argv: Sequence[str]) -> MonitorConfig:
    """The settings of the flags; UsageError naming the flag."""
    values = {key: value for key, value in vars(_parser().parse_args(argv)).items() if value != ""}
    cfg = MonitorConfig(**values)
    positive = {"--window-size": cfg.window_size, "--interval-seconds": cfg.interval_seconds,
                "--consecutive-windows": cfg.consecutive_windows, "--quality-window": cfg.quality_window,
                "--feedback-ttl-seconds": cfg.feedback_ttl_seconds, "--max-feedback": cfg.max_feedback}
    for flag, value in positive.items():
        if not value > 0:
            raise UsageError(f"{flag} must be > 0, got {value}")
    try:
        check_settings(cfg.method, cfg.threshold, cfg.correction)
        parse_listen(cfg.listen)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if cfg.quality_metric is not None and (cfg.quality_minimum is None or cfg.output is None):
        raise UsageError("--quality-metric needs --quality-minimum and --output")
    if cfg.quality_metric is None and cfg.quality_minimum is not None:
        raise UsageError("--quality-minimum needs --quality-metric")
    return cfg


# --- the reference profile -------------------------------------------------------------------------------

def load_reference(uri: str, digest: str | None, env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """Fetch and validate the profile; returns it and the ``sha256:`` digest of its bytes.
    FetchError, OSError or ValueError when it cannot be had."""
    scratch = Path(env.get("TMPDIR") or c.SCRATCH_DIR)
    pvc_root = Path(env.get(c.ENV_PVC_ROOT) or c.PVC_ROOT)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="tritonops-drift-") as tmp:
        src = resolve(uri, Path(tmp), pvc_root, MAX_PROFILE_BYTES, env).path
        if src.is_dir():
            raise FetchError(f"{src} is a directory, not a profile file")
        with src.open("rb") as file:
            data = file.read(MAX_PROFILE_BYTES + 1)
    if len(data) > MAX_PROFILE_BYTES:
        raise FetchError(f"the profile is over {MAX_PROFILE_BYTES} bytes")
    return load_profile(data, digest=digest), "sha256:" + hashlib.sha256(data).hexdigest()



# --- the monitor -----------------------------------------------------------------------------------------

class Monitor:
    """Windows, tracker, feedback and what the HTTP endpoint serves (:class:`~.server.App`).

    :meth:`step` (one poll, and a window when due) runs on the loop thread only; everything the HTTP threads
    read is copied under ``_lock``.
    """

    def __init__(self, cfg: MonitorConfig, profile: Mapping[str, Any], reference_digest: str,
                 collector: TraceCollector | None = None) -> None:
        self.cfg, self.profile, self.reference_digest = cfg, profile, reference_digest
        self.collector = collector or TraceCollector(cfg.trace_prefix, CaptureLimits(max_rows=1))  # rings unused
        self.buffer = WindowBuffer(cfg.window_size)
        self.quality: Feedback | None = None
        if cfg.quality_metric is not None and cfg.quality_minimum is not None:
            window = QualityWindow(cfg.quality_metric, cfg.quality_window, cfg.quality_minimum)
            self.quality = Feedback(window, cfg.feedback_ttl_seconds, cfg.max_feedback)
        self.state = restore_state(cfg.state_file, cfg.model, reference_digest)
        self.result: WindowResult | None = None
        self.window_timestamp: float | None = None
        self.prediction_psi: float | None = None
        self.window_errors = 0
        self.last_error: str | None = None
        self.heartbeat = time.monotonic()
        self._lock = threading.Lock()
        self.registry = registry_for(self.view)
        self._due = time.monotonic() + cfg.interval_seconds

    def ingest(self, records: Sequence[TraceRecord]) -> None:
        """Buffer the served model's rows, and keep its predictions for feedback."""
        for record in records:
            x = record.inputs.get(self.cfg.input) if record.model == self.cfg.model else None
            if x is None:
                continue
            y = record.outputs.get(self.cfg.output) if self.cfg.output else None
            with self._lock:
                self.buffer.add(x, y)
            if self.quality is not None and y is not None and record.request_id:
                self.quality.remember(record.request_id, as_rows(y))

    def evaluate(self) -> WindowResult | None:
        """Evaluate a window when enough rows are pending; advance and persist the tracker."""
        with self._lock:
            window = self.buffer.take()
        if window is None:
            return None
        inputs, outputs = window
        cfg = self.cfg
        try:
            result = evaluate_window(self.profile, inputs, outputs, method=cfg.method, threshold=cfg.threshold,
                                     correction=cfg.correction)
            psi = prediction_psi(self.profile, outputs)
        except ValueError as err:
            log.error("window of %d rows not evaluated: %s", len(inputs), err)
            with self._lock:
                self.window_errors, self.last_error = self.window_errors + 1, str(err)
            return None
        state = advance(self.state, result.drifted, cfg.consecutive_windows)
        with self._lock:
            self.state, self.result, self.prediction_psi = state, result, psi
            self.window_timestamp = time.time()
        self._persist()
        level = logging.WARNING if state.event != "none" else logging.INFO
        log.log(level, "window %d: %d rows, score %.4g, drifted %s (%s), consecutive %d, declared %s%s",
                state.windows, result.rows, result.score, result.drifted, ",".join(result.drifted_features) or "-",
                state.consecutive, state.declared, f", drift {state.event}" if state.event != "none" else "")
        return result

    def _persist(self) -> None:
        if self.cfg.state_file is None:
            return
        doc = {"format": STATE_FORMAT, "model": self.cfg.model, "reference": self.reference_digest,
               "tracker": self.state.to_dict(), "savedAt": self.window_timestamp}
        try:
            save_state(self.cfg.state_file, doc)
        except OSError as err:
            log.error("cannot write the state file %s: %s", self.cfg.state_file, err)

    def step(self) -> None:
        """One turn of the loop: read new trace files; evaluate a window when one is due."""
        try:
            records = self.collector.poll()
        except OSError:
            self.collector.counters.io_errors += 1
            records = []
        self.ingest(records)
        now = time.monotonic()
        if now >= self._due:
            self._due = max(self._due + self.cfg.interval_seconds, now)
            self.evaluate()
            if self.quality is not None:
                self.quality.expire()
        self.heartbeat = time.monotonic()

    def run(self, stop: threading.Event) -> None:
        """:meth:`step` every ``poll_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            self.step()
            stop.wait(self.cfg.poll_seconds)

    # --- what the HTTP endpoint serves ---

    def view(self) -> MetricsView:
        quality, counts, waiting = self.quality.snapshot() if self.quality else (None, None, 0)
        with self._lock:
            return MetricsView(self.cfg.model, self.state, self.result, self.window_timestamp, self.prediction_psi,
                               self.buffer.pending, self.window_errors, self.collector.counters.as_dict(), quality,
                               counts, waiting, self.last_error)

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    def status(self) -> dict[str, Any]:
        cfg = self.cfg
        settings = {"input": cfg.input, "output": cfg.output, "windowSize": cfg.window_size,
                    "intervalSeconds": cfg.interval_seconds, "method": cfg.method, "threshold": cfg.threshold,
                    "correction": cfg.correction, "consecutiveWindows": cfg.consecutive_windows}
        reference = {"uri": redact(cfg.reference), "digest": self.reference_digest}
        return status_document(self.view(), settings, reference)

    def health(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self.heartbeat
        if stalled > STALL_S:
            return False, f"the monitor loop has not run for {stalled:.0f}s"
        return True, "ok"

    def feedback(self, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.quality is None:
            return 404, {"error": "feedback is off: the monitor runs without --quality-metric"}
        try:
            items = parse_feedback(body)
        except FeedbackError as err:
            return 400, {"error": str(err)}
        return 200, self.quality.join(items)


# --- the program -----------------------------------------------------------------------------------------

def _fail(message: str, secrets: Sequence[str]) -> int:
    line = f"{PROG}: {' '.join(redact_text(message, secrets).split())}"[:1024]
    print(line, file=sys.stderr)
    with contextlib.suppress(OSError):
        Path(os.environ.get(c.ENV_TERMINATION_LOG) or c.TERMINATION_LOG).write_text(line)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: 0 after SIGTERM/SIGINT, 1 on failure, 2 on bad flags."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s " + PROG + ": %(message)s")
    secrets = known_secrets(os.environ, args)
    try:
        cfg = parse_args(args)
    except UsageError as err:
        print(redact_text(f"{PROG}: bad arguments: {err}", secrets), file=sys.stderr)
        return 2
    try:
        profile, digest = load_reference(cfg.reference, cfg.reference_digest, os.environ)
    except (FetchError, OSError, ValueError) as err:
        return _fail(f"cannot load the reference profile (--reference {redact(cfg.reference)}): {err}", secrets)
    if cfg.output and not profile.get("outputs"):
        return _fail(f"--output {cfg.output}: the reference profile (--reference {redact(cfg.reference)}) has "
                     "no outputs", secrets)
    monitor = Monitor(cfg, profile, digest)
    try:
        server = MonitorHTTPServer(parse_listen(cfg.listen), monitor)
    except OSError as err:
        return _fail(f"cannot listen on {cfg.listen} (--listen): {err}", secrets)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("monitoring model %s (input %s, output %s) against %s; listening on %s", cfg.model, cfg.input,
             cfg.output or "-", digest, cfg.listen)
    return serve(monitor.run, server, stop)


if __name__ == "__main__":
    sys.exit(main())
