"""The monitor's windows and its memory across restarts (used by :mod:`tritonops_runtime.drift.monitor`).

:class:`WindowBuffer` keeps the newest captured rows, grouped by request, with the outputs of the same
requests; :func:`prediction_psi` is the PSI of a window's predictions whatever the drift method (the canary
metric ``PredictionDriftPSI``); :func:`save_state`/:func:`restore_state` keep the consecutive-window tracker
in the capture emptyDir, so a restarted sidecar resumes (a state written for another model or reference is
ignored).
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from tritonops_runtime.drift.profile import output_matrix
from tritonops_runtime.drift.stats import score_feature
from tritonops_runtime.drift.tracefile import Array
from tritonops_runtime.drift.window import TrackerState

STATE_FORMAT: Final = 1
log = logging.getLogger("tritonops.drift")


# --- windows ---------------------------------------------------------------------------------------------

def as_rows(tensor: Array) -> Array:
    """A request's tensor as (rows, values per row): axis 0 is the batch."""
    return tensor.reshape(len(tensor), -1) if tensor.ndim else tensor.reshape(1, 1)


class WindowBuffer:
    """Rows captured since the last window, grouped by request; the newest ``size`` (plus one request) kept."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pending = 0  # input rows arrived since the last window (also those already dropped)
        self.resets = 0  # the row width changed: the buffer started over
        self._chunks: deque[tuple[Array, Array | None]] = deque()
        self._held = 0

    def add(self, inputs: Array, outputs: Array | None) -> None:
        x = as_rows(inputs)
        y = as_rows(outputs) if outputs is not None else None
        y = y if y is not None and len(y) == len(x) else None
        x, y = x[-self.size:], None if y is None else y[-self.size:]
        if self._chunks and not self._fits(x, y):
            self._chunks.clear()
            self._held, self.pending = 0, 0
            self.resets += 1
        self._chunks.append((x, y))
        self._held += len(x)
        self.pending += len(x)
        while self._held - len(self._chunks[0][0]) >= self.size:
            self._held -= len(self._chunks.popleft()[0])

    def _fits(self, x: Array, y: Array | None) -> bool:
        if x.shape[1:] != self._chunks[-1][0].shape[1:]:
            return False
        widths = {chunk_y.shape[1:] for _, chunk_y in self._chunks if chunk_y is not None}
        return y is None or not widths or widths == {y.shape[1:]}

    def take(self) -> tuple[Array, Array | None] | None:
        """The newest ``size`` input rows and the outputs of the same requests, emptying the buffer; None
        while fewer than ``size`` rows are pending."""
        if self.pending < self.size:
            return None
        xs, ys, need = [], [], self.size
        for x, y in reversed(self._chunks):
            part = x[len(x) - min(need, len(x)):]
            xs.append(part)
            if y is not None:
                ys.append(y[len(y) - len(part):])
            need -= len(part)
            if need <= 0:
                break
        self._chunks.clear()
        self._held, self.pending = 0, 0
        return np.concatenate(xs[::-1]), np.concatenate(ys[::-1]) if ys else None


def prediction_psi(profile: Mapping[str, Any], outputs: Array | None) -> float | None:
    """PSI of the outputs against the profile's (the largest over output features); None without either."""
    if outputs is None or len(outputs) == 0 or not profile.get("outputs"):
        return None
    matrix = output_matrix(profile, outputs)
    return max(score_feature(feature, matrix[:, j], "psi", role="output").score
               for j, feature in enumerate(profile["outputs"]["features"]))


# --- state file ------------------------------------------------------------------------------------------

def save_state(path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` as JSON atomically (temporary file in the same directory, fsync, rename)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("w") as file:
        json.dump(doc, file, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def restore_state(path: Path | None, model: str, reference: str) -> TrackerState:
    """The persisted tracker, or a fresh one (missing, corrupt, or another model's or profile's file)."""
    if path is None or not path.exists():
        return TrackerState()
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise ValueError(f"format must be {STATE_FORMAT}")
        state = TrackerState.from_dict(doc.get("tracker"))
    except (OSError, ValueError) as err:
        log.warning("ignoring the state file %s: %s", path, err)
        return TrackerState()
    if (doc.get("model"), doc.get("reference")) != (model, reference):
        log.info("ignoring the state file %s: written for model %r with reference %s", path, doc.get("model"),
                 doc.get("reference"))
        return TrackerState()
    log.info("restored drift state from %s: %s", path, state.to_dict())
    return state
