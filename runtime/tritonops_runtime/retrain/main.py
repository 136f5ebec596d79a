"""``tritonops-retrain``: the command of the operator's retraining Job (console script
``tritonops_runtime.retrain.main:main``).

It runs :func:`tritonops_runtime.retrain.pipeline.retrain` with the settings of its flags and reports the
:class:`~tritonops_runtime.retrain.config.Result` three ways:

- stdout: the full result, one JSON line;
- the termination-message file (``--termination-log``, env ``TRITONOPS_TERMINATION_LOG``, default
  ``/dev/termination-log``), which Kubernetes shows as the container's ``state.terminated.message`` and keeps
  to 4096 bytes: the same JSON without ``files`` and with rounded metrics, shortened further if needed
  (:func:`termination_message`), never cut mid-JSON;
- ``--result-file``: the full result as a file (e.g. on a volume the caller reads), when given;

and exits 0 (Accepted), 3 (Rejected by the gate) or 1 (Failed); see :mod:`.config`. A Job's pod that exits
non-zero counts as a failed attempt and is retried up to ``backoffLimit``: a Job spec that should not retry a
rejection can say so with ``podFailurePolicy: {rules: [{action: FailJob, onExitCodes: {operator: In,
values: [3]}}]}``.

The fetcher's environment is read for the inputs and the S3 output (``AWS_*`` credentials, region and
endpoint). The operator's Job environment gives the defaults of ``--model-uri`` (``TRITONOPS_MODEL_URI``),
``--data-uri`` (``TRITONOPS_DATA_URI``), ``--output-uri`` (``TRITONOPS_OUTPUT_URI``), ``--model-digest``
(``TRITONOPS_MODEL_DIGEST``) and ``--parent-version`` (``TRITONOPS_MODEL_VERSION``); ``TRITONOPS_PVC_ROOT``,
``TRITONOPS_MAX_BYTES``, ``TRITONOPS_TERMINATION_LOG`` and ``TMPDIR`` those of the matching flags (names from
:mod:`tritonops_runtime.contract`). Flags win. Everything printed is redacted like the fetcher's output.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from tritonops_runtime import contract as c
from tritonops_runtime.redaction import known_secrets, redact_text
from tritonops_runtime.retrain.config import FAILED, OUTPUT_KINDS, TASKS, Result, RetrainConfig, RetrainError
from tritonops_runtime.retrain.pipeline import retrain

PROG = "tritonops-retrain"
MAX_TERMINATION_BYTES = 4096


class _Parser(argparse.ArgumentParser):
    """argparse that fails with a RetrainError (one line) instead of usage text and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise RetrainError(f"bad arguments: {message}")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Fine-tune the serving model on new data, gate it, and publish a new "
                                       "version to the model store.")
    add = p.add_argument

    def from_env(flag: str, var: str, help_text: str) -> None:
        add(flag, default=env.get(var, ""), help=f"{help_text} (env {var})")

    from_env("--model-uri", c.ENV_RETRAIN_MODEL_URI, "the serving model: a file, directory or archive")
    from_env("--model-digest", c.ENV_RETRAIN_MODEL_DIGEST, "expected sha256:<hex> of the serving model")
    from_env("--parent-version", c.ENV_MODEL_VERSION, "the serving model's version (default: from the model URI)")
    add("--model-class", default=None, help="module:Name of an nn.Module factory to train eagerly (optional)")
    from_env("--data-uri", c.ENV_RETRAIN_DATA_URI, "new data: .npz (inputs, labels), .csv (label last) or a directory")
    from_env("--output-uri", c.ENV_RETRAIN_OUTPUT_URI, "the model store: s3://, file:// or pvc://")
    add("--version", default="", help="version to write (default: one more than the highest in the store)")
    add("--task", default="classification", choices=sorted(TASKS))
    add("--metric", default="", help="gate metric: accuracy, f1, auc (classification); mse, mae (regression)")
    add("--outputs", default="probabilities", choices=OUTPUT_KINDS, help="what a classifier returns")
    add("--epochs", type=int, default=20)
    add("--lr", type=float, default=1e-3)
    add("--batch-size", type=int, default=64)
    add("--holdout-fraction", type=float, default=0.2)
    add("--seed", type=int, default=0)
    gate = p.add_mutually_exclusive_group()
    gate.add_argument("--min-improvement", type=float, default=None, help="least gain over the serving model")
    gate.add_argument("--tolerance", type=float, default=None, help="largest loss allowed (--min-improvement -T)")
    add("--min-metric", type=float, default=None, help="absolute bound (a maximum for mse/mae)")
    add("--max-optimization-loss", type=float, default=None,
        help="largest metric loss pruning/quantization may cost against the fine-tuned model")
    add("--onnx", action="store_true", help="also export model.onnx (checked against torch, gated)")
    add("--quantize", action="store_true", help="try int8 dynamic quantization (gated)")
    add("--prune", type=float, default=0.0, metavar="AMOUNT", help="try zeroing this fraction of weights (gated)")
    add("--threads", type=int, default=0, help="torch threads (default: the CPUs the container may use)")
    add("--input-name", default="INPUT0")
    add("--output-name", default="OUTPUT0")
    add("--pvc-root", default=env.get(c.ENV_PVC_ROOT) or c.PVC_ROOT, help=f"env {c.ENV_PVC_ROOT}")
    add("--max-bytes", type=int, default=int(env.get(c.ENV_MAX_BYTES) or c.DEFAULT_MAX_BYTES),
        help=f"size limit of each input (env {c.ENV_MAX_BYTES})")
    add("--scratch-dir", default=env.get("TMPDIR") or c.SCRATCH_DIR, help="scratch directory (env TMPDIR)")
    add("--termination-log", default=env.get(c.ENV_TERMINATION_LOG) or c.TERMINATION_LOG,
        help=f"termination-message file (env {c.ENV_TERMINATION_LOG})")
    add("--result-file", default="", help="also write the full result JSON here")
    return p


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> tuple[RetrainConfig, argparse.Namespace]:
    """The run's settings and the parsed flags (for the report paths)."""
    ns = _parser(env).parse_args(argv)
    improvement = ns.min_improvement if ns.min_improvement is not None else \
        -ns.tolerance if ns.tolerance is not None else 0.0
    plain = {f.name: getattr(ns, f.name) for f in dataclasses.fields(RetrainConfig) if hasattr(ns, f.name)}
    cfg = RetrainConfig(**{**plain, "min_improvement": improvement, "pvc_root": Path(ns.pvc_root),
                           "scratch": Path(ns.scratch_dir)})
    return cfg, ns


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def termination_message(report: Mapping[str, Any], limit: int = MAX_TERMINATION_BYTES) -> str:
    """The result as JSON of at most ``limit`` UTF-8 bytes: without ``files`` (but with ``onnxDigest``, the
    digest of ``<versionUri>model.onnx`` when one was written), then shortened step by step."""
    slim = {k: v for k, v in report.items() if k != "files"}
    if (report.get("files") or {}).get("model.onnx"):  # an ONNX-served model is replaced by this file
        slim["onnxDigest"] = report["files"]["model.onnx"]
    steps: list[Callable[[dict[str, Any]], dict[str, Any]]] = [
        lambda d: d,
        lambda d: {**d, "reasons": [r[:200] for r in d["reasons"][:5]]},
        lambda d: {k: v for k, v in d.items() if k not in ("finetuned", "samples", "parentDigest", "dataDigest")},
        lambda d: {k: d[k] for k in ("decision", "reasons", "version", "storageUri", "versionUri", "digest",
                                     "format", "onnxDigest") if k in d},
        lambda d: {**d, "reasons": [r[:100] for r in d["reasons"][:2]]},
    ]
    for step in steps:
        slim = step(slim)
        text = _dumps(slim)
        if len(text.encode("utf-8")) <= limit:
            return text
    return _dumps({"decision": report.get("decision"), "reasons": ["result too long: see the Job's log"]})


