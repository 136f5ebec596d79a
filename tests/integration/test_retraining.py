"""The retraining loop on the real API server, under the chart's RBAC and Pod Security "restricted": a request
(``kubectl tritonops retrain``) starts one Job, the real Job controller runs it, the operator reads its end,
history limits delete old Jobs, the ModelDeployment's deletion takes its Jobs with it.

KWOK runs the Job's pod (its ``pod-complete`` stage ends pods owned by Jobs as Succeeded), so no container
writes a result here: the operator reports a Job that ended without one. The accepted and rejected paths,
with the real ``tritonops-retrain`` and a real candidate rolled out, are the e2e test
``tests/e2e/test_retraining_loop.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.support import Api, OperatorProcess, converged, md_body, wait_until
from tests.integration.test_canary import kubectl_tritonops

pytestmark = pytest.mark.cluster
CPU = {"runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}},
       "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}
RETRAINING = {"enabled": True, "image": "tritonops-runtime:test", "outputStorageUri": "s3://models/loop",
              "dataStorageUri": "s3://data/loop/new.npz", "failedJobsHistoryLimit": 1,
              "successfulJobsHistoryLimit": 1, "trigger": {"cooldownSeconds": 3600}}


def retraining(api: Api, namespace: str) -> dict[str, Any]:
    return ((api.md(namespace, "loop") or {}).get("status") or {}).get("retraining") or {}


def test_a_request_runs_one_job_and_its_end_is_reported(api: Api, cluster: Any, namespace: str,
                                                        operator: OperatorProcess) -> None:
    api.create_md(namespace, md_body("loop", retraining=RETRAINING, **CPU))
    wait_until("Ready", lambda: converged(api, namespace, "loop"), timeout=90)
    assert retraining(api, namespace) == {"phase": "Idle", "jobs": 0}
    kubectl_tritonops(cluster, "retrain", "loop", "-n", namespace)
    job = wait_until("the Job", lambda: api.batch.read_namespaced_job("loop-retrain-1", namespace)
                     if retraining(api, namespace).get("activeJob") else None, timeout=60)
    assert job.metadata.owner_references[0].kind == "ModelDeployment"
    assert job.spec.template.spec.containers[0].command == ["tritonops-retrain"]
    state = wait_until("the Job's end", lambda: (s := retraining(api, namespace)) and s.get("phase") == "Failed"
                       and s, timeout=120)
    assert state["message"] == "Job loop-retrain-1 failed: it finished without a result (termination message)"
    assert state["trigger"] == "Manual" and "activeJob" not in state
    events = api.core.list_namespaced_event(namespace, field_selector="involvedObject.name=loop").items
    assert {"RetrainingStarted", "RetrainingFailed"} <= {e.reason for e in events}
    kubectl_tritonops(cluster, "retrain", "loop", "-n", namespace)  # a new request: the cooldown does not hold it
    wait_until("the second Job's end", lambda: retraining(api, namespace).get("jobs") == 2
               and retraining(api, namespace).get("phase") == "Failed", timeout=120)

    def names() -> list[str]:
        return sorted(j.metadata.name for j in api.batch.list_namespaced_job(namespace).items)

    wait_until("only the newest failed Job kept", lambda: names() == ["loop-retrain-2"], timeout=60)
    history = [h["outcome"] for h in api.md(namespace, "loop")["status"]["history"]]
    assert history[-4:] == ["RetrainingStarted", "RetrainingFailed", "RetrainingStarted", "RetrainingFailed"]
    api.delete_md(namespace, "loop")
    wait_until("its Jobs collected with it", lambda: names() == [], timeout=90)
