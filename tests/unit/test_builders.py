"""Builders: golden YAML of every rendered child, plus the properties that must hold for any spec."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Golden
from tests.factories import model_deployment, with_spec
from tritonops.builders.configmap import build_config_map
from tritonops.builders.deployment import BuildOptions, build_deployment, requests_gpu
from tritonops.builders.meta import Owner, revision_of
from tritonops.builders.service import build_service
from tritonops.validate import render_model_config
from tritonops_runtime.contract import CREDENTIAL_ENV_KEYS

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
OPTS = BuildOptions(runtime_image="ghcr.io/tritonops/tritonops-runtime:0.1.0")

CASES: dict[str, Any] = {
    "gpu-torchscript": model_deployment(),
    "cpu-wrapper-pvc": model_deployment(
        with_spec("model", {"name": "fraud", "storageUri": "pvc://models/fraud/v3.tar.gz", "version": 3,
                            "format": "onnx", "credentials": {"secretName": "store-creds"},
                            "digest": "sha256:" + "ab" * 32,
                            "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [-1, 8]}],
                            "outputs": [{"name": "y", "dataType": "TYPE_INT64", "dims": [1]}]}),
        with_spec("runtime.triton", {"backend": "PythonWrapper", "maxBatchSize": 0,
                                     "instanceGroups": [{"kind": "KIND_CPU", "count": 2}]}),
        with_spec("resources", {"limits": {"cpu": "2", "memory": "2Gi"}}),
        with_spec("nodeSelector", {"pool": "cpu"}),
        with_spec("tolerations", [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]),
        with_spec("runtime.args", ["--log-verbose=1"]),
        with_spec("replicas", 1),
        name="fraud",
    ),
}


def render_children(md: dict[str, Any]) -> list[dict[str, Any]]:
    meta = md["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    rev = revision_of(meta["name"], md["spec"], OPTS.runtime_image)
    return [build_service(owner), build_config_map(owner, rev, render_model_config(md["spec"])),
            build_deployment(owner, rev, md["spec"], md["spec"].get("replicas", 1), OPTS)]


class _Dumper(yaml.SafeDumper):
    """Readable golden files: no anchors, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _str)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, golden: Golden) -> None:
    golden(GOLDEN / f"{case}.yaml", yaml.dump_all(render_children(CASES[case]), Dumper=_Dumper, sort_keys=True))


@pytest.mark.parametrize("case", sorted(CASES))
def test_children_are_owned_labelled_and_deterministic(case: str) -> None:
    first, second = render_children(CASES[case]), render_children(CASES[case])
    assert first == second
    for obj in first:
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["kind"] == "ModelDeployment" and ref["controller"] is True
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tritonops"
        assert len(obj["metadata"]["name"]) <= 63


@pytest.mark.parametrize("case", sorted(CASES))
def test_pod_passes_restricted_pod_security(case: str) -> None:
    dep = render_children(CASES[case])[2]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["initContainers"] + pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert not any("hostPath" in v for v in pod["volumes"])


def test_gpu_pods_tolerate_the_gpu_taint_and_cpu_pods_do_not() -> None:
    gpu = render_children(CASES["gpu-torchscript"])[2]["spec"]["template"]["spec"]
    cpu = render_children(CASES["cpu-wrapper-pvc"])[2]["spec"]["template"]["spec"]
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert gpu_toleration in gpu["tolerations"]
    assert gpu_toleration not in cpu["tolerations"]
    assert requests_gpu(CASES["gpu-torchscript"]["spec"]) and not requests_gpu(CASES["cpu-wrapper-pvc"]["spec"])


def test_triton_args_pin_the_pod_contract() -> None:
    triton = render_children(CASES["cpu-wrapper-pvc"])[2]["spec"]["template"]["spec"]["containers"][0]
    assert triton["args"][:3] == ["--model-repository=/models", "--model-control-mode=none",
                                  "--strict-readiness=true"]
    assert triton["args"][-1] == "--log-verbose=1"
    assert triton["startupProbe"]["failureThreshold"] * triton["startupProbe"]["periodSeconds"] >= 600
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_revision_ignores_replicas_and_lifecycle_but_not_the_model() -> None:
    base = model_deployment()["spec"]
    same = model_deployment(with_spec("replicas", 9), with_spec("rollout.paused", True))["spec"]
    other = model_deployment(with_spec("model.version", 2))["spec"]
    assert revision_of("clf", base, "x") == revision_of("clf", same, "x")
    assert revision_of("clf", base, "x") != revision_of("clf", other, "x")
    assert revision_of("clf", base, "x") != revision_of("clf", base, "y")


def test_the_fetcher_gets_only_the_credential_keys_it_reads_and_a_bounded_disk() -> None:
    md = copy.deepcopy(CASES["cpu-wrapper-pvc"])
    md["spec"]["model"]["maxSize"] = "2Gi"
    dep = render_children(md)[2]
    pod = dep["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert "envFrom" not in fetch
    refs = [e for e in fetch["env"] if "valueFrom" in e]
    assert [e["name"] for e in refs] == list(CREDENTIAL_ENV_KEYS)
    assert all(e["valueFrom"]["secretKeyRef"] == {"name": "store-creds", "key": e["name"], "optional": True}
               for e in refs)
    assert {"name": "TRITONOPS_MAX_BYTES", "value": str(2 * 1024**3)} in fetch["env"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["emptyDir"] == {"sizeLimit": "2Gi"} == volumes["scratch"]["emptyDir"]
    assert fetch["resources"]["requests"]["ephemeral-storage"] == str(4 * 1024**3)  # archive + unpacked
    assert pod["containers"][0]["resources"]["requests"]["ephemeral-storage"] == str(2 * 1024**3)
    default = render_children(CASES["gpu-torchscript"])[2]["spec"]["template"]["spec"]
    assert "ephemeral-storage" not in default["containers"][0]["resources"].get("requests", {})  # unset: no request
    assert {v["name"]: v for v in default["volumes"]}["models"]["emptyDir"] == {"sizeLimit": "20Gi"}
