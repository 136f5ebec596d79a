"""Canary rollouts on the real API server (KWOK nodes): replica-ratio weights, pauses, promote, abort, restart.

KWOK pods become Ready once scheduled, so "the canary is ready" is the Deployment's availability as the
real controllers report it; traffic itself is proven on the real node (tests/e2e).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import Api, OperatorProcess, converged, gpu_node, md_body, wait_until

pytestmark = pytest.mark.cluster
CPU = {"runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}},
       "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}
STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"durationSeconds": 3}}]


def start_canary(api: Api, ns: str, name: str) -> tuple[str, dict[str, Any]]:
    """Serve version 1 on 3 replicas, then ask for version 2 by canary steps; returns (stable, md when paused)."""
    api.create_md(ns, md_body(name, replicas=3, **CPU))
    stable = wait_until("v1 Ready", lambda: converged(api, ns, name), timeout=90)["status"]["stableRevision"]
    api.patch_md(ns, name, {"spec": {"model": {"version": 2},
                                     "rollout": {"strategy": "Canary", "canary": {"steps": STEPS}}}})
    md = wait_until("paused at step 2", lambda: paused(api, ns, name), timeout=90)
    return stable, md


def paused(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    md = api.md(ns, name) or {}
    rollout = md.get("status", {}).get("rollout", {})
    return md if rollout.get("decision") == "Paused" and rollout.get("currentStepIndex") == 1 else None


def kubectl_tritonops(cluster: Any, *args: str) -> str:
    """``kubectl tritonops ...`` as a user runs it: kubectl finds the plugin on PATH and passes KUBECONFIG on."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([cluster.tool("kubectl"), "tritonops", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@contextmanager
def gpu_pool(api: Api, cluster: Any, namespace: str, gpus: int) -> Iterator[str]:
    """A KWOK GPU node of the test's own pool (``tritonops.io/test-pool: <namespace>``) with ``gpus`` GPUs."""
    if not cluster.owned:
        pytest.skip("creates a KWOK GPU node; only on the suite's own control plane")
    node = f"gpu-{namespace}"[:63]
    api.core.create_node(gpu_node(node, namespace, gpus))
    try:
        yield node
    finally:
        api.core.delete_node(node)


def replicas(api: Api, ns: str, rev: str) -> int:
    return int(api.apps.read_namespaced_deployment(rev, ns).spec.replicas)


