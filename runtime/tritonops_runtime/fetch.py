"""``tritonops-fetch``: the init container that lays out the Triton model repository.

It fetches ``--uri`` (a model file, a directory or a ``.tar.gz``/``.tgz``/``.zip`` archive; see
:mod:`tritonops_runtime.sources` for the schemes), verifies ``--digest`` (``sha256:<hex>``) when given, and
writes::

    <repository>/<name>/config.pbtxt          copied from --config-file (the operator's ConfigMap)
    <repository>/<name>/<version>/model.<ext> the model (model.pt, model.onnx, model.plan or model.py)
    <repository>/<name>/<version>/model.py    the wrapper, for the PythonWrapper backend
    <repository>/<name>/FETCHED.json          what was fetched: digest, size, files

The model directory is assembled next to its final place and renamed into it, so a restarted init
container never leaves a half-written model. The digest found is always reported: the JSON report goes to
stdout and to the termination-message file. The digest of a file or archive is the sha256 of its bytes;
of a directory, the sha256 of its ``sha256sum``-style listing (``<hex>  <relative path>`` lines, sorted).

Every failure exits 1 with one line ``tritonops-fetch: <reason>`` on stderr and in the termination-message
file (``/dev/termination-log``), which Kubernetes shows as the container's ``terminated.message``. Every line
printed or written (failures, the report) is redacted first (:mod:`tritonops_runtime.redaction`): no user
info, query strings, signed parameters or secret values of the environment, whatever raised the error.
Settings come from the environment named in :mod:`tritonops_runtime.contract`; flags override them.

Disk: the download, a copied file or directory, and the unpacked content of an archive are each limited to
``--max-bytes`` (``TRITONOPS_MAX_BYTES``, ``spec.model.maxSize``); a failed step removes what it wrote, and the
scratch and staging directories of a fetch killed mid-way are removed by the next one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from tritonops_runtime import contract as c
from tritonops_runtime import layout
from tritonops_runtime.errors import FetchError
from tritonops_runtime.localfs import copy_file, copy_tree, open_regular
from tritonops_runtime.redaction import known_secrets, redact_text
from tritonops_runtime.sources import Download, redact, resolve
from tritonops_runtime.unpack import unpack

PROG = "tritonops-fetch"
SCRATCH_PREFIX = "tritonops-fetch-"  # + "<model name>=": the scratch directory of one fetch
MAX_MESSAGE = 1024  # Kubernetes keeps at most 4096 bytes of the termination message
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class FetchConfig:
    """Everything one fetch needs (from the environment, overridden by flags)."""

    uri: str
    name: str
    format: str
    version: str = "1"
    digest: str = ""
    backend: str = c.BACKEND_NATIVE
    repository: Path = Path(c.MODEL_REPOSITORY)
    config_file: Path = Path(c.CONFIG_DIR) / c.CONFIG_FILE
    pvc_root: Path = Path(c.PVC_ROOT)
    max_bytes: int = c.DEFAULT_MAX_BYTES
    scratch: Path = Path(c.SCRATCH_DIR)

    def check(self) -> None:
        """Reject settings that cannot work, naming the variable to fix."""
        if not self.uri:
            raise FetchError(f"no storage URI: set {c.ENV_STORAGE_URI} or --uri")
        if not _NAME.match(self.name or ""):
            raise FetchError(f"bad model name {self.name!r} ({c.ENV_MODEL_NAME}): letters, digits, '_', '.', '-'")
        if self.format not in c.MODEL_FILES:
            raise FetchError(f"unknown model format {self.format!r} ({c.ENV_MODEL_FORMAT}): use one of "
                             f"{', '.join(c.MODEL_FILES)}")
        if not self.version.isdigit() or int(self.version) < 1:
            raise FetchError(f"bad model version {self.version!r} ({c.ENV_MODEL_VERSION}): a positive integer")
        if self.digest and not _DIGEST.match(self.digest):
            raise FetchError(f"bad digest {self.digest!r} ({c.ENV_MODEL_DIGEST}): expected sha256:<64 hex digits>")
        if self.backend not in (c.BACKEND_NATIVE, c.BACKEND_PYTHON_WRAPPER):
            raise FetchError(f"unknown backend {self.backend!r} ({c.ENV_BACKEND}): Native or PythonWrapper")
        if self.backend == c.BACKEND_PYTHON_WRAPPER and self.format not in c.WRAPPABLE_FORMATS:
            raise FetchError(f"the PythonWrapper backend cannot serve {self.format} models")


class _Parser(argparse.ArgumentParser):
    """argparse that fails with a FetchError (one line) instead of usage text and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise FetchError(f"bad arguments: {message}")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Fetch a model and lay out the Triton model repository.")

    def opt(flag: str, var: str, default: str, help_text: str) -> None:
        p.add_argument(flag, default=env.get(var) or default, help=f"{help_text} (env {var})")

    opt("--uri", c.ENV_STORAGE_URI, "", "storage URI: file://, pvc://, http(s)://, s3://, gs://")
    opt("--name", c.ENV_MODEL_NAME, "", "Triton model name")
    opt("--version", c.ENV_MODEL_VERSION, "1", "model version directory")
    opt("--format", c.ENV_MODEL_FORMAT, "", f"one of {', '.join(c.MODEL_FILES)}")
    opt("--digest", c.ENV_MODEL_DIGEST, "", "expected sha256:<hex> of the file, archive or directory")
    opt("--backend", c.ENV_BACKEND, c.BACKEND_NATIVE, "Native or PythonWrapper")
    opt("--repository", c.ENV_REPOSITORY, c.MODEL_REPOSITORY, "model repository root")
    opt("--config-file", c.ENV_CONFIG_FILE, f"{c.CONFIG_DIR}/{c.CONFIG_FILE}", "rendered config.pbtxt to copy")
    opt("--pvc-root", c.ENV_PVC_ROOT, c.PVC_ROOT, "where the pvc:// claim is mounted")
    opt("--max-bytes", c.ENV_MAX_BYTES, str(c.DEFAULT_MAX_BYTES), "download and unpacked size limit")
    opt("--termination-log", c.ENV_TERMINATION_LOG, c.TERMINATION_LOG, "termination-message file")
    opt("--scratch-dir", "TMPDIR", c.SCRATCH_DIR, "scratch directory for downloads")
    return p


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> tuple[FetchConfig, Path]:
    """The fetch settings and the termination-message path."""
    ns = _parser(env).parse_args(argv)
    try:
        max_bytes = int(ns.max_bytes)
    except ValueError:
        raise FetchError(f"bad {c.ENV_MAX_BYTES} {ns.max_bytes!r}: an integer number of bytes") from None
    cfg = FetchConfig(uri=ns.uri, name=ns.name, format=ns.format, version=str(ns.version), digest=ns.digest,
                      backend=ns.backend, repository=Path(ns.repository), config_file=Path(ns.config_file),
                      pvc_root=Path(ns.pvc_root), max_bytes=max_bytes, scratch=Path(ns.scratch_dir))
    return cfg, Path(ns.termination_log)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path) -> str:
    """Hex sha256 of the sorted ``<sha256>  <relative path>`` listing of every file under ``root``."""
    lines = sorted(f"{file_sha256(p)}  {p.relative_to(root).as_posix()}\n" for p in root.rglob("*") if p.is_file())
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def is_archive_uri(uri: str) -> bool:
    """Whether the URI names an archive to unpack (by suffix: a TorchScript file is a zip, too)."""
    path = urlsplit(uri).path.lower()
    return path.endswith(c.ARCHIVE_SUFFIXES)


