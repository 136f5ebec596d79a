"""``tritonops dev up|down|kubeconfig|status``: a long-lived local cluster for development.

``dev up`` builds the binaries if needed (``hack/build-control-plane.sh``, or ``$TRITONOPS_BIN_DIR``),
starts the control plane, creates the KWOK nodes and server-side applies the checkout's CRD.

State lives in ``$TRITONOPS_DEV_HOME/<name>/`` (default ``~/.cache/tritonops/dev/<name>/``): PKI, kubeconfig,
component logs under ``logs/``, etcd data and ``cluster.json`` (ports and PIDs). ``dev up`` leaves the
components running after it returns; ``dev down`` stops them and removes the directory.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tritonops.devcluster import hostclean
from tritonops.devcluster.binaries import BinariesError, repo_root, resolve_bin_dir, resolve_node_bin_dir
from tritonops.devcluster.images import build_images
from tritonops.devcluster.launcher import ClusterError, ControlPlane
from tritonops.devcluster.nodeconf import REAL_NODE_LABEL
from tritonops.devcluster.nodes import NodePool, create_nodes
from tritonops.devcluster.realnode import RealNode

HOME_ENV = "TRITONOPS_DEV_HOME"
REAL_NODE_SELECTOR = f"{REAL_NODE_LABEL}=true"
CRD_FILE = Path("crds") / "modeldeployments.tritonops.io.yaml"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


def dev_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "tritonops" / "dev").expanduser()


def state_dir(name: str) -> Path:
    return dev_home() / name


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialize ``up``/``down`` of one cluster across processes."""
    dev_home().mkdir(parents=True, exist_ok=True)
    with (dev_home() / f".{name}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _print_access(cp: ControlPlane) -> None:
    print(f"kubeconfig: {cp.kubeconfig}")
    print(f"logs:       {cp.logs_dir}")
    print(f"export KUBECONFIG={cp.kubeconfig}")


def install_crd(cp: ControlPlane) -> int:
    """Server-side apply the repo's CRD (if the checkout has one) and wait until it is Established."""
    crd = repo_root() / CRD_FILE
    if not crd.is_file():
        return 0
    kubectl = [str(cp.bin_dir / "kubectl"), "--kubeconfig", str(cp.kubeconfig)]
    for cmd in (["apply", "--server-side", "--force-conflicts", "-f", str(crd)],
                ["wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd)]):
        proc = subprocess.run([*kubectl, *cmd], capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            print(f"kubectl {cmd[0]} {CRD_FILE} failed (the cluster stays up):\n{proc.stderr.strip()}",
                  file=sys.stderr)
            return 1
    print(f"applied {CRD_FILE}")
    return 0


def _up(args: argparse.Namespace) -> int:
    pool = NodePool(args.cpu_nodes, args.gpu_nodes, args.gpus_per_node)
    state = state_dir(args.name)
    old = ControlPlane.load(state)
    if old and old.is_running():
        print(f"cluster {args.name!r} is already running")
        if args.real_nodes and not _real_node_running(old):
            _start_real_node(old)
        code = install_crd(old)
        _print_access(old)
        return code
    if old:
        print(f"cluster {args.name!r} is not healthy any more: stopping what is left and starting afresh")
        old.stop()
    shutil.rmtree(state, ignore_errors=True)
    cp = ControlPlane(state, resolve_bin_dir(), args.name)
    t0 = time.monotonic()
    cp.start()
    t1 = time.monotonic()
    try:
        nodes = create_nodes(cp.kubeconfig, pool)
        if args.real_nodes:
            nodes.append(_start_real_node(cp))
    except BaseException:
        cp.stop()
        raise
    print(f"cluster {args.name!r} up: control plane in {t1 - t0:.1f}s, "
          f"{len(nodes)} nodes Ready in {time.monotonic() - t1:.1f}s ({', '.join(nodes)})")
    code = install_crd(cp)
    _print_access(cp)
    return code


def _start_real_node(cp: ControlPlane) -> str:
    """Build (cached) the node binaries and images, start the real node; return its name."""
    node = RealNode(cp, resolve_node_bin_dir())
    t0 = time.monotonic()
    node.start(build_images())
    print(f"real node {node.name} Ready in {time.monotonic() - t0:.1f}s (label {REAL_NODE_SELECTOR})")
    return node.name


def _real_node_running(cp: ControlPlane) -> bool:
    node = RealNode.load(cp)
    return node is not None and all(node.status().values())


def _stop_real_node(cp: ControlPlane | None, force: bool) -> int:
    """Stop the cluster's real node (with ``force``, any real node's leftovers on this machine)."""
    node = RealNode.load(cp) if cp else None
    if node is None and not force:
        return 0
    if node is None and hostclean.load_record() is None:
        foreign = hostclean.foreign_state()
        print(f"no record of a real node on this machine ({hostclean.record_path()}): nothing of ours to undo"
              + ("; left alone:\n  " + "\n  ".join(foreign) if foreign else ""))
        return 0
    left = node.stop() if node else hostclean.cleanup()
    if left:
        print("the host still has real-node leftovers:\n  " + "\n  ".join(left), file=sys.stderr)
        return 1
    print("real node stopped; host changes undone")
    return 0


def _down(args: argparse.Namespace) -> int:
    state = state_dir(args.name)
    cp = ControlPlane.load(state)
    if cp is None and not state.exists():
        print(f"no cluster named {args.name!r}")
        return _stop_real_node(None, args.force)
    code = _stop_real_node(cp, args.force)
    if cp:
        cp.stop()
    if code == 0:
        shutil.rmtree(state, ignore_errors=True)
        print(f"cluster {args.name!r} stopped and removed")
    return code


def _kubeconfig(args: argparse.Namespace) -> int:
    cp = ControlPlane.load(state_dir(args.name))
    if cp is None or not cp.kubeconfig.is_file():
        print(f"no cluster named {args.name!r}; run `tritonops dev up`", file=sys.stderr)
        return 1
    print(cp.kubeconfig)
    return 0


def _status(args: argparse.Namespace) -> int:
    state = state_dir(args.name)
    cp = ControlPlane.load(state)
    if cp is None:
        print(f"cluster {args.name!r}: not created ({state})")
        return 1
    running = cp.is_running()
    print(f"cluster {args.name!r}: {'running' if running else 'NOT running'} ({state})")
    for component, alive in cp.status().items():
        print(f"  {component:<24} pid {cp.pids.get(component, '-')!s:<8} {'up' if alive else 'down'}")
    node = RealNode.load(cp)
    if node:
        for component, alive in node.status().items():
            print(f"  {component:<24} pid {node.pids.get(component, '-')!s:<8} {'up' if alive else 'down'}"
                  f"  (real node {node.name})")
    if cp.ports:
        print(f"  api server: {cp.ports.server}")
    _print_access(cp)
    return 0 if running else 1


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise argparse.ArgumentTypeError("a name is 1-40 lowercase letters, digits and dashes")
    return value


def _count(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return n


def _real_nodes(value: str) -> int:
    n = int(value)
    if n not in (0, 1):
        raise argparse.ArgumentTypeError(
            "0 or 1: one real node per machine (the kubelet's port 10250 and the /kubepods cgroups are host-wide)")
    return n


def _gpus(value: str) -> int:
    n = int(value)
    if not 1 <= n <= 8:
        raise argparse.ArgumentTypeError("between 1 and 8")
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tritonops dev", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start the cluster (no-op if it is running) and print its kubeconfig")
    up.add_argument("--cpu-nodes", type=_count, default=1, help="fake CPU nodes (default 1)")
    up.add_argument("--gpu-nodes", type=_count, default=2, help="fake GPU nodes (default 2)")
    up.add_argument("--gpus-per-node", type=_gpus, default=2, help="nvidia.com/gpu per GPU node, 1-8 (default 2)")
    up.add_argument("--real-nodes", type=_real_nodes, default=0,
                    help="real nodes running real containers (containerd, kubelet, kube-proxy): 0 or 1 "
                    f"(default 0); pods choose them with nodeSelector {REAL_NODE_SELECTOR}")
    helps = {"down": "stop the cluster and delete its state", "kubeconfig": "print the kubeconfig path",
             "status": "show component PIDs and health (exit 1 unless running)"}
    for name, text in helps.items():
        sub.add_parser(name, help=text)
    sub.choices["down"].add_argument(
        "--force", action="store_true",
        help="also undo what a crashed real node left on this machine (processes, mounts, cgroups, iptables "
        "chains, network namespaces, the bridge, ip_forward), even without a cluster record")
    for action in sub.choices.values():
        action.add_argument("--name", type=_name, default="dev", help="cluster name (default: dev)")
    return p


def run(argv: list[str]) -> int:
    """Run ``tritonops dev ...``; ``argv`` may start with ``dev`` or directly with the action."""
    args = parser().parse_args(argv[1:] if argv[:1] == ["dev"] else argv)
    try:
        if args.action in ("up", "down"):
            with _locked(args.name):
                return int(_up(args) if args.action == "up" else _down(args))
        return int(_kubeconfig(args) if args.action == "kubeconfig" else _status(args))
    except (ClusterError, BinariesError, TimeoutError, subprocess.CalledProcessError) as err:
        print(f"tritonops dev {args.action}: {err}", file=sys.stderr)
        print(f"component logs: {state_dir(args.name) / 'logs'}", file=sys.stderr)
        return 1


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