def _write(path: str, text: str) -> None:
    if path:
        with contextlib.suppress(OSError):
            Path(path).write_text(text)


def _report_paths(args: Sequence[str], env: Mapping[str, str]) -> tuple[str, str]:
    """Where to report, read before the full parse so that bad arguments are reported there too."""
    p = _Parser(add_help=False)
    p.add_argument("--termination-log", default=env.get(c.ENV_TERMINATION_LOG) or c.TERMINATION_LOG)
    p.add_argument("--result-file", default="")
    try:
        ns, _ = p.parse_known_args(args)
    except RetrainError:
        return env.get(c.ENV_TERMINATION_LOG) or c.TERMINATION_LOG, ""
    return str(ns.termination_log), str(ns.result_file)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 Accepted, 3 Rejected, 1 Failed)."""
    env = os.environ
    args = list(argv if argv is not None else sys.argv[1:])
    secrets = known_secrets(env, args)
    termination_log, result_file = _report_paths(args, env)
    try:
        cfg, _ = parse_args(args, env)
        result = retrain(cfg)
    except (RetrainError, ValueError) as err:  # bad arguments or environment values
        result = Result(FAILED, [str(err)])
    report = json.loads(redact_text(_dumps(result.to_json()), secrets))
    print(_dumps(report))
    _write(termination_log, termination_message(report))
    _write(result_file, json.dumps(report, indent=2, sort_keys=True) + "\n")
    if result.decision == FAILED:
        print(f"{PROG}: {report['reasons'][0] if report['reasons'] else 'failed'}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
