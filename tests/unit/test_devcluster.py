"""Pure parts of ``tritonops.devcluster``: PKI, component command lines, kwok config, node manifests, CLI."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tritonops.devcluster import cli
from tritonops.devcluster.components import STAGES, Layout, Ports, components, kubeconfig, kwok_config
from tritonops.devcluster.launcher import ControlPlane, free_ports, tail
from tritonops.devcluster.nodes import NodePool, node_manifest, pool_manifests
from tritonops.devcluster.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_is_complete_and_private_keys_are_private(pki: Pki) -> None:
    assert pki.complete()
    for key in (pki.ca_key, pki.serving_key, pki.admin_key, pki.proxy_client_key, pki.sa_key):
        assert key.stat().st_mode & 0o077 == 0


def test_leaf_certificates_are_signed_by_the_ca(pki: Pki) -> None:
    ca = _cert(pki.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for path in (pki.serving_cert, pki.admin_cert, pki.proxy_client_cert):
        leaf = _cert(path)
        leaf.verify_directly_issued_by(ca)
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_serving_certificate_covers_loopback_and_the_kubernetes_service(pki: Pki) -> None:
    cert = _cert(pki.serving_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} <= set(
        san.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_admin_client_is_in_system_masters(pki: Pki) -> None:
    cert = _cert(pki.admin_cert)
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_service_account_public_key_matches_the_signing_key(pki: Pki) -> None:
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(pki.sa_key.read_bytes(), password=None)
    public = serialization.load_pem_public_key(pki.sa_pub.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(public, ec.EllipticCurvePublicKey)
    assert private.public_key().public_numbers() == public.public_numbers()


PORTS = Ports(etcd=2001, etcd_peer=2002, apiserver=2003, controller_manager=2004, scheduler=2005, kwok=2006)


def test_components_start_in_order_and_listen_on_loopback_only(tmp_path: Path) -> None:
    comps = components(Path("/bins"), Layout(tmp_path), PORTS)
    assert [c.name for c in comps] == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                      "kwok"]
    for comp in comps:
        text = " ".join(comp.argv)
        assert comp.argv[0] == f"/bins/{comp.name}"
        assert "0.0.0.0" not in text and "localhost" not in text
        assert comp.health_url.startswith(("http://127.0.0.1:", "https://127.0.0.1:"))
    api = comps[1].argv
    for flag in ("--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none", "--authorization-mode=Node,RBAC",
                 "--bind-address=127.0.0.1", "--secure-port=2003"):
        assert flag in api
    assert not any(a.startswith(("--disable-admission-plugins", "--admission-control")) for a in api)
    for comp in comps[2:4]:
        assert "--leader-elect=false" in comp.argv


def _stages(tmp_path: Path) -> Path:
    for name in STAGES:
        doc = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
               "spec": {"next": {"statusTemplate": "phase: Running\n"}}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


def test_kwok_config_has_explicit_options_and_the_five_stages(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(kwok_config(_stages(tmp_path), pod_ready_delay_ms=250)))
    assert docs[0]["kind"] == "KwokConfiguration"
    assert docs[0]["options"]["nodeLeaseDurationSeconds"] > 0  # pairs with node-heartbeat-with-lease
    assert docs[0]["options"]["podPlayStageParallelism"] > 0
    assert [d["metadata"]["name"] for d in docs[1:]] == list(STAGES)
    ready = next(d for d in docs[1:] if d["metadata"]["name"] == "pod-ready")
    assert ready["spec"]["delay"] == {"durationMilliseconds": 250}
    assert ready["spec"]["next"]["statusTemplate"] == "phase: Running\n"


def test_kwok_config_refuses_a_missing_stage(tmp_path: Path) -> None:
    (_stages(tmp_path) / "pod-delete.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="pod-delete"):
        kwok_config(tmp_path)


def test_kubeconfig_embeds_the_credentials(pki: Pki) -> None:
    doc = yaml.safe_load(kubeconfig(pki, "https://127.0.0.1:2003", "dev"))
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:2003"
    assert doc["clusters"][0]["cluster"]["certificate-authority-data"]
    assert {"client-certificate-data", "client-key-data"} <= set(doc["users"][0]["user"])
    assert doc["current-context"] == "tritonops-dev"


def test_gpu_node_manifest_has_capacity_labels_and_taint() -> None:
    node = node_manifest("g", gpus=4)
    assert node["status"]["capacity"]["nvidia.com/gpu"] == node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.present"] == "true"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    assert labels["nvidia.com/gpu.count"] == "4"
    assert node["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}


def test_cpu_node_manifest_has_no_gpu_and_no_taint() -> None:
    node = node_manifest("c")
    assert "nvidia.com/gpu" not in node["status"]["capacity"]
    assert node["spec"] == {}
    assert not any(k.startswith("nvidia.com/") for k in node["metadata"]["labels"])


def test_node_pool_names_and_validation() -> None:
    names = [m["metadata"]["name"] for m in pool_manifests(NodePool(cpu_nodes=1, gpu_nodes=2, gpus_per_node=8))]
    assert names == ["kwok-cpu-0", "kwok-gpu-0", "kwok-gpu-1"]
    with pytest.raises(ValueError, match="between 1 and 8"):
        NodePool(gpu_nodes=1, gpus_per_node=9)


def test_free_ports_are_distinct() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6 and all(p > 0 for p in ports)


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert tail(log, 3) == "line 997\nline 998\nline 999"
    assert tail(tmp_path / "missing.log") == ""


def test_control_plane_never_claims_a_foreign_pid(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path, Path("/bins"))
    cp.pids, cp.argv0 = {"etcd": os.getpid()}, {"etcd": "/bins/etcd"}
    assert not cp.alive("etcd")
    assert ControlPlane.load(tmp_path / "nothing") is None


def test_cli_without_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cli.HOME_ENV, str(tmp_path))
    assert cli.run(["kubeconfig"]) == 1
    assert cli.run(["dev", "status", "--name", "other"]) == 1
    assert cli.run(["down"]) == 0
    assert "no cluster named 'dev'" in capsys.readouterr().out


def test_cli_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        cli.run(["up", "--name", "Bad/Name"])
    with pytest.raises(SystemExit):
        cli.run(["up", "--gpus-per-node", "9"])
