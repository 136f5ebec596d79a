"""Configuration files of a real node (pure functions): containerd, CNI, kubelet and kube-proxy.

A real node runs real containers beside the KWOK nodes: Debian's containerd 1.6 and runc, the CNI bridge
plugin, and kubelet and kube-proxy built from the same ``k8s.io/kubernetes`` module as the control plane.
Each setting below that differs from upstream defaults is there because this kind of machine needs it
(a cgroup v1 kernel, root without ``CAP_SYS_RESOURCE``, no registry, a closed network); the reason stands
next to it. Everything the node writes lives under its directory (:class:`NodeLayout`), except what the
kubelet and containerd hard-code (see :mod:`tritonops.devcluster.hostclean`).

Network: pods get addresses on the bridge :data:`BRIDGE` (:data:`POD_SUBNET`, gateway :data:`GATEWAY`).
They have no default route, only the pod subnet and a route to the Service range through the gateway, so
a pod can reach other pods, Services and what listens on the gateway address, and nothing beyond.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tritonops.devcluster.components import LOOPBACK, SERVICE_CIDR

BRIDGE = "tritonops0"
POD_SUBNET = "10.250.0.0/24"
GATEWAY = "10.250.0.1"  # the host's address on the bridge: host-side servers for pods listen here
KUBELET_PORT = 10250  # fixed: the API server reaches every node's kubelet on this port
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
REAL_NODE_LABEL = "tritonops.io/real-node"
NODE_TYPE = "real"  # the ``type`` label (KWOK nodes carry ``type=kwok``)
# Only pods that ask for the real node run there: the rest of the cluster (KWOK) keeps its fake pods,
# whose images exist nowhere.
REAL_NODE_TAINT = {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
REAL_NODE_TOLERATION = {"key": REAL_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
# containerd's environment: every registry request goes to a closed loopback port, so an image that was
# not imported fails at once (ErrImagePull) instead of looking up a registry off this machine.
CONTAINERD_ENV = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
                  "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


@dataclass(frozen=True)
class NodeLayout:
    """Where a real node keeps its files (``<cluster state>/node``)."""

    root: Path
    name: str = "real-0"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def proxy_kubeconfig(self) -> Path:
        return self.root / "kube-proxy.kubeconfig"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def state(self) -> Path:
        return self.root / "node.json"


def containerd_toml(lay: NodeLayout, sandbox_image: str) -> str:
    """containerd 1.6 configuration (version 2 format)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        f'root = "{lay.containerd_root / "root"}"',
        f'state = "{lay.containerd_root / "state"}"',
        'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
        ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]',
        "[grpc]",
        f'  address = "{lay.containerd_socket}"',
        "[ttrpc]",
        f'  address = "{lay.containerd_socket}.ttrpc"',
        '[plugins."io.containerd.internal.v1.opt"]',
        f'  path = "{lay.containerd_root / "opt"}"',
        f"[{cri}]",
        # No registry here: the sandbox image is built locally and imported (tritonops.devcluster.images).
        f'  sandbox_image = "{sandbox_image}"',
        # root here lacks CAP_SYS_RESOURCE: without this runc fails every sandbox with
        # "can't get final child's PID from pipe: EOF" (it cannot lower oom_score_adj below its own).
        "  restrict_oom_score_adj = true",
        "  enable_selinux = false",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        "  SystemdCgroup = false",  # no systemd here: the cgroupfs driver, same as the kubelet's
        f"[{cri}.cni]",
        f'  bin_dir = "{CNI_BIN_DIR}"',
        f'  conf_dir = "{lay.cni_conf_dir}"',
        "  max_conf_num = 1",
        "",
    ])


def cni_conflist(lay: NodeLayout) -> str:
    """The pod network: one bridge, host-local addresses, no default route, no masquerading."""
    doc = {
        "cniVersion": "0.4.0", "name": "tritonops",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "isDefaultGateway": False,
             "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(lay.root / "cni-ipam"),
                      "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                      # only Services beyond the bridge: pods have no route off this machine
                      "routes": [{"dst": SERVICE_CIDR}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def bridge_commands() -> list[list[str]]:
    """Create the pod bridge with the gateway address up front (the bridge plugin adopts it), so servers on
    the host that pods call (the test S3 server, for one) can listen on :data:`GATEWAY` before any pod runs."""
    prefix = POD_SUBNET.split("/")[1]
    return [["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"]]


def kubelet_config(lay: NodeLayout, ca_file: Path, healthz_port: int) -> str:
    """KubeletConfiguration: bridge address and loopback only, cgroupfs on cgroup v1, no image GC."""
    doc: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # The kubelet refuses a loopback node IP (no InternalIP, so no logs/exec): it serves on the bridge
        # address, which the host creates before the kubelet starts (:func:`bridge_commands`).
        "address": GATEWAY, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": LOOPBACK, "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{lay.containerd_socket}",
        # The machine mounts cgroup v1 and runs no systemd; kubelet >= 1.35 refuses v1 unless told.
        "cgroupDriver": "cgroupfs", "failCgroupV1": False,
        "failSwapOn": False,
        "resolvConf": str(lay.resolv_conf),  # no cluster DNS; never hand pods the host's resolvers
        "clusterDomain": "cluster.local",
        # Imported images cannot be pulled again: never garbage-collect them, never evict for disk.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "serializeImagePulls": False,
        "maxPods": 110,
        "registerWithTaints": [REAL_NODE_TAINT],
        "syncFrequency": "10s", "fileCheckFrequency": "10s",
        "nodeStatusReportFrequency": "10s",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kube_proxy_config(lay: NodeLayout, healthz_port: int, metrics_port: int) -> str:
    """KubeProxyConfiguration: iptables mode, masquerade all Service traffic, change no sysctl."""
    doc: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(lay.proxy_kubeconfig)},
        "hostnameOverride": lay.name,
        "bindAddress": LOOPBACK,
        "healthzBindAddress": f"{LOOPBACK}:{healthz_port}",
        "metricsBindAddress": f"{LOOPBACK}:{metrics_port}",
        "clusterCIDR": POD_SUBNET,
        # NodePorts only on the bridge address; not on loopback (that needs the route_localnet sysctl).
        "nodePortAddresses": [f"{GATEWAY}/32"],
        # Pod -> Service -> pod on the same bridge returns through the host only when masqueraded
        # (otherwise it needs br_netfilter's bridge-nf-call-iptables, a host sysctl).
        "iptables": {"masqueradeAll": True, "localhostNodePorts": False,
                     "syncPeriod": "30s", "minSyncPeriod": "0s"},
        # 0 = leave the host's conntrack sysctls alone
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kubelet_argv(kubelet: Path, lay: NodeLayout, labels: dict[str, str]) -> list[str]:
    """The kubelet command line (everything else is in its config file)."""
    return [
        str(kubelet), f"--config={lay.kubelet_config}", f"--kubeconfig={lay.kubelet_kubeconfig}",
        f"--root-dir={lay.kubelet_root}",
        # kubelet writes its self-signed serving cert here: keep it apart from its client cert.
        f"--cert-dir={lay.root / 'kubelet-serving'}",
        f"--hostname-override={lay.name}", f"--node-ip={GATEWAY}",
        "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "--v=1",
    ]


def kube_proxy_argv(proxy: Path, lay: NodeLayout) -> list[str]:
    return [str(proxy), f"--config={lay.proxy_config}", "--v=1"]


def node_labels() -> dict[str, str]:
    """Labels a ModelDeployment selects real nodes by (``nodeSelector: {tritonops.io/real-node: "true"}``)."""
    return {REAL_NODE_LABEL: "true", "type": NODE_TYPE}
