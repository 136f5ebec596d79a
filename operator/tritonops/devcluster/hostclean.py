"""What a real node changes on the host, how to see it, and how to undo all of it (also after a crash).

The kubelet, containerd, runc, the CNI plugins and kube-proxy change the host beyond the node's own directory:
processes (the components, containerd shims, pod processes in the ``/kubepods`` cgroups), mounts (overlay
root filesystems, tmpfs volumes, network namespaces bound under ``/run/netns``, the kubelet root bound on
itself), cgroups ``/kubepods`` and ``/k8s.io`` in every hierarchy, the bridge, iptables chains (``KUBE-*`` from
kubelet and kube-proxy, ``CNI-*`` from the plugins; IPv4 and IPv6), ``net.ipv4.ip_forward`` (the bridge
plugin sets it) and directories the kubelet hard-codes. :func:`footprint` lists what is there,
:func:`cleanup` removes it. Before a node starts, :func:`record` writes what the host looked like to a
machine-wide record (``~/.cache/tritonops/real-node.json``), kept until the host is clean again, so a
cleanup after a crash restores exactly that. Host-wide state (cgroups, chains, namespaces, the bridge,
ip_forward, directories) is only touched while that record says our node ran here: without it, another
kubelet's or container runtime's state on the machine is left alone (:func:`foreign_state` reports it, and
a real node refuses to start beside it). Only processes and mounts under our own directories are ours
without a record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tritonops.devcluster.binaries import cache_root
from tritonops.devcluster.launcher import terminate
from tritonops.devcluster.nodeconf import BRIDGE

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAMES = ("kubepods", "k8s.io")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NETNS_DIR = Path("/run/netns")
HOST_DIRS = (Path("/var/lib/kubelet"), Path("/var/log/pods"), Path("/var/log/containers"),
             Path("/run/containerd"))
COMPONENTS = ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2")
CHAIN_PREFIXES = ("KUBE-", "CNI-")
TABLES = ("filter", "nat", "mangle")
IPTABLES = ("iptables", "ip6tables")


def record_path() -> Path:
    """The machine-wide record of the running real node (one per machine)."""
    return cache_root() / "real-node.json"


def load_record() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(record_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def record(node_root: Path) -> dict[str, Any]:
    """Write what the host looks like before a node starts (existing dirs, ip_forward) and return it."""
    data = {"root": str(node_root), "ip_forward": IP_FORWARD.read_text().strip(),
            "existing": [str(d) for d in HOST_DIRS if d.exists()]}
    record_path().parent.mkdir(parents=True, exist_ok=True)
    record_path().write_text(json.dumps(data, indent=2) + "\n")
    return data


def running_components(roots: Iterable[str]) -> list[tuple[int, str]]:
    """PIDs of node components: a component binary whose command line names one of ``roots``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if argv and Path(argv[0]).name in COMPONENTS and any(r in a for r in roots for a in argv[1:]):
            found.append((int(proc.name), " ".join(argv)[:160]))
    return found


def _cgroups() -> list[Path]:
    """Our cgroup directories, deepest first."""
    dirs: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ():
        for name in CGROUP_NAMES:
            top = hierarchy / name
            if top.is_dir():
                dirs += sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
                dirs.append(top)
    return dirs


def _cgroup_pids() -> list[int]:
    pids: set[int] = set()
    for d in _cgroups():
        with contextlib.suppress(OSError):
            pids |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
    return sorted(pids)


def _mounts(roots: Iterable[str], netns: bool) -> list[str]:
    """Mount points under ``roots`` (and the CNI network namespaces when ``netns``), deepest first."""
    prefixes = (*roots, str(NETNS_DIR / "cni-")) if netns else tuple(roots)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefixes):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def _netns() -> list[Path]:
    return sorted(NETNS_DIR.glob("cni-*")) if NETNS_DIR.is_dir() else []


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    return proc.stdout if proc.returncode == 0 else ""


def _chains() -> list[tuple[str, str, str]]:
    """(tool, table, chain) of every KUBE-*/CNI-* chain."""
    found = []
    for tool in IPTABLES:
        for table in TABLES:
            for line in _run(tool, "-w", "-t", table, "-S").splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "-N" and parts[1].startswith(CHAIN_PREFIXES):
                    found.append((tool, table, parts[1]))
    return found