def test_canary_steps_pause_and_promote(api: Api, operator: OperatorProcess, namespace: str, cluster: Any) -> None:
    stable, md = start_canary(api, namespace, "can")
    canary = md["status"]["canaryRevision"]
    assert md["status"]["canaryWeight"] == 25  # 1 canary pod beside 3 stable ones
    assert (replicas(api, namespace, stable), replicas(api, namespace, canary)) == (3, 1)
    progressing = next(c for c in md["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "CanaryPaused" and "until promoted" in progressing["message"]
    series = f'{{name="can",namespace="{namespace}"}}'
    wait_until("canary metrics", lambda: f"tritonops_canary_weight_percent{series} 25.0" in (
        operator.metrics_text()), timeout=30)
    assert f'tritonops_canary_decision{{decision="Paused",name="can",namespace="{namespace}"}} 1.0' \
        in operator.metrics_text()
    reasons = {e.reason for e in api.core.list_namespaced_event(namespace).items}
    assert {"CanaryStep", "CanaryPaused"} <= reasons

    timeline = kubectl_tritonops(cluster, "status", "can", "-n", namespace)
    assert "  ok 1. setWeight 25\n  -> 2. pause until promoted\n     3. setWeight 50" in timeline, timeline
    kubectl_tritonops(cluster, "promote", "can", "-n", namespace)  # past the pause: 50 %, 3 s, promoted
    done = wait_until("canary stable", lambda: (m := converged(api, namespace, "can"))
                      and m["status"]["stableRevision"] == canary and m, timeout=90)
    wait_until("old stable removed", lambda: [d.metadata.name for d in api.deployments(namespace, "can")] == [canary])
    assert replicas(api, namespace, canary) == 3
    assert [h["outcome"] for h in done["status"]["history"]] == ["Superseded", "Promoted"]
    wait_until("canary metrics removed", lambda: series not in operator.metrics_text(), timeout=30)


def test_abort_returns_to_stable_and_survives_an_operator_restart(api: Api, operator: OperatorProcess,
                                                                  namespace: str, cluster: Any) -> None:
    stable, md = start_canary(api, namespace, "ab")
    canary, before = md["status"]["canaryRevision"], md["status"]["rollout"]
    operator.kill()
    operator.start()  # resumes from status: same step, same start time
    wait_until("a cycle after the restart", lambda: operator.reconciles() >= 1, timeout=30)
    assert (api.md(namespace, "ab") or {})["status"]["rollout"] == before

    kubectl_tritonops(cluster, "pause", "ab", "-n", namespace)
    assert (api.md(namespace, "ab") or {})["metadata"]["annotations"]["tritonops.io/pause"] == canary
    kubectl_tritonops(cluster, "resume", "ab", "-n", namespace)
    assert "tritonops.io/pause" not in ((api.md(namespace, "ab") or {})["metadata"].get("annotations") or {})
    kubectl_tritonops(cluster, "abort", "ab", "-n", namespace)

    def aborted() -> dict[str, Any] | None:
        m = api.md(namespace, "ab") or {}
        degraded = next((c for c in m.get("status", {}).get("conditions", []) if c["type"] == "Degraded"), {})
        return m if degraded.get("reason") == "RolloutAborted" and replicas(api, namespace, canary) == 0 else None

    md = wait_until("aborted", aborted, timeout=60)
    assert md["status"]["stableRevision"] == stable and replicas(api, namespace, stable) == 3
    assert md["status"]["canaryWeight"] == 0
    assert [h["outcome"] for h in md["status"]["history"]] == ["Promoted", "Aborted"]
    assert "Aborted" in kubectl_tritonops(cluster, "history", "ab", "-n", namespace)
    ready = next(c for c in md["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_no_surge_canary_fits_where_a_surge_cannot(api: Api, operator: OperatorProcess, namespace: str,
                                                   cluster: Any) -> None:
    """On a pool with exactly the stable's GPUs, a Surge canary waits for GPUs; NoSurge lends it stable's."""
    with gpu_pool(api, cluster, namespace, 2):
        api.create_md(namespace, md_body("gpu", replicas=2, nodeSelector={"tritonops.io/test-pool": namespace}))
        first = wait_until("v1 Ready", lambda: converged(api, namespace, "gpu"), timeout=90)
        stable = first["status"]["stableRevision"]
        steps = [{"setWeight": 50}, {"pause": {}}]
        api.patch_md(namespace, "gpu", {"spec": {"model": {"version": 2}, "rollout": {
            "strategy": "Canary", "canary": {"steps": steps, "capacityPolicy": "Surge"}}}})
        cond = wait_until("Surge canary short of GPUs", lambda: (c := api.condition(namespace, "gpu", "Degraded"))
                          and c["status"] == "True" and c, timeout=60)
        assert cond["reason"] == "InsufficientGPU" and replicas(api, namespace, stable) == 2

        api.patch_md(namespace, "gpu", {"spec": {"rollout": {"canary": {"capacityPolicy": "NoSurge"}}}})
        md = wait_until("NoSurge canary paused at 50%", lambda: paused(api, namespace, "gpu"), timeout=90)
        canary = md["status"]["canaryRevision"]
        assert md["status"]["canaryWeight"] == 50
        assert (replicas(api, namespace, stable), replicas(api, namespace, canary)) == (1, 1)
        degraded = api.condition(namespace, "gpu", "Degraded") or {}
        assert degraded.get("status") == "False"


def test_rolling_without_surge_fits_on_exactly_its_gpus(api: Api, operator: OperatorProcess, namespace: str,
                                                        cluster: Any) -> None:
    """maxSurge 0 / maxUnavailable 1 on a pool with exactly the model's GPUs: one pod at a time, never more."""
    with gpu_pool(api, cluster, namespace, 3):
        api.create_md(namespace, md_body("roll", replicas=3, nodeSelector={"tritonops.io/test-pool": namespace}))
        old = wait_until("v1 Ready", lambda: converged(api, namespace, "roll"), timeout=90)["status"]["stableRevision"]
        api.patch_md(namespace, "roll", {"spec": {"model": {"version": 2}, "rollout": {
            "strategy": "Rolling", "rolling": {"maxSurge": 0, "maxUnavailable": 1}}}})
        most = 0

        def rolled() -> dict[str, Any] | None:
            nonlocal most
            most = max(most, sum(d.spec.replicas or 0 for d in api.deployments(namespace, "roll")))
            md = converged(api, namespace, "roll")
            return md if md and md["status"]["stableRevision"] != old else None

        md = wait_until("version 2 serving on the same GPUs", rolled, timeout=120, interval=0.1)
        assert most <= 3, f"{most} replicas at once on a pool of 3 GPUs"
        assert replicas(api, namespace, md["status"]["stableRevision"]) == 3
        assert (api.condition(namespace, "roll", "Degraded") or {}).get("status") == "False"