def _verify(cfg: FetchConfig, found: str) -> None:
    if cfg.digest and cfg.digest != f"sha256:{found}":
        raise FetchError(f"digest mismatch for {redact(cfg.uri)}: expected {cfg.digest}, found sha256:{found}")


def _materialize(cfg: FetchConfig, src: Download, stage: Path) -> tuple[str, str]:
    """Put the model into ``stage/<version>/``; returns (sha256 hex, kind of source)."""
    content = stage / ".content"
    if src.path.is_dir():
        root = cfg.pvc_root if cfg.uri.startswith("pvc://") else src.path
        copy_tree(src.path, content, cfg.max_bytes, root=root)
        found, kind = tree_sha256(content), "directory"
        _verify(cfg, found)
    else:
        found = src.sha256 or file_sha256(src.path)
        _verify(cfg, found)  # before unpacking: never unpack an archive we were not asked for
        kind = "archive" if is_archive_uri(cfg.uri) else "file"
        if kind == "file":
            copy_file(src.path, content / c.MODEL_FILES[cfg.format], cfg.max_bytes)
        else:
            unpack(src.path, content, cfg.max_bytes)
    layout.arrange(content, stage / cfg.version, cfg.format, cfg.version)
    return found, kind


def _wrapper_source() -> bytes:
    return resources.files("tritonops_runtime.backend").joinpath(c.WRAPPER_FILE).read_bytes()


