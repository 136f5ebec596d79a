"""Tensor capture off the request path: Triton samples requests into trace files, the ``drift-monitor``
sidecar picks them up from a shared emptyDir (:class:`TraceCollector`).

Findings (tritonserver 2.51 from the nvidia-pytriton 0.7 wheel, checked with the real server; file layout
and parsing quirks are in :mod:`tritonops_runtime.drift.tracefile`):

Flags (:func:`trace_args`).
  ``--trace-config triton,file=P --trace-config triton,log-frequency=N --trace-config level=TIMESTAMPS
  --trace-config level=TENSORS --trace-config rate=R``. ``log-frequency`` is a *triton-mode* setting:
  ``log_frequency=N`` and ``log-frequency=N`` without the ``triton,`` prefix are accepted and silently
  ignored (``GET /v2/trace/setting`` then shows ``"log_frequency":"0"``). The default rate is 1000.
  ``level=TENSORS`` alone writes tensors but no model name, version or request id: both levels are needed.

Sampling.
  Triton samples request k (counting from 1, per trace setting) when ``k % rate == 0``: with rate 2, the 2nd,
  4th, ... request. A percentage p maps to ``rate = round(100 / p)`` (at least 1), so the effective share is
  ``100 / rate`` percent (33% -> rate 3 -> 33.3%; 40% -> rate 2 -> 50%). The counter belongs to the setting
  object: the global one is shared by all models without their own setting, and every update through the
  API starts a new setting whose count starts from 0.

Files and rotation.
  With ``log-frequency=N`` Triton keeps the sampled traces in memory and, when the N-th is complete, writes
  all N to ``P.<k>`` (k = 0, 1, ... per process; a restarted Triton starts again at ``P.0`` and overwrites).
  Fewer than N left at shutdown, or pending in a setting replaced through the API, go to the next
  ``P.<k>`` then. With ``log-frequency=0`` everything stays in Triton's memory until shutdown and then
  goes to ``P`` itself (unbounded memory: refused here). Files are written in place by an ``ofstream``
  (created empty, then 2 MiB chunks, closing ``]`` last): a reader can see an empty or half file. ``P.<k+1>``
  existing does not prove ``P.<k>`` complete (in Triton's source each flush takes the next index from an
  atomic counter, and flushes from different threads may overlap); completeness is read from the file's end
  (:func:`~tritonops_runtime.drift.tracefile.is_complete`), and a file that stays incomplete for
  ``stale_after_s`` is counted as corrupt and deleted (e.g. a write cut short by a full disk).

Outputs.
  Python-backend models (the PythonWrapper) trace ``TENSOR_QUEUE_INPUT`` for each input and
  ``TENSOR_BACKEND_OUTPUT`` for each output of every sampled request, one record per request also with
  8 concurrent clients under dynamic batching. No ``TENSOR_BACKEND_INPUT`` is written. A request the model
  answers with an error has inputs and no outputs; one rejected before queueing (wrong shape) leaves no trace.

Request ids.
  The record carries the client's request id (the ``"id"`` of the KServe v2 JSON request, tritonclient's
  ``request_id=``; HTTP and gRPC) as ``request_id``, so ground truth can be joined on it. Triton's own
  ``id`` is a per-process counter from 1 (not unique across restarts); ensemble/BLS children have their own
  id and a ``parent_id`` (Triton's source; not tried here).

Runtime settings (:func:`runtime_setting`).
  ``GET/POST /v2/trace/setting`` and ``/v2/models/<m>/trace/setting``; values are JSON *strings*
  (``{"trace_rate":"5"}``; a number is a 500), levels a list (``{"trace_level":["OFF"]}`` disables),
  ``null`` clears a model's field back to the global one. ``trace_file`` cannot be changed through the API
  (501), and a server started without a trace file refuses to enable tracing (400): start with
  ``trace_args(..., switchable=True)`` to be able to turn capture on later.

Failure modes seen from Triton.
  Trace file errors are silent: a missing directory, a name that is a directory, or ENOSPC (a file
  linked to ``/dev/full``) lose the traces, log nothing, and inference carries on (all 200). But the write
  is synchronous on a thread the HTTP response depends on: with ``P.0`` a FIFO nobody reads (its open
  blocks), the response of that request and of the next one never reached the client (5 s timeouts), later
  requests were served, and opening the FIFO released them. So the directory must be fast local storage
  (an emptyDir, ``medium: Memory`` with a ``sizeLimit`` if the node disk is slow), never a network volume.
  The collector only reads regular files and deletes them; it never opens anything Triton writes to for
  writing.

Cost (2 CPUs, the example MLP, [8, 4] FP32 per request, 1000 sequential HTTP requests, two runs): p50
latency 2.78/2.83 ms without tracing, 2.74/2.76 ms sampling every request (rate 1, log-frequency 100),
2.63/2.85 ms at rate 10: within noise; ~1.8 KB of file per trace. The cost grows with tensor size and only
sampled requests pay it: a [2,000,000] FP32 input took 0.5 to 0.9 s per sampled request instead of 15 ms
(text formatting, ~9 bytes a value, plus the write); at rate 1000 the unsampled ones were unaffected.
Triton also holds up to log-frequency traces in memory before writing them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tritonops_runtime.drift.tracefile import Array, TraceFormatError, TraceRecord, parse_trace

DEFAULT_LOG_FREQUENCY = 100
TRACE_LEVELS = ("TIMESTAMPS", "TENSORS")


def sample_rate(sample_percent: float) -> int:
    """Triton's ``rate`` (1 of every ``rate`` requests) for a sampling percentage; 0 means no tracing."""
    if not 0 <= sample_percent <= 100 or math.isnan(sample_percent):
        raise ValueError(f"sample percent must be within 0..100, got {sample_percent}")
    return 0 if sample_percent == 0 else max(1, round(100 / sample_percent))


