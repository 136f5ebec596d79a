"""Command lines, health endpoints and config files of the control-plane components (pure functions).

Every component binds 127.0.0.1 on a port chosen at start; the serving certificate from :mod:`pki` is
shared by all TLS endpoints. Start order is the order of :func:`components`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tritonops.devcluster.pki import PROXY_CLIENT, Pki

LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"  # virtual: never routed, only allocated by the apiserver
POD_CIDR = "10.244.0.0/16"  # virtual: kwok writes these into pod status, nothing listens there
NODE_LEASE_SECONDS = 40  # kwok renews node leases; this pairs with the node-heartbeat-with-lease stage
STAGES = ("node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete", "pod-delete")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# kwok applies its defaults only when no KwokConfiguration document is given, so spell them out
# (values of kwok v0.8.0's SetObjectDefaults_KwokConfiguration; the command-line flags override these).
KWOK_OPTIONS: dict[str, Any] = {
    "nodeLeaseDurationSeconds": NODE_LEASE_SECONDS,
    "manageAllNodes": False,
    "podPlayStageParallelism": 4,
    "nodePlayStageParallelism": 4,
    "nodeLeaseParallelism": 4,
    "podsOnNodeSyncParallelism": 1,
    "enablePodsOnNodeSyncListPager": True,
    "enablePodsOnNodeSyncStreamWatch": False,
    "enableDebuggingHandlers": True,
    "enableProfilingHandler": False,
    "enableContentionProfiling": False,
}


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one cluster."""

    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.apiserver}"


@dataclass(frozen=True)
class Layout:
    """Where a cluster keeps its files under its state directory."""

    root: Path

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd-data"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    @property
    def state(self) -> Path:
        return self.root / "cluster.json"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


@dataclass(frozen=True)
class Component:
    """One process to run: its argv and the URL that answers 200 once it is ready."""

    name: str
    argv: list[str]
    health_url: str


def _etcd(bins: Path, lay: Layout, ports: Ports) -> Component:
    client, peer = f"http://{LOOPBACK}:{ports.etcd}", f"http://{LOOPBACK}:{ports.etcd_peer}"
    return Component("etcd", [
        str(bins / "etcd"), "--name=node0", f"--data-dir={lay.etcd_data}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=node0={peer}",
        "--auto-compaction-retention=1", "--quota-backend-bytes=4294967296", "--unsafe-no-fsync=true",
    ], f"{client}/health")


def _apiserver(bins: Path, lay: Layout, ports: Ports) -> Component:
    p = lay.pki
    return Component("kube-apiserver", [
        str(bins / "kube-apiserver"), f"--etcd-servers=http://{LOOPBACK}:{ports.etcd}",
        f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}", f"--secure-port={ports.apiserver}",
        "--endpoint-reconciler-type=none", f"--cert-dir={p.dir}",
        f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
        f"--client-ca-file={p.ca_cert}", f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={p.sa_pub}", f"--service-account-signing-key-file={p.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
        "--allow-privileged=true", "--profiling=false",
        # aggregation layer (also gives KCM/scheduler the request-header CA they look up at start)
        f"--requestheader-client-ca-file={p.ca_cert}", f"--requestheader-allowed-names={PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={p.proxy_client_cert}", f"--proxy-client-key-file={p.proxy_client_key}",
        # logs/exec/port-forward on real nodes: reach the kubelet at the node's InternalIP (the bridge
        # address; no name resolution needed) as a client the kubelet's webhook authorizer accepts
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={p.admin_cert}", f"--kubelet-client-key={p.admin_key}",
    ], f"{ports.server}/readyz")


def _secure_common(lay: Layout, port: int) -> list[str]:
    """Flags kube-controller-manager and kube-scheduler share: client config and their own endpoint."""
    kc, p = lay.kubeconfig, lay.pki
    return [
        f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        f"--bind-address={LOOPBACK}", f"--secure-port={port}",
        f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
        "--leader-elect=false", "--profiling=false",
    ]


def _controller_manager(bins: Path, lay: Layout, ports: Ports) -> Component:
    p = lay.pki
    return Component("kube-controller-manager", [
        str(bins / "kube-controller-manager"), *_secure_common(lay, ports.controller_manager),
        f"--root-ca-file={p.ca_cert}", f"--service-account-private-key-file={p.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--controllers=*",
    ], f"https://{LOOPBACK}:{ports.controller_manager}/healthz")


def _scheduler(bins: Path, lay: Layout, ports: Ports) -> Component:
    return Component("kube-scheduler", [
        str(bins / "kube-scheduler"), *_secure_common(lay, ports.scheduler),
    ], f"https://{LOOPBACK}:{ports.scheduler}/healthz")


def _kwok(bins: Path, lay: Layout, ports: Ports) -> Component:
    p = lay.pki
    return Component("kwok", [
        str(bins / "kwok"), f"--kubeconfig={lay.kubeconfig}", f"--config={lay.kwok_config}",
        "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--cidr={POD_CIDR}", f"--node-ip={LOOPBACK}", "--node-name=kwok-controller",
        f"--node-port={ports.kwok}", f"--server-address={LOOPBACK}:{ports.kwok}",
        f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
    ], f"http://{LOOPBACK}:{ports.kwok}/healthz")


def components(bins: Path, lay: Layout, ports: Ports) -> list[Component]:
    """All components in start order (stop in reverse)."""
    return [f(bins, lay, ports) for f in (_etcd, _apiserver, _controller_manager, _scheduler, _kwok)]


def kwok_config(stages_dir: Path, pod_ready_delay_ms: int = 300) -> str:
    """The ``kwok --config`` file: a KwokConfiguration plus the five default Stages.

    kwok v0.8 has no built-in stages. ``pod-ready`` gets a delay so pods are observably Pending (scheduled,
    not yet Running) for a moment, like with a real kubelet.
    """
    docs: list[dict[str, Any]] = [{
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
        "options": KWOK_OPTIONS,
    }]
    for name in STAGES:
        path = stages_dir / f"{name}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"kwok stage {path} is missing (hack/build-control-plane.sh copies them)")
        stage: dict[str, Any] = yaml.safe_load(path.read_text())
        if stage.get("kind") != "Stage" or stage.get("metadata", {}).get("name") != name:
            raise ValueError(f"{path} is not the kwok Stage {name!r}")
        if name == "pod-ready" and pod_ready_delay_ms > 0:
            stage["spec"]["delay"] = {"durationMilliseconds": pod_ready_delay_ms}
        docs.append(stage)
    return yaml.safe_dump_all(docs, sort_keys=False)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(pki: Pki, server: str, name: str, user: tuple[Path, Path] | None = None) -> str:
    """A kubeconfig with the certificates embedded (works from any directory, for any client).

    ``user`` is a (certificate, key) pair of another client identity; the admin's by default.
    """
    ctx = f"tritonops-{name}"
    cert, key = user or (pki.admin_cert, pki.admin_key)
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": ctx, "preferences": {},
        "clusters": [{"name": ctx, "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_cert)}}],
        "users": [{"name": f"{ctx}-user", "user": {"client-certificate-data": _b64(cert),
                                                   "client-key-data": _b64(key)}}],
        "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": f"{ctx}-user"}}],
    }
    return yaml.safe_dump(doc, sort_keys=False)
