"""The operator against a real API server, scheduler, controller-manager and KWOK nodes.

KWOK stands in for kubelets (no containers run: images and GPUs cannot exist here), so a pod becomes
Ready when the scheduler placed it; everything else — validation, scheduling on GPU capacity, garbage
collection, status semantics — is the real Kubernetes code.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.integration.support import (
    Api,
    OperatorProcess,
    assert_no_writes_while_idle,
    converged,
    gpu_node,
    kubectl,
    md_body,
    wait_until,
)

pytestmark = pytest.mark.cluster


def test_model_deployment_becomes_ready_on_gpu_nodes(api: Api, operator: OperatorProcess, namespace: str,
                                                    cluster: Any) -> None:
    api.create_md(namespace, md_body("clf", replicas=2))
    md = wait_until("clf Ready", lambda: converged(api, namespace, "clf"), timeout=90)
    rev = md["status"]["stableRevision"]
    dep = api.apps.read_namespaced_deployment(rev, namespace)
    svc = api.core.read_namespaced_service("clf", namespace)
    cm = api.core.read_namespaced_config_map(f"{rev}-config", namespace)
    for obj in (dep, svc, cm):
        (ref,) = obj.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller) == ("ModelDeployment", "clf", md["metadata"]["uid"], True)
    assert "max_batch_size: 8" in cm.data["config.pbtxt"]
    assert md["status"]["phase"] == "Ready" and md["status"]["readyReplicas"] == 2
    pods = api.core.list_namespaced_pod(namespace, label_selector=f"tritonops.io/revision={rev}").items
    assert len(pods) == 2
    for pod in pods:
        node = api.core.read_node(pod.spec.node_name)
        assert int(node.status.allocatable.get("nvidia.com/gpu", "0")) > 0, pod.spec.node_name
    out = kubectl(cluster, "get", "md", "clf", "-n", namespace).stdout.split("\n")
    assert out[0].split() == ["NAME", "READY", "MODEL", "STABLE", "CANARY", "WEIGHT", "PHASE", "DRIFT", "RETRAINING",
                              "AGE"]
    assert out[1].split()[:5] == ["clf", "True", "clf", rev, "Ready"]


def test_unchanged_spec_makes_zero_writes(api: Api, operator: OperatorProcess, namespace: str) -> None:
    api.create_md(namespace, md_body("quiet"))
    wait_until("quiet Ready", lambda: converged(api, namespace, "quiet"), timeout=90)
    assert_no_writes_while_idle(operator)


def test_model_change_rolls_a_new_revision(api: Api, operator: OperatorProcess, namespace: str) -> None:
    api.create_md(namespace, md_body("roll"))
    old = wait_until("Ready", lambda: converged(api, namespace, "roll"), timeout=90)["status"]["stableRevision"]
    api.patch_md(namespace, "roll", {"spec": {"model": {"version": 2}}})
    md = wait_until("new revision stable", lambda: (m := converged(api, namespace, "roll"))
                    and m["status"]["stableRevision"] != old and m, timeout=90)
    new = md["status"]["stableRevision"]
    wait_until("old revision removed", lambda: [d.metadata.name for d in api.deployments(namespace, "roll")] == [new])
    assert [h["outcome"] for h in md["status"]["history"]] == ["Superseded", "Promoted"]


def test_hand_edit_of_an_owned_field_is_reverted(api: Api, operator: OperatorProcess, namespace: str) -> None:
    api.create_md(namespace, md_body("edited"))
    rev = wait_until("Ready", lambda: converged(api, namespace, "edited"), timeout=90)["status"]["stableRevision"]
    api.apps.patch_namespaced_deployment(rev, namespace, {"spec": {"template": {"metadata": {
        "annotations": {"prometheus.io/port": "9999"}}}}})
    wait_until("annotation reverted", lambda: api.apps.read_namespaced_deployment(rev, namespace)
               .spec.template.metadata.annotations["prometheus.io/port"] == "8002", timeout=30)
    api.core.patch_namespaced_service("edited", namespace, {"spec": {"ports": [
        {"name": "http", "port": 8000, "targetPort": 9000}]}})
    wait_until("service port reverted", lambda: next(p for p in api.core.read_namespaced_service(
        "edited", namespace).spec.ports if p.name == "http").target_port == "http", timeout=30)


def test_delete_garbage_collects_children(api: Api, operator: OperatorProcess, namespace: str) -> None:
    api.create_md(namespace, md_body("gone"))
    wait_until("Ready", lambda: converged(api, namespace, "gone"), timeout=90)
    api.delete_md(namespace, "gone")
    wait_until("children collected", lambda: not api.deployments(namespace, "gone") and not
               api.core.list_namespaced_service(namespace, label_selector="tritonops.io/modeldeployment=gone").items
               and not api.core.list_namespaced_pod(namespace,
                                                    label_selector="tritonops.io/modeldeployment=gone").items,
               timeout=60)


def test_invalid_spec_keeps_serving_the_last_good_revision(api: Api, operator: OperatorProcess,
                                                          namespace: str) -> None:
    api.create_md(namespace, md_body("guarded"))
    stable = wait_until("Ready", lambda: converged(api, namespace, "guarded"), timeout=90)["status"]["stableRevision"]
    api.patch_md(namespace, "guarded", {"spec": {"runtime": {"triton": {
        "instanceGroups": [{"kind": "KIND_GPU", "count": 1, "gpus": [4]}]}}}})
    cond = wait_until("InvalidSpec", lambda: (c := api.condition(namespace, "guarded", "InvalidSpec"))
                      and c["status"] == "True" and c, timeout=30)
    assert "spec.runtime.triton.instanceGroups[0].gpus" in cond["message"]
    md = api.md(namespace, "guarded")
    assert md is not None and md["status"]["stableRevision"] == stable
    assert [d.metadata.name for d in api.deployments(namespace, "guarded")] == [stable]
    assert api.condition(namespace, "guarded", "Ready")["status"] == "True"  # type: ignore[index]
    events = api.core.list_namespaced_event(namespace, field_selector="involvedObject.name=guarded").items
    assert any(e.type == "Warning" and e.reason == "InvalidSpec" for e in events)


def test_concurrent_spec_edits_converge_to_the_last_one(api: Api, operator: OperatorProcess, namespace: str) -> None:
    api.create_md(namespace, md_body("burst"))
    wait_until("Ready", lambda: converged(api, namespace, "burst"), timeout=90)

    def edit(replicas: int) -> None:
        api.patch_md(namespace, "burst", {"spec": {"replicas": replicas}})

    threads = [threading.Thread(target=edit, args=(n,)) for n in (2, 3, 1, 3, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    edit(3)
    md = wait_until("3 replicas", lambda: (m := converged(api, namespace, "burst"))
                    and m["status"]["readyReplicas"] == 3 and m, timeout=60)
    (dep,) = api.deployments(namespace, "burst")
    assert dep.spec.replicas == 3 and md["spec"]["replicas"] == 3


def test_operator_killed_mid_reconcile_converges_after_restart(api: Api, operator: OperatorProcess,
                                                               namespace: str) -> None:
    api.create_md(namespace, md_body("crash", replicas=2))
    # Kill as soon as the first child write lands, mid-cycle, before status is written.
    wait_until("first write", lambda: operator.writes() >= 1, timeout=30, interval=0.01)
    operator.kill()
    operator.start()
    md = wait_until("Ready after restart", lambda: converged(api, namespace, "crash"), timeout=90)
    assert [d.metadata.name for d in api.deployments(namespace, "crash")] == [md["status"]["stableRevision"]]
    assert_no_writes_while_idle(operator)


def test_insufficient_gpus_pending_then_ready_when_capacity_frees(api: Api, operator: OperatorProcess,
                                                                 namespace: str, cluster: Any) -> None:
    if not cluster.owned:
        pytest.skip("creates a KWOK GPU node; only on the suite's own control plane")
    node = f"gpu-{namespace}"[:63]
    api.core.create_node(gpu_node(node, namespace, 1))
    try:
        pool = {"tritonops.io/test-pool": namespace}
        api.create_md(namespace, md_body("first", nodeSelector=pool))
        wait_until("first Ready", lambda: converged(api, namespace, "first"), timeout=90)
        api.create_md(namespace, md_body("second", nodeSelector=pool))
        cond = wait_until("second Degraded", lambda: (c := api.condition(namespace, "second", "Degraded"))
                          and c["status"] == "True" and c, timeout=60)
        assert cond["reason"] == "InsufficientGPU" and "Insufficient nvidia.com/gpu" in cond["message"]
        assert api.condition(namespace, "second", "Ready")["status"] == "False"  # type: ignore[index]
        api.delete_md(namespace, "first")
        wait_until("second Ready", lambda: converged(api, namespace, "second"), timeout=120)
        assert api.condition(namespace, "second", "Degraded")["status"] == "False"  # type: ignore[index]
    finally:
        api.core.delete_node(node)