def trace_args(path: str | os.PathLike[str], sample_percent: float, log_frequency: int = DEFAULT_LOG_FREQUENCY,
               switchable: bool = False) -> list[str]:
    """tritonserver flags that write 1 in ``round(100 / sample_percent)`` requests to ``path.<k>`` files of
    ``log_frequency`` traces each. 0% gives no flags at all, or with ``switchable`` the file and frequency
    with ``level=OFF`` (nothing written, but :func:`runtime_setting` can turn capture on later)."""
    if log_frequency < 1:
        raise ValueError("log_frequency must be >= 1 (0 keeps every trace in Triton's memory until shutdown)")
    rate = sample_rate(sample_percent)
    if rate == 0 and not switchable:
        return []
    levels = [f"level={level}" for level in TRACE_LEVELS] if rate else ["level=OFF"]
    settings = [f"triton,file={os.fspath(path)}", f"triton,log-frequency={log_frequency}", *levels,
                f"rate={rate or 1}", "count=-1"]
    return [arg for setting in settings for arg in ("--trace-config", setting)]


def runtime_setting(sample_percent: float, log_frequency: int | None = None) -> dict[str, Any]:
    """The JSON body for ``POST /v2/trace/setting`` (or a model's) that sets capture to ``sample_percent``."""
    rate = sample_rate(sample_percent)
    if rate == 0:
        return {"trace_level": ["OFF"]}
    body: dict[str, Any] = {"trace_level": list(TRACE_LEVELS), "trace_rate": str(rate)}
    if log_frequency is not None:
        if log_frequency < 1:
            raise ValueError("log_frequency must be >= 1")
        body["log_frequency"] = str(log_frequency)
    return body


@dataclass(frozen=True)
class CaptureLimits:
    """Bounds on what the collector holds: rows per tensor, files waiting, bytes per file."""

    max_rows: int = 10_000  # rows kept per (model, side, tensor): the drift window
    max_ring_bytes: int = 64 << 20  # and at most this many bytes of them
    max_pending_files: int = 32  # more waiting files than this: the oldest are deleted unread
    max_file_bytes: int = 32 << 20  # larger files are deleted unread
    stale_after_s: float = 60.0  # an incomplete file not modified for this long is corrupt