def fetch(cfg: FetchConfig) -> dict[str, Any]:
    """Run one fetch; returns the report (also written to FETCHED.json)."""
    cfg.check()
    if not cfg.config_file.is_file():
        raise FetchError(f"config file {cfg.config_file} not found ({c.ENV_CONFIG_FILE})")
    cfg.repository.mkdir(parents=True, exist_ok=True)
    cfg.scratch.mkdir(parents=True, exist_ok=True)
    final = cfg.repository / cfg.name
    scratch_prefix = f"{SCRATCH_PREFIX}{cfg.name}="  # '=' is not allowed in names: clf's never matches clf-big's
    # From a fetch killed mid-way (OOM, node loss): a partial download or model would fill the volumes.
    for leftover in [*cfg.repository.glob(f".{cfg.name}.*"), *cfg.scratch.glob(f"{scratch_prefix}*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=cfg.scratch, prefix=scratch_prefix) as tmp, \
            tempfile.TemporaryDirectory(dir=cfg.repository, prefix=f".{cfg.name}.") as stage_dir:
        src = resolve(cfg.uri, Path(tmp), cfg.pvc_root, cfg.max_bytes)
        stage = Path(stage_dir) / cfg.name
        found, kind = _materialize(cfg, src, stage)
        shutil.copyfile(cfg.config_file, stage / c.CONFIG_FILE)
        if cfg.backend == c.BACKEND_PYTHON_WRAPPER:
            (stage / cfg.version / c.WRAPPER_FILE).write_bytes(_wrapper_source())
        report = _report(cfg, stage, found, kind)
        (stage / c.FETCHED_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        stage.rename(final)
    return report


def _report(cfg: FetchConfig, stage: Path, found: str, kind: str) -> dict[str, Any]:
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    return {"model": cfg.name, "version": int(cfg.version), "format": cfg.format, "backend": cfg.backend,
            "uri": redact(cfg.uri), "source": kind, "digest": f"sha256:{found}", "verified": bool(cfg.digest),
            "bytes": sum(p.stat().st_size for p in files),
            "files": [p.relative_to(stage).as_posix() for p in files] + [c.FETCHED_FILE]}


def _termination_message(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        path.write_text(text[:4096])


def _fail(message: str, termination_log: Path, secrets: Sequence[str] = ()) -> int:
    line = f"{PROG}: {' '.join(redact_text(message, secrets).split())}"[:MAX_MESSAGE]
    print(line, file=sys.stderr)
    _termination_message(termination_log, line)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 fetched, 1 failed)."""
    env = os.environ
    termination_log = Path(env.get(c.ENV_TERMINATION_LOG) or c.TERMINATION_LOG)
    secrets = known_secrets(env, [*(argv if argv is not None else sys.argv[1:]), env.get(c.ENV_STORAGE_URI, "")])
    try:
        cfg, termination_log = parse_args(argv, env)
        report = fetch(cfg)
    except FetchError as err:
        return _fail(str(err), termination_log, secrets)
    except Exception as err:  # any failure must still be one line in terminated.message
        return _fail(f"unexpected {type(err).__name__}: {err}", termination_log, secrets)
    print(redact_text(json.dumps(report, sort_keys=True), secrets))
    summary = {k: v for k, v in report.items() if k != "files"}  # fits the 4 KiB termination message
    _termination_message(termination_log, redact_text(json.dumps(summary, sort_keys=True), secrets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
