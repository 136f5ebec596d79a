"""What every bench shares: the command line (``--smoke``, ``--out``), the human table, the JSON result.

A bench module defines ``main(argv)``; it parses :func:`parse_args`, measures, prints :func:`table`\\ s and
ends with :func:`write_result`, which writes ``bench/results/<name>.json`` (or into ``$TRITONOPS_BENCH_RESULTS``)::

    {"bench": name, "smoke": bool, "started": ISO-8601 UTC, "seconds": wall time, "host": {...},
     "params": {...the sizes used...}, "results": {...the numbers...}}

Ratios are always *configuration / baseline*, so 1.00 means "no difference"; for throughput lower is worse,
for latency and cost higher is worse. Benchmarks fail loudly (:class:`BenchError`, exit status 1) when what
they were meant to measure did not happen, rather than reporting numbers about nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV_RESULTS = "TRITONOPS_BENCH_RESULTS"  # another directory for the JSON results (the smoke test's tmp)
RESULTS = Path(os.environ.get(ENV_RESULTS) or ROOT / "bench" / "results")


class BenchError(RuntimeError):
    """The bench did not measure what it claims to (no capture, failed requests...)."""


@dataclass(frozen=True)
class Run:
    """One invocation: its name, whether it is a smoke run, where the JSON goes, when it started."""

    name: str
    smoke: bool
    out: Path
    started: float


def parse_args(name: str, description: str, argv: Sequence[str] | None) -> Run:
    """``--smoke`` (tiny sizes, for CI) and ``--out PATH`` (default ``bench/results/<name>.json``)."""
    parser = argparse.ArgumentParser(prog=f"bench.{name}", description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the bench works, numbers mean little")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.json", help="JSON result file")
    args = parser.parse_args(argv)
    return Run(name, bool(args.smoke), Path(args.out), time.time())


def host_info() -> dict[str, Any]:
    """What the numbers depend on: CPUs, load, Python and numpy versions."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in load], "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(), "machine": platform.machine()}


def write_result(run: Run, params: Mapping[str, Any], results: Mapping[str, Any]) -> Path:
    """Write the JSON result (see the module docstring); returns its path."""
    doc = {"bench": run.name, "smoke": run.smoke,
           "started": datetime.fromtimestamp(run.started, UTC).isoformat(timespec="seconds"),
           "seconds": round(time.time() - run.started, 2), "host": host_info(), "params": dict(params),
           "results": dict(results)}
    run.out.parent.mkdir(parents=True, exist_ok=True)
    run.out.write_text(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False, default=_plain) + "\n")
    return run.out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, None when either is missing or the base is 0."""
    if value is None or base is None or base == 0 or not math.isfinite(value) or not math.isfinite(base):
        return None
    return value / base


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
    return str(value)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (first column left-aligned, the others right-aligned)."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths,
                                                                                               strict=True)))

    rule = "-" * len(line(headers))
    return "\n".join([title, rule, line(headers), rule, *(line(r) for r in cells), rule])


def emit(text: str) -> None:
    """Print a block of the report (flushed: benches run for minutes)."""
    print(text, flush=True)
    sys.stdout.flush()