def _bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def foreign_state() -> list[str]:
    """Host-wide state a kubelet, a CRI runtime or CNI plugins leave (ours or anyone's), one line each."""
    left = [f"pod process {pid}" for pid in _cgroup_pids()]
    left += [f"cgroup {d}" for d in _cgroups()]
    left += [f"netns {n}" for n in _netns()]
    left += [f"link {BRIDGE}"] if _bridge_exists() else []
    left += [f"{tool} -t {table} chain {chain}" for tool, table, chain in _chains()]
    return left


def footprint(roots: Iterable[str] = (), before: dict[str, Any] | None = None) -> list[str]:
    """Everything a real node left on the host, one line each; empty when the host is clean.

    ``roots``: node directories whose processes and mounts count (the record's root is always included).
    ``before``: the host as recorded before the node started (default: the current record, if any);
    directories and ip_forward are judged against it, and are not judged without one.
    """
    rec = before or load_record()
    roots = sorted({*roots, *([rec["root"]] if rec else [])})
    left = [f"process {pid}: {cmd}" for pid, cmd in running_components(roots)]
    left += [f"mount {m}" for m in _mounts(roots, netns=True)]
    left += foreign_state()
    if rec:
        left += [f"dir {d}" for d in HOST_DIRS if d.exists() and str(d) not in rec["existing"]]
        if (now := IP_FORWARD.read_text().strip()) != rec["ip_forward"]:
            left.append(f"net.ipv4.ip_forward={now} (was {rec['ip_forward']})")
    if load_record():
        left.append(f"record {record_path()}")
    return left


def _drop_chains() -> None:
    """Delete jumps into KUBE-*/CNI-* chains from other chains, then flush and delete those chains."""
    for tool in IPTABLES:
        for table in TABLES:
            for line in _run(tool, "-w", "-t", table, "-S").splitlines():
                parts = shlex.split(line)  # comments are quoted: "kubernetes service portals"
                if (len(parts) > 3 and parts[0] == "-A" and not parts[1].startswith(CHAIN_PREFIXES)
                        and "-j" in parts and parts[parts.index("-j") + 1].startswith(CHAIN_PREFIXES)):
                    _run(tool, "-w", "-t", table, "-D", *parts[1:])
    chains = _chains()
    for tool, table, chain in chains:
        _run(tool, "-w", "-t", table, "-F", chain)
    for tool, table, chain in chains:
        _run(tool, "-w", "-t", table, "-X", chain)


def _undo_host_changes(rec: dict[str, Any]) -> None:
    """The host-wide part of a cleanup, for a node the record says ran here."""
    for ns in _netns():
        ns.unlink(missing_ok=True)
    if _bridge_exists():
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    _drop_chains()
    IP_FORWARD.write_text(rec["ip_forward"] + "\n")
    for d in _cgroups():
        with contextlib.suppress(OSError):
            d.rmdir()
    for d in HOST_DIRS:
        if d.exists() and str(d) not in rec["existing"]:
            subprocess.run(["rm", "-rf", "--one-file-system", str(d)], capture_output=True, check=False)


def cleanup(roots: Iterable[str] = (), grace: float = 10.0) -> list[str]:
    """Undo a real node's host changes (idempotent); return what :func:`footprint` still finds.

    Without a record only the processes and mounts under ``roots`` are removed (see the module docstring).
    """
    rec = load_record()
    roots = sorted({*roots, *([rec["root"]] if rec else [])})
    procs = running_components(roots)
    by_role = {name: [p for p, cmd in procs if Path(cmd.split()[0]).name == name] for name in COMPONENTS}
    terminate(by_role["kube-proxy"] + by_role["kubelet"], grace)
    if rec:
        terminate(_cgroup_pids(), 0.0)
    terminate(by_role["containerd-shim-runc-v2"] + by_role["containerd"], grace)
    if rec:
        terminate(_cgroup_pids(), 0.0)  # anything a dying shim started last
    for point in _mounts(roots, netns=rec is not None):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if rec is None:
        return [f"process {pid}: {cmd}" for pid, cmd in running_components(roots)] + [
            f"mount {m}" for m in _mounts(roots, netns=False)]
    _undo_host_changes(rec)
    left = [line for line in footprint(roots, rec) if not line.startswith("record ")]
    if not left:  # keep the record while something is left: a later --force still knows the host's state
        record_path().unlink(missing_ok=True)
    return left
