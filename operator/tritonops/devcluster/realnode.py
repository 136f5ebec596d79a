"""A real node beside the KWOK ones: containerd, kubelet and kube-proxy running real pods on this machine.

:class:`RealNode` writes the node's configuration (:mod:`tritonops.devcluster.nodeconf`) and client
certificates under ``<cluster state>/node``, records the host's state (:func:`hostclean.record`), starts
containerd, imports the locally built images (:mod:`tritonops.devcluster.images`), starts the kubelet and
waits for its Node to be Ready, then starts kube-proxy and waits until it has programmed the Services.
:meth:`RealNode.stop` undoes every host change (:func:`hostclean.cleanup`). One real node per machine: the
kubelet's port and the ``/kubepods`` cgroups are host-wide.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import kubernetes

from tritonops.devcluster import hostclean, nodeconf
from tritonops.devcluster.components import kubeconfig
from tritonops.devcluster.images import PAUSE_IMAGE, Image, import_images
from tritonops.devcluster.launcher import ClusterError, ControlPlane, free_ports, owns, spawn, tail, wait_started
from tritonops.devcluster.nodeconf import NodeLayout
from tritonops.devcluster.nodes import node_is_ready
from tritonops.devcluster.pki import issue_client

CTR = "ctr"
COMPONENTS = ("containerd", "kubelet", "kube-proxy")


class RealNode:
    """The real node of one cluster (``<cluster state>/node``)."""

    def __init__(self, cp: ControlPlane, node_bins: Path, *, detach: bool = True, name: str = "real-0") -> None:
        self.cp = cp
        self.bins = node_bins
        self.detach = detach
        self.layout = NodeLayout(cp.layout.root / "node", name)
        self.pids: dict[str, int] = {}
        self.argv0: dict[str, str] = {}
        self._proxy_healthz = 0

    @property
    def name(self) -> str:
        return self.layout.name

    @classmethod
    def load(cls, cp: ControlPlane) -> RealNode | None:
        """The node recorded under ``cp``'s state directory, or None."""
        lay = NodeLayout(cp.layout.root / "node")
        try:
            data = json.loads(lay.state.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        node = cls(cp, Path(data["bins"]), name=data["name"])
        node.pids, node.argv0 = dict(data["pids"]), dict(data["argv0"])
        return node

    def _save(self) -> None:
        data = {"name": self.name, "bins": str(self.bins), "pids": self.pids, "argv0": self.argv0}
        self.layout.state.write_text(json.dumps(data, indent=2) + "\n")

    def alive(self, component: str) -> bool:
        pid = self.pids.get(component)
        return pid is not None and owns(pid, self.argv0.get(component, ""), self.layout.root)

    def status(self) -> dict[str, bool]:
        return {c: self.alive(c) for c in COMPONENTS}

    def log_tails(self, lines: int = 80) -> str:
        return "\n".join(f"---- {c} ({self.cp.layout.log(c)}) ----\n{tail(self.cp.layout.log(c), lines)}"
                         for c in COMPONENTS)

    # -- start ---------------------------------------------------------------------------------------

    def start(self, images: Sequence[Image], timeout: float = 180.0, log: Callable[[str], None] = print) -> None:
        """Start the node and wait until it is Ready and kube-proxy has synced; stop it again on failure."""
        self._claim_machine(log)
        hostclean.record(self.layout.root)
        try:
            deadline = time.monotonic() + timeout
            self._write_files()
            self._spawn("containerd", ["containerd", f"--config={self.layout.containerd_config}"],
                        nodeconf.CONTAINERD_ENV)
            self._wait("containerd", self._containerd_up, deadline)
            for cmd in nodeconf.bridge_commands():  # before any pod, so host servers can bind the gateway
                subprocess.run(cmd, check=True, capture_output=True, timeout=30)
            t0 = time.monotonic()
            import_images(CTR, str(self.layout.containerd_socket), images)
            log(f"imported {len(images)} images into the node's containerd in {time.monotonic() - t0:.1f}s")
            argv = nodeconf.kubelet_argv(self.bins / "kubelet", self.layout, nodeconf.node_labels())
            self._spawn("kubelet", argv)
            self._wait_node_ready(deadline)
            self._spawn("kube-proxy", nodeconf.kube_proxy_argv(self.bins / "kube-proxy", self.layout))
            self._wait("kube-proxy", lambda: _http_ok(f"http://127.0.0.1:{self._proxy_healthz}/healthz"),
                       deadline)
        except BaseException:
            self.stop()
            raise

    def import_images(self, images: Sequence[Image]) -> None:
        """Import ``images`` into the running node's containerd (skipping those there at the same digest): for
        images built on demand, e.g. :func:`tritonops.devcluster.retrain_image.import_retrain_image`."""
        import_images(CTR, str(self.layout.containerd_socket), images)

    def _claim_machine(self, log: Callable[[str], None]) -> None:
        """Refuse to start beside another live real node or another kubelet's state; clear what a crashed
        node of ours left behind (the machine record says one ran here)."""
        rec = hostclean.load_record()
        if rec and rec["root"] != str(self.layout.root) and hostclean.running_components([rec["root"]]):
            raise ClusterError(f"a real node already runs on this machine (state {rec['root']}); one real node "
                               "per machine: stop its cluster with `tritonops dev down` first")
        if rec:
            log(f"clearing what an earlier real node left on this machine (state {rec['root']})")
            if still := hostclean.cleanup([str(self.layout.root)]):
                raise ClusterError("could not clear an earlier real node's leftovers:\n  " + "\n  ".join(still))
        elif foreign := hostclean.foreign_state():
            raise ClusterError("this machine has another kubelet's, container runtime's or CNI plugin's state, "
                               "which a real node would collide with (one per machine); left alone:\n  "
                               + "\n  ".join(foreign[:10]))

    def _write_files(self) -> None:
        lay, pki = self.layout, self.cp.layout.pki
        for d in (lay.root, lay.cni_conf_dir, lay.kubelet_root, lay.pki):
            d.mkdir(parents=True, exist_ok=True)
        server = self.cp.ports.server if self.cp.ports else ""
        node_id = issue_client(pki, lay.pki, "kubelet", f"system:node:{lay.name}", ["system:nodes"])
        proxy_id = issue_client(pki, lay.pki, "kube-proxy", "system:kube-proxy")
        lay.kubelet_kubeconfig.write_text(kubeconfig(pki, server, self.cp.name, node_id))
        lay.proxy_kubeconfig.write_text(kubeconfig(pki, server, self.cp.name, proxy_id))
        healthz, self._proxy_healthz, metrics = free_ports(3)
        lay.containerd_config.write_text(nodeconf.containerd_toml(lay, PAUSE_IMAGE))
        (lay.cni_conf_dir / "10-tritonops.conflist").write_text(nodeconf.cni_conflist(lay))
        lay.kubelet_config.write_text(nodeconf.kubelet_config(lay, pki.ca_cert, healthz))
        lay.proxy_config.write_text(nodeconf.kube_proxy_config(lay, self._proxy_healthz, metrics))
        lay.resolv_conf.write_text("# the local cluster has no DNS server; pods use Service IPs\n")

    def _spawn(self, component: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        proc = spawn(argv, self.cp.layout.log(component), self.layout.root, detach=self.detach, env=env)
        self.pids[component] = proc.pid
        self.argv0[component] = argv[0]
        self._save()

    def _wait(self, component: str, ready: Callable[[], bool], deadline: float) -> None:
        wait_started(component, ready, lambda: self.alive(component), self.cp.layout.log(component), deadline)

    def _containerd_up(self) -> bool:
        proc = subprocess.run([CTR, "--address", str(self.layout.containerd_socket), "version"],
                              capture_output=True, check=False, timeout=30)
        return proc.returncode == 0

    def _wait_node_ready(self, deadline: float) -> None:
        """Until the Node is Ready without the not-ready taint; fails early if the kubelet exits."""
        api = kubernetes.config.new_client_from_config(config_file=str(self.cp.kubeconfig))  # type: ignore[no-untyped-call]
        try:
            core = kubernetes.client.CoreV1Api(api)
            self._wait("kubelet", lambda: _node_ready(core, self.name), deadline)
        finally:
            api.close()

    # -- stop ----------------------------------------------------------------------------------------

    def stop(self, grace: float = 10.0) -> list[str]:
        """Stop the node and undo its host changes; return what could not be undone (empty when clean)."""
        left = hostclean.cleanup([str(self.layout.root)], grace)
        self.pids.clear()
        if self.layout.root.is_dir():
            self._save()
        return left


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _node_ready(core: kubernetes.client.CoreV1Api, name: str) -> bool:
    try:
        return node_is_ready(core.read_node(name))
    except kubernetes.client.ApiException:
        return False
