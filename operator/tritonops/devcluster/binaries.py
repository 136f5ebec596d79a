"""Find the control-plane binaries: ``$TRITONOPS_BIN_DIR``, else build them with the repo's script.

``hack/build-control-plane.sh`` is idempotent (a cache keyed by the pinned go.mod/go.sum files, guarded
by a lock) and prints the bin directory as its last stdout line; a cached run takes a fraction of a second.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BIN_DIR_ENV = "TRITONOPS_BIN_DIR"
REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")
STAGES_DIR = "kwok-stages"
NODE_BIN_DIR_ENV = "TRITONOPS_NODE_BIN_DIR"
NODE_REQUIRED = ("kubelet", "kube-proxy")


class BinariesError(RuntimeError):
    """The binaries are missing and could not be built."""


def repo_root() -> Path:
    """The checkout this package lives in (``operator/tritonops/devcluster`` is three levels down)."""
    return Path(__file__).resolve().parents[3]


def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$TRITONOPS_CACHE``, else ``~/.cache/tritonops`` (what the hack/ scripts use too)."""
    return cache_dir or Path(os.environ.get("TRITONOPS_CACHE") or Path.home() / ".cache" / "tritonops")


def build_script() -> Path:
    return repo_root() / "hack" / "build-control-plane.sh"


def missing(bin_dir: Path) -> list[str]:
    """What a usable bin dir lacks: executables from :data:`REQUIRED` and the kwok stage directory."""
    gone = [name for name in REQUIRED if not os.access(bin_dir / name, os.X_OK)]
    if not (bin_dir / STAGES_DIR).is_dir():
        gone.append(f"{STAGES_DIR}/")
    return gone


def _run_script(script: Path, quiet: bool) -> Path:
    """Run an idempotent build script and return the directory it prints as its last stdout line."""
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False,
                          stderr=subprocess.DEVNULL if quiet else None)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BinariesError(f"{script} failed with exit code {proc.returncode}")
    return Path(lines[-1]).resolve()


def resolve_bin_dir(*, build: bool = True, quiet: bool = False) -> Path:
    """The directory with the binaries (and ``kwok-stages/``); runs the build script unless ``build`` is False.

    Build progress goes to our stderr unless ``quiet``; a cold build takes minutes.
    """
    env_dir = os.environ.get(BIN_DIR_ENV)
    if env_dir:
        path = Path(env_dir).expanduser().resolve()
        if gone := missing(path):
            raise BinariesError(f"${BIN_DIR_ENV}={env_dir} lacks {', '.join(gone)}")
        return path
    script = build_script()
    if not build or not script.is_file():
        raise BinariesError(f"set ${BIN_DIR_ENV} or run {script} to build the control plane")
    path = _run_script(script, quiet)
    if gone := missing(path):
        raise BinariesError(f"{script} printed {path}, which lacks {', '.join(gone)}")
    return path


def resolve_node_bin_dir(*, quiet: bool = False) -> Path:
    """kubelet and kube-proxy: ``$TRITONOPS_NODE_BIN_DIR``, else ``hack/build-node.sh`` (which also installs
    Debian's containerd, runc and CNI plugins when they are missing)."""
    env_dir = os.environ.get(NODE_BIN_DIR_ENV)
    path = Path(env_dir).expanduser().resolve() if env_dir else _run_script(
        repo_root() / "hack" / "build-node.sh", quiet)
    gone = [name for name in NODE_REQUIRED if not os.access(path / name, os.X_OK)]
    if gone:
        raise BinariesError(f"{path} lacks {', '.join(gone)} (hack/build-node.sh builds them)")
    return path
