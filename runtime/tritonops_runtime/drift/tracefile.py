"""Parse one of Triton's trace files (``--trace-config triton,file=...``) into per-request records.

What Triton 2.51 writes (its ``tracer.cc``, checked against the real server): a JSON-looking list of flat
entries, those of one sampled request contiguous and sharing ``"id"`` (Triton's trace id, a per-process
counter from 1; BLS/ensemble children get their own id and a ``"parent_id"``):

- ``{"id":N,"model_name":"clf","model_version":1,"request_id":"<client id>","parent_id":P}`` - only with
  ``level=TIMESTAMPS``; ``request_id`` is the client's request id (the KServe v2 JSON ``"id"``, tritonclient's
  ``request_id=``, HTTP and gRPC alike) and is left out when the client sent none; ``parent_id`` only for
  children;
- ``{"id":N,"timestamps":[{"name":"QUEUE_START","ns":...}]}`` - one per event, ``level=TIMESTAMPS``; steady
  clock nanoseconds (not wall time), not in time order;
- ``{"id":N,"activity":"TENSOR_QUEUE_INPUT"|"TENSOR_BACKEND_OUTPUT","tensor":{"name":..,"data":"v,v,..",
  "shape":"2,4","dtype":"FP32"}}`` - ``level=TENSORS``; every input as the request brought it, every output of
  the response (per request also under dynamic batching, and for Python-backend models too).

Nothing in it is escaped, so a file is valid JSON only for tame contents:

- FP32/FP64 are printed by ``std::ostream`` with its default 6 significant digits (``0.98847`` for
  0.9884697...): a value with at most 6 significant digits comes back exactly, any other one within 5e-6
  relative; ``inf``/``nan`` appear as such;
- INT8/UINT8 are written as raw characters (value 34 is a bare ``"``, 0 a NUL byte, 200 an invalid UTF-8
  byte), decoded here byte by byte (one byte, one comma, ...);
- BOOL as ``1``/``0``; wider integers as decimal;
- FP16 and BF16 data are left empty, BYTES are ``\\"...\\"`` with the raw string between: skipped and counted;
- ``request_id`` and tensor names are written raw too (a ``"`` in a request id breaks the JSON).

:func:`parse_trace` tries strict JSON first and falls back to a byte-level scanner that knows Triton's exact
layout (no whitespace, fixed key order), skipping (and counting) what it cannot read. :func:`is_complete`
tells a finished file from one still being written (Triton writes with an ``ofstream`` in 2 MiB chunks; the
closing ``]`` comes last).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

QUEUE_INPUT = "TENSOR_QUEUE_INPUT"  # the request's inputs as received (the only input activity seen)
BACKEND_INPUT = "TENSOR_BACKEND_INPUT"  # declared by Triton, not emitted by 2.51; used only without QUEUE_INPUT
BACKEND_OUTPUT = "TENSOR_BACKEND_OUTPUT"

_NUMERIC: dict[str, type[np.generic]] = {
    "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP32": np.float32, "FP64": np.float64,
}
_CHARS: dict[str, type[np.generic]] = {"INT8": np.int8, "UINT8": np.uint8}
_NO_DATA = {"FP16": "FP16 data is not written by Triton", "BF16": "BF16 data is not written by Triton",
            "BYTES": "BYTES are not captured"}

# One entry at a time, as Triton lays it out; each must be followed by the next entry or the closing bracket.
_ENTRY = re.compile(
    rb'\{"id":(?P<id>\d+),(?:'
    rb'"timestamps":\[\{"name":"(?P<ts>[A-Za-z0-9_]+)","ns":(?P<ns>\d+)\}\]\}'
    rb'|"model_name":"(?P<model>[^"]*)","model_version":(?P<version>-?\d+)'
    rb'(?:,"request_id":"(?P<rid>.{0,4096}?)")?(?:,"parent_id":(?P<parent>\d+))?\}'
    rb'|"activity":"(?P<act>[A-Z_]+)","tensor":\{"name":"(?P<name>[^"]*)","data":"(?P<data>.*?)",'
    rb'"shape":"(?P<shape>[0-9,]*)","dtype":"(?P<dtype>[A-Z0-9]+)"\}\})'
    rb'(?=,\{"id":|\]\s*$)',
    re.DOTALL,
)
_NEXT_ENTRY = b',{"id":'


class TraceFormatError(ValueError):
    """Not a complete Triton trace file."""


@dataclass
class TraceRecord:
    """One traced request: Triton's trace id, the client's request id, and the captured tensors."""

    trace_id: int
    model: str | None = None  # None when the trace level lacked TIMESTAMPS
    version: int | None = None
    request_id: str | None = None  # the client's request id; None when it sent none
    parent_id: int | None = None
    timestamps: dict[str, int] = field(default_factory=dict)  # event name -> steady-clock ns (first seen)
    inputs: dict[str, Array] = field(default_factory=dict)
    outputs: dict[str, Array] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # "input:NAME" / "output:NAME" -> why


@dataclass
class ParseResult:
    """The records of one file, in file order, and what could not be read."""

    records: list[TraceRecord]
    skipped_tensors: int = 0  # tensors without usable data (FP16/BF16/BYTES, malformed)
    bad_entries: int = 0  # entries the scanner could not read at all
    tolerant: bool = False  # the file was not valid JSON; the byte-level scanner read it


def is_complete(raw: bytes) -> bool:
    """True when ``raw`` is a whole trace file: ``[`` ... ``]`` with the last entry closed.

    A file cut while being written may end in ``"ns":123}]`` (inside a timestamps entry) but never in
    ``}}]``, ``]}]`` or ``"}]``, which occur only where the list itself closes.
    """
    body = raw.strip()
    if body == b"[]":
        return True
    return body.startswith(b"[") and body.endswith(b"}]") and len(body) > 3 and not body[-3:-2].isdigit()


def decode_tensor(dtype: str, data: bytes, shape: tuple[int, ...]) -> Array | str:
    """The tensor as a numpy array, or a string saying why it cannot be had."""
    if dtype in _NO_DATA:
        return _NO_DATA[dtype]
    count = math.prod(shape)
    try:
        if dtype in _CHARS:
            values = _char_values(data, count)
            return values.view(_CHARS[dtype]).reshape(shape)
        parts = data.split(b",") if data else []
        if len(parts) != count:
            return f"{len(parts)} values for shape {shape}"
        if dtype == "BOOL":
            flags: Array = np.array(parts, dtype=np.int64) != 0
            return flags.reshape(shape)
        if dtype in _NUMERIC:
            kind = _NUMERIC[dtype]
            parsed = np.array(parts, dtype=np.float64 if kind in (np.float32, np.float64) else kind)
            return parsed.astype(kind).reshape(shape)
    except (ValueError, OverflowError) as err:
        return f"unreadable {dtype} data: {err}"
    return f"unknown dtype {dtype}"


def _char_values(data: bytes, count: int) -> Array:
    """INT8/UINT8 values written as single raw bytes separated by commas."""
    if len(data) != max(0, 2 * count - 1) or data[1::2].strip(b",") != b"":
        raise ValueError(f"{len(data)} bytes for {count} one-byte values")
    return np.frombuffer(data[0::2], dtype=np.uint8).copy()


def _shape(text: bytes) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(b",")) if text else ()


def parse_trace(raw: bytes) -> ParseResult:
    """Records of a complete trace file; :class:`TraceFormatError` when it is not one."""
    if not is_complete(raw):
        raise TraceFormatError("not a complete trace file (no closing bracket)")
    try:
        entries = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError included; RecursionError: absurd nesting
        return _scan(raw)
    if not isinstance(entries, list):
        raise TraceFormatError("a trace file holds a JSON list")
    result = ParseResult([])
    builder = _Builder(result)
    for entry in entries:
        if not (isinstance(entry, dict) and builder.add_json(entry)):
            result.bad_entries += 1
    result.records = builder.records()
    return result


def _scan(raw: bytes) -> ParseResult:
    """The byte-level reader for files that are not valid JSON (see the module docstring)."""
    result = ParseResult([], tolerant=True)
    builder = _Builder(result)
    end = len(raw.rstrip()) - 1  # the closing bracket
    pos = raw.index(b"[") + 1
    while pos < end:
        match = _ENTRY.match(raw, pos)
        if match is not None:
            builder.add_match(match)
            pos = match.end() + 1
            continue
        result.bad_entries += 1
        following = raw.find(_NEXT_ENTRY, pos + 1)
        if following < 0:
            break
        pos = following + 1
    result.records = builder.records()
    return result


class _Builder:
    """Groups entries by trace id into records, keeping the order in which ids first appear."""

    def __init__(self, result: ParseResult) -> None:
        self._result = result
        self._by_id: dict[int, TraceRecord] = {}

    def _record(self, trace_id: int) -> TraceRecord:
        if trace_id not in self._by_id:
            self._by_id[trace_id] = TraceRecord(trace_id)
        return self._by_id[trace_id]

    def records(self) -> list[TraceRecord]:
        return list(self._by_id.values())

    def add_json(self, entry: dict[str, Any]) -> bool:
        """One entry of a JSON-parsed file; False when it is not one Triton writes."""
        trace_id = entry.get("id")
        if not isinstance(trace_id, int):
            return False
        record = self._record(trace_id)
        if "model_name" in entry:
            record.model = str(entry["model_name"])
            record.version = _int_or_none(entry.get("model_version"))
            record.request_id = None if entry.get("request_id") is None else str(entry["request_id"])
            record.parent_id = _int_or_none(entry.get("parent_id"))
            return True
        stamps = entry.get("timestamps")
        if isinstance(stamps, list):
            for stamp in stamps:
                if isinstance(stamp, dict) and isinstance(stamp.get("ns"), int):
                    record.timestamps.setdefault(str(stamp.get("name")), stamp["ns"])
            return True
        tensor = entry.get("tensor")
        if not isinstance(tensor, dict):
            return False
        try:  # chars of INT8/UINT8 data in a valid JSON file are all ASCII, so latin-1 gives the raw bytes
            data = str(tensor.get("data", "")).encode("latin-1")
            shape = _shape(str(tensor.get("shape", "")).encode("ascii"))
        except (UnicodeEncodeError, ValueError):
            return False
        self._add_tensor(record, str(entry.get("activity")), str(tensor.get("name")), str(tensor.get("dtype")),
                         data, shape)
        return True

    def add_match(self, match: re.Match[bytes]) -> None:
        """One entry found by the scanner."""
        record = self._record(int(match["id"]))
        text = _text
        if match["ts"] is not None:
            record.timestamps.setdefault(text(match["ts"]), int(match["ns"]))
        elif match["model"] is not None:
            record.model, record.version = text(match["model"]), int(match["version"])
            record.request_id = None if match["rid"] is None else text(match["rid"])
            record.parent_id = None if match["parent"] is None else int(match["parent"])
        else:
            self._add_tensor(record, text(match["act"]), text(match["name"]), text(match["dtype"]), match["data"],
                             _shape(match["shape"]))

    def _add_tensor(self, record: TraceRecord, activity: str, name: str, dtype: str, data: bytes,
                    shape: tuple[int, ...]) -> None:
        if activity == BACKEND_OUTPUT:
            side, target = "output", record.outputs
        elif activity == QUEUE_INPUT or (activity == BACKEND_INPUT and name not in record.inputs):
            side, target = "input", record.inputs
        else:
            return
        value = decode_tensor(dtype, data, shape)
        if isinstance(value, str):
            record.skipped[f"{side}:{name}"] = value
            self._result.skipped_tensors += 1
        else:
            target[name] = value


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
