"""The real node's configuration files (pure): each setting this machine needs, and the CLI around it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from tritonops.devcluster import cli, nodeconf
from tritonops.devcluster.components import LOOPBACK, SERVICE_CIDR
from tritonops.devcluster.images import TRITON_IMAGE
from tritonops.devcluster.nodeconf import NodeLayout

ROOT = Path(__file__).resolve().parents[2]
LAY = NodeLayout(Path("/state/dev/node"))


def test_containerd_runs_without_cap_sys_resource_and_keeps_its_state_under_the_node() -> None:
    doc = tomllib.loads(nodeconf.containerd_toml(LAY, "localhost/tritonops/pause:x"))
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == "localhost/tritonops/pause:x"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == str(LAY.cni_conf_dir)
    for path in (doc["root"], doc["state"], doc["grpc"]["address"]):
        assert path.startswith(str(LAY.root))


def test_pods_get_no_default_route_and_no_masquerading() -> None:
    doc = json.loads(nodeconf.cni_conflist(LAY))
    bridge = doc["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["bridge"] == nodeconf.BRIDGE
    assert bridge["isDefaultGateway"] is False and bridge["ipMasq"] is False
    assert bridge["ipam"]["routes"] == [{"dst": SERVICE_CIDR}]
    assert bridge["ipam"]["dataDir"].startswith(str(LAY.root))


def test_kubelet_runs_on_cgroup_v1_on_loopback_and_never_collects_imported_images() -> None:
    doc = yaml.safe_load(nodeconf.kubelet_config(LAY, Path("/pki/ca.crt"), 12345))
    assert (doc["cgroupDriver"], doc["failCgroupV1"]) == ("cgroupfs", False)
    assert doc["address"] == nodeconf.GATEWAY and doc["healthzBindAddress"] == LOOPBACK and doc["readOnlyPort"] == 0
    assert doc["authentication"]["anonymous"]["enabled"] is False
    assert doc["imageGCHighThresholdPercent"] == 100
    assert doc["resolvConf"] == str(LAY.resolv_conf)
    argv = nodeconf.kubelet_argv(Path("/bin/kubelet"), LAY, nodeconf.node_labels())
    assert f"--node-ip={nodeconf.GATEWAY}" in argv  # the kubelet refuses a loopback node IP
    assert "--node-labels=tritonops.io/real-node=true,type=real" in argv
    cert_dir = next(a for a in argv if a.startswith("--cert-dir="))
    assert cert_dir != f"--cert-dir={LAY.pki}"  # the kubelet would take its client cert as serving cert


def test_kube_proxy_changes_no_sysctl() -> None:
    doc = yaml.safe_load(nodeconf.kube_proxy_config(LAY, 1, 2))
    assert doc["mode"] == "iptables"
    assert doc["iptables"]["masqueradeAll"] is True and doc["iptables"]["localhostNodePorts"] is False
    assert set(doc["conntrack"].values()) <= {0, "0s"}
    assert doc["nodePortAddresses"] == [f"{nodeconf.GATEWAY}/32"]


def test_bridge_is_created_with_the_gateway_address() -> None:
    cmds = nodeconf.bridge_commands()
    assert ["ip", "addr", "add", f"{nodeconf.GATEWAY}/24", "dev", nodeconf.BRIDGE] in cmds


@pytest.mark.parametrize("value", ["2", "-1"])
def test_one_real_node_per_machine(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["up", "--real-nodes", value])
    assert "one real node per machine" in capsys.readouterr().err


def test_down_force_is_a_flag_of_down() -> None:
    assert cli.parser().parse_args(["down", "--force"]).force is True
    assert cli.parser().parse_args(["up", "--real-nodes", "1"]).real_nodes == 1


def test_local_example_runs_the_local_triton_image_on_the_real_node() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "local-classifier.yaml").read_text())
    assert doc["spec"]["runtime"]["image"] == TRITON_IMAGE
    assert doc["spec"]["nodeSelector"] == {nodeconf.REAL_NODE_LABEL: "true"}
    assert doc["spec"]["tolerations"] == [nodeconf.REAL_NODE_TOLERATION]


def test_only_pods_that_ask_run_on_the_real_node_and_nothing_is_pulled_from_off_the_machine() -> None:
    doc = yaml.safe_load(nodeconf.kubelet_config(LAY, Path("/pki/ca.crt"), 12345))
    assert doc["registerWithTaints"] == [nodeconf.REAL_NODE_TAINT]
    proxies = {v for k, v in nodeconf.CONTAINERD_ENV.items() if "proxy" in k.lower() and "no" not in k.lower()}
    assert proxies == {"http://127.0.0.1:9"}
