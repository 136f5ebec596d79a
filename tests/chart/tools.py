"""Helpers for the chart tests: find helm/kubectl, render the chart, read values.yaml comments."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonops.devcluster.binaries import BinariesError, resolve_bin_dir

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tritonops"
VALUES_DIR = Path(__file__).resolve().parent / "values"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
# helm's offline default Kubernetes version is old unless the binary is stamped; render as for the
# control plane the tests run against (>= the chart's kubeVersion).
KUBE_VERSION = "v1.36.3"
RELEASE = "tritonops"
RELEASE_NAMESPACE = "tritonops-system"


@functools.cache
def bin_dir() -> Path | None:
    """The control-plane bin dir ($TRITONOPS_BIN_DIR, else the cached build), or None without one."""
    try:
        return resolve_bin_dir(quiet=True)
    except BinariesError:
        return None


def tool(name: str) -> str:
    """Path of helm/kubectl/lua5.4/hadolint; skips the test when absent (fails under CI)."""
    candidates = []
    d = bin_dir()
    if d is not None:
        candidates.append(d / name)
    candidates.append(ROOT / ".venv" / "bin" / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found (hack/build-control-plane.sh builds helm/kubectl; hack/install-test-deps.sh " \
              "installs lua5.4 and hadolint)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(cmd: Sequence[str], *, check: bool = True, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; on failure the assertion shows stderr."""
    proc = subprocess.run(list(cmd), check=False, input=stdin, text=True, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout[-2000:]}")
    return proc


def helm_template(values_files: Sequence[Path] = (), sets: Sequence[str] = (), *, release: str = RELEASE,
                  namespace: str = RELEASE_NAMESPACE, extra: Sequence[str] = ()) -> str:
    """``helm template`` of the chart, as text."""
    cmd = [tool("helm"), "template", release, str(CHART), "--namespace", namespace,
           "--kube-version", KUBE_VERSION]
    for f in values_files:
        cmd += ["--values", str(f)]
    for s in sets:
        cmd += ["--set", s]
    return run([*cmd, *extra]).stdout


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document text."""
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def value_paths(values: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every key in values.yaml (descending into mappings only)."""
    if isinstance(values, dict):
        for key, sub in values.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            if isinstance(sub, dict) and sub and not _is_free_form(path):
                yield from value_paths(sub, path)


# Mappings whose content is Kubernetes API data (passed through toYaml), not chart settings.
FREE_FORM = ("resources", "livenessProbe", "readinessProbe", "podSecurityContext", "securityContext",
             "dashboard.labels")


def _is_free_form(path: str) -> bool:
    return path in FREE_FORM
