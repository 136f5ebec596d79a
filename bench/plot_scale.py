"""Plot the operator-at-scale results: spec change → Deployment latency (p50, p99) against the number of
ModelDeployments, so the growth of cost is visible; optionally with an earlier run (``--before``) beside it.

    python -m bench.plot_scale [--result bench/results/operator_scale.json] [--before OTHER.json]
                               [--out docs/operator-scale.png]

Needs matplotlib (``pip install -e .[bench]``; not a dependency of the operator). Not a bench: no ``main``
that measures (``hack/bench.sh`` runs modules with a ``main``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT


def series(doc: dict[str, Any]) -> tuple[list[int], list[float], list[float]]:
    """(sizes, p50 seconds, p99 seconds) of one result document."""
    sizes = sorted(doc["results"]["sizes"], key=int)
    changes = [doc["results"]["sizes"][s]["changes"] for s in sizes]
    return [int(s) for s in sizes], [c["p50Seconds"] for c in changes], [c["p99Seconds"] for c in changes]


def plot(after: dict[str, Any], before: dict[str, Any] | None, out: Path, label: str, before_label: str) -> None:
    import matplotlib  # optional: only this script needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    runs = [(after, label, "tab:blue")] + ([(before, before_label, "tab:red")] if before else [])
    for doc, name, colour in runs:
        sizes, p50, p99 = series(doc)
        ax.plot(sizes, p50, "o-", color=colour, label=f"{name}: p50")
        ax.plot(sizes, p99, "s--", color=colour, label=f"{name}: p99")
    ax.axhline(2.0, color="grey", linestyle=":", label="target p99 ≤ 2 s")
    ax.set_xlabel("ModelDeployments (20 namespaces, 500 KWOK GPU nodes)")
    ax.set_ylabel("spec change → Deployment updated (s)")
    ax.set_yscale("log")
    rate = after["params"]["change_rate"]
    ax.set_title(f"tritonops: {rate:.0f} spec changes/s, {after['started'][:10]}, "
                 f"{after['host']['cpus']} CPUs (whole cluster on one machine)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.plot_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--result", type=Path, default=RESULTS / "operator_scale.json")
    parser.add_argument("--before", type=Path, help="an earlier run to draw beside it")
    parser.add_argument("--label", default="watch cache")
    parser.add_argument("--before-label", default="before: lists per cycle")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "operator-scale.png")
    args = parser.parse_args(argv)
    before = json.loads(args.before.read_text()) if args.before else None
    plot(json.loads(args.result.read_text()), before, args.out, args.label, args.before_label)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