@dataclass
class CaptureCounters:
    """Totals since start, for the metrics exporter (:meth:`as_dict`)."""

    files_read: int = 0
    files_not_json: int = 0  # read by the byte-level scanner (raw INT8/UINT8, quotes in request ids)
    bytes_read: int = 0
    records: int = 0
    rows: int = 0
    files_dropped_overload: int = 0
    files_dropped_oversize: int = 0
    files_corrupt: int = 0  # incomplete past stale_after_s, or unreadable: deleted
    entries_bad: int = 0  # unreadable entries inside files that were read
    tensors_skipped: int = 0  # no usable data (FP16/BF16/BYTES, malformed), or a row over max_ring_bytes
    records_unattributed: int = 0  # no model name (trace level without TIMESTAMPS): not buffered
    ring_resets: int = 0  # a tensor's row shape or dtype changed: its buffer started over
    io_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class TensorKey(NamedTuple):
    """A buffer's key: model, ``"input"`` or ``"output"``, tensor name."""

    model: str
    side: str
    tensor: str


class TensorRing:
    """The last ``capacity`` rows of one tensor (axis 0 of each request's tensor) and their request ids."""

    def __init__(self, capacity: int, row_shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.capacity, self.row_shape, self.dtype = capacity, row_shape, dtype
        self._rows: Array = np.empty((capacity, *row_shape), dtype=dtype)
        self._ids: list[str | None] = [None] * capacity
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def fits(self, rows: Array) -> bool:
        return rows.shape[1:] == self.row_shape and rows.dtype == self.dtype

    def append(self, rows: Array, request_id: str | None) -> None:
        """Add ``rows`` (shape ``(n, *row_shape)``), overwriting the oldest when full."""
        rows = rows[len(rows) - min(len(rows), self.capacity):]
        done = 0
        while done < len(rows):
            count = min(len(rows) - done, self.capacity - self._next)
            self._rows[self._next:self._next + count] = rows[done:done + count]
            self._ids[self._next:self._next + count] = [request_id] * count
            self._next = (self._next + count) % self.capacity
            done += count
        self._size = min(self.capacity, self._size + len(rows))

    def _order(self) -> list[int]:
        start = (self._next - self._size) % self.capacity
        return [(start + i) % self.capacity for i in range(self._size)]

    def rows(self) -> Array:
        """A copy of the rows, oldest first."""
        return self._rows[self._order()]

    def request_ids(self) -> list[str | None]:
        """The request id of each row of :meth:`rows`."""
        return [self._ids[i] for i in self._order()]


class _Pending(NamedTuple):
    mtime_ns: int
    number: int  # the k of <prefix>.<k>
    path: Path
    size: int
    inode: int


class TraceCollector:
    """Reads the completed ``<prefix>.<k>`` files Triton writes, deletes them, and buffers their tensors.

    :meth:`poll` does one pass (call it from one thread; :meth:`run` loops); :meth:`snapshot` may be called
    from others. Triton's own files are never written to: the collector reads and unlinks only.
    """

    def __init__(self, prefix: str | os.PathLike[str], limits: CaptureLimits | None = None,
                 unbatched_models: Collection[str] = (), clock: Callable[[], float] = time.time) -> None:
        self.prefix = Path(prefix)
        self.limits = limits or CaptureLimits()
        self.unbatched_models = frozenset(unbatched_models)  # their whole tensor is one row
        self.counters = CaptureCounters()
        self._clock = clock
        self._name = re.compile(re.escape(self.prefix.name) + r"\.(\d+)")
        self._rings: dict[TensorKey, TensorRing] = {}
        self._lock = threading.Lock()
        self._stuck: set[tuple[str, int, int]] = set()  # read but not deletable: never read again

    def poll(self) -> list[TraceRecord]:
        """One pass: drop what exceeds the limits, read and delete complete files (oldest first), buffer
        their tensors; returns the new records."""
        records: list[TraceRecord] = []
        for pending in self._drop_overload(self._pending()):
            records.extend(self._consume(pending))
        with self._lock:
            for record in records:
                self._buffer(record)
        return records

    def run(self, stop: threading.Event, interval_s: float = 1.0,
            on_records: Callable[[list[TraceRecord]], None] | None = None) -> None:
        """Poll every ``interval_s`` until ``stop`` is set; errors are counted, never raised."""
        while not stop.is_set():
            try:
                records = self.poll()
                if on_records is not None and records:
                    on_records(records)
            except OSError:
                self.counters.io_errors += 1
            stop.wait(interval_s)

    def snapshot(self) -> dict[TensorKey, tuple[Array, list[str | None]]]:
        """Copies of every buffer: rows (oldest first) and their request ids."""
        with self._lock:
            return {key: (ring.rows(), ring.request_ids()) for key, ring in self._rings.items()}

    def ring(self, model: str, side: str, tensor: str) -> TensorRing | None:
        """The live buffer of one tensor (read it from the polling thread, else use :meth:`snapshot`)."""
        return self._rings.get(TensorKey(model, side, tensor))

    def _pending(self) -> list[_Pending]:
        try:
            entries = list(os.scandir(self.prefix.parent))
        except FileNotFoundError:
            return []
        found, present = [], set()
        for entry in entries:
            match = self._name.fullmatch(entry.name)
            if match is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            key = (entry.name, st.st_ino, st.st_mtime_ns)
            present.add(key)
            if key not in self._stuck:
                found.append(_Pending(st.st_mtime_ns, int(match[1]), Path(entry.path), st.st_size, st.st_ino))
        self._stuck &= present
        return sorted(found)

    def _drop_overload(self, pending: list[_Pending]) -> list[_Pending]:
        excess = len(pending) - self.limits.max_pending_files
        for old in pending[:max(0, excess)]:
            if self._delete(old.path):
                self.counters.files_dropped_overload += 1
        return pending[max(0, excess):]

    def _consume(self, pending: _Pending) -> list[TraceRecord]:
        if pending.size > self.limits.max_file_bytes:
            if self._delete(pending.path):
                self.counters.files_dropped_oversize += 1
            return []
        try:
            with pending.path.open("rb") as file:
                raw = file.read(self.limits.max_file_bytes + 1)
        except OSError:
            self.counters.io_errors += 1
            return []
        if len(raw) > self.limits.max_file_bytes:  # grew since it was listed
            return []
        try:
            result = parse_trace(raw)
        except TraceFormatError:
            if self._clock() - pending.mtime_ns / 1e9 > self.limits.stale_after_s and self._delete(pending.path):
                self.counters.files_corrupt += 1
            return []  # else still being written: next pass
        except Exception:  # a file that trips the parser must neither stop the collector nor come back
            if self._delete(pending.path):
                self.counters.files_corrupt += 1
            return []
        if not self._delete(pending.path):
            self._stuck.add((pending.path.name, pending.inode, pending.mtime_ns))
        counters = self.counters
        counters.files_read += 1
        counters.files_not_json += result.tolerant
        counters.bytes_read += len(raw)
        counters.records += len(result.records)
        counters.entries_bad += result.bad_entries
        counters.tensors_skipped += result.skipped_tensors
        return result.records

    def _delete(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return True
        except OSError:
            self.counters.io_errors += 1
            return False
        return True

    def _buffer(self, record: TraceRecord) -> None:
        if record.model is None:
            self.counters.records_unattributed += 1
            return
        for side, tensors in (("input", record.inputs), ("output", record.outputs)):
            for name, value in tensors.items():
                batched = value.ndim > 0 and record.model not in self.unbatched_models
                rows = value if batched else value.reshape(1, *value.shape)
                ring = self._ring_for(TensorKey(record.model, side, name), rows)
                if ring is None:
                    self.counters.tensors_skipped += 1
                    continue
                ring.append(rows, record.request_id)
                self.counters.rows += len(rows)

    def _ring_for(self, key: TensorKey, rows: Array) -> TensorRing | None:
        ring = self._rings.get(key)
        if ring is not None and ring.fits(rows):
            return ring
        row_bytes = max(1, math.prod(rows.shape[1:]) * rows.dtype.itemsize)
        capacity = min(self.limits.max_rows, self.limits.max_ring_bytes // row_bytes)
        if capacity < 1:
            return None
        if ring is not None:
            self.counters.ring_resets += 1
        self._rings[key] = TensorRing(capacity, tuple(rows.shape[1:]), rows.dtype)
        return self._rings[key]
