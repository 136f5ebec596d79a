"""Autoscalers on the real API server, under the chart's RBAC: the HPA and KEDA's ScaledObject the operator
generates are accepted (KEDA's CRDs from its Go module's CRD files), they target the ModelDeployment's
``/scale``, and the replicas written there are split into the revision's Deployment.

The HPA controller's own loop on real Triton metrics through prometheus-adapter is the e2e test
``tests/e2e/test_autoscaling_loop.py``; here the scale subresource is driven the way the HPA drives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.autoscaling_support import ensure_keda_crds
from tests.integration.rbac import operator_kubeconfig
from tests.integration.support import Api, OperatorProcess, converged, gpu_node, kubectl, md_body, wait_until
from tests.integration.test_canary import gpu_pool, replicas

pytestmark = pytest.mark.cluster
CPU = {"runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}},
       "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}
SCALING = {"minReplicas": 1, "maxReplicas": 5, "metrics": [{"type": "QueueTime", "target": 50000},
                                                            {"type": "CPU", "target": 70}]}


@pytest.fixture
def keda_operator(cluster: Any, api: Api, namespace: str, tmp_path: Path) -> Any:
    ensure_keda_crds(cluster)
    kubeconfig = operator_kubeconfig(cluster, namespace, tmp_path)
    proc = OperatorProcess(str(kubeconfig), namespace, tmp_path / "operator.log",
                           extra_args=["--prometheus-url", "http://prometheus.monitoring:9090"])
    proc.start()
    yield proc
    proc.stop()
    print((tmp_path / "operator.log").read_text()[-6000:])


def test_hpa_then_keda_target_the_model_and_scale_its_revision(api: Api, cluster: Any, namespace: str,
                                                               keda_operator: OperatorProcess) -> None:
    api.create_md(namespace, md_body("auto", replicas=2, autoscaling=SCALING, **CPU))
    md = wait_until("Ready", lambda: converged(api, namespace, "auto"), timeout=90)
    hpa = api.autoscaling.read_namespaced_horizontal_pod_autoscaler("auto", namespace)
    assert (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) == ("ModelDeployment", "auto")
    assert [m.type for m in hpa.spec.metrics] == ["Pods", "Resource"] and hpa.spec.max_replicas == 5
    stable = md["status"]["stableRevision"]
    kubectl(cluster, "scale", "-n", namespace, "modeldeployment/auto", "--replicas=4")  # as the HPA does
    wait_until("the revision at 4", lambda: api.apps.read_namespaced_deployment(stable, namespace).spec.replicas
               == 4, timeout=60)
    kubectl(cluster, "scale", "-n", namespace, "modeldeployment/auto", "--replicas=9")
    wait_until("bounded by maxReplicas", lambda: api.apps.read_namespaced_deployment(stable, namespace).spec.replicas
               == 5, timeout=60)

    api.patch_md(namespace, "auto", {"spec": {"autoscaling": {"engine": "KEDA"}}})

    def scaled_object() -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = api.custom.get_namespaced_custom_object("keda.sh", "v1alpha1", namespace,
                                                                          "scaledobjects", "auto")
            return obj
        except Exception:
            return None

    obj = wait_until("the ScaledObject", scaled_object, timeout=60)
    assert obj["spec"]["scaleTargetRef"]["kind"] == "ModelDeployment"
    assert [t["type"] for t in obj["spec"]["triggers"]] == ["prometheus", "cpu"]
    wait_until("the HPA deleted", lambda: not api.autoscaling.list_namespaced_horizontal_pod_autoscaler(
        namespace).items, timeout=60)
    api.patch_md(namespace, "auto", {"spec": {"autoscaling": None}})
    wait_until("the ScaledObject deleted", lambda: scaled_object() is None, timeout=60)


def test_growth_stops_at_the_free_gpus_and_resumes_when_gpus_appear(api: Api, cluster: Any, namespace: str,
                                                                    keda_operator: OperatorProcess) -> None:
    """The autoscaler asks for 6 replicas of a 1-GPU model on a KWOK pool of 3 GPUs (simulated: no GPU
    exists here): 3 are served and status says why, no pod waits Pending; a second node of 2 GPUs lets it
    grow to 5, still short of 6; asked for 4, it shrinks with nothing held."""
    with gpu_pool(api, cluster, namespace, 3):
        api.create_md(namespace, md_body("gpus", replicas=1, autoscaling={**SCALING, "maxReplicas": 8},
                                         nodeSelector={"tritonops.io/test-pool": namespace}))
        md = wait_until("Ready", lambda: converged(api, namespace, "gpus"), timeout=90)
        stable = md["status"]["stableRevision"]
        kubectl(cluster, "scale", "-n", namespace, "modeldeployment/gpus", "--replicas=6")  # as the HPA does

        def split() -> dict[str, Any] | None:
            got = ((api.md(namespace, "gpus") or {}).get("status") or {}).get("replicaSplit") or {}
            return got if got.get("limitedBy") else None

        seen = wait_until("held at the free GPUs", split, timeout=60)
        assert (seen["total"], seen["requested"]) == (3, 6)
        wait_until("3 pods Ready", lambda: api.apps.read_namespaced_deployment(stable, namespace).status
                   .available_replicas == 3, timeout=60)
        assert replicas(api, namespace, stable) == 3
        pending = [p for p in api.core.list_namespaced_pod(namespace).items if not p.spec.node_name]
        assert pending == []
        extra = gpu_node(f"gpu2-{namespace}"[:63], namespace, 2)
        api.core.create_node(extra)
        try:
            wait_until("grown to 5", lambda: replicas(api, namespace, stable) == 5, timeout=90)
            wait_until("still held: 5 GPUs for 6", lambda: (split() or {}).get("total") == 5, timeout=30)
            kubectl(cluster, "scale", "-n", namespace, "modeldeployment/gpus", "--replicas=4")
            wait_until("no longer held", lambda: split() is None and replicas(api, namespace, stable) == 4,
                       timeout=30)
        finally:
            api.core.delete_node(extra["metadata"]["name"])
