"""Never adopt what we did not create: a user's Service named like the ModelDeployment stays the user's."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.support import Api, OperatorProcess, md_body, wait_until

pytestmark = pytest.mark.cluster
CPU = {"runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}},
       "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}


def test_a_users_service_is_left_alone_reported_and_survives_the_model(
        api: Api, operator: OperatorProcess, namespace: str) -> None:
    api.core.create_namespaced_service(namespace, {"metadata": {"name": "mine"}, "spec": {
        "selector": {"app": "mine"}, "ports": [{"name": "web", "port": 80}]}})
    api.create_md(namespace, md_body("mine", **CPU))

    def conflict() -> dict[str, Any] | None:
        cond = api.condition(namespace, "mine", "Degraded")
        return cond if cond and cond["reason"] == "ResourceConflict" else None

    cond = wait_until("Degraded/ResourceConflict", conflict, timeout=60)
    assert f"Service {namespace}/mine (created by someone else)" in cond["message"], cond
    svc = api.core.read_namespaced_service("mine", namespace)
    assert not svc.metadata.owner_references and svc.spec.selector == {"app": "mine"}
    assert [p.port for p in svc.spec.ports] == [80]
    wait_until("the model's pods still roll out", lambda: api.deployments(namespace, "mine"), timeout=60)
    reasons = {e.reason for e in api.core.list_namespaced_event(namespace).items}
    assert "ResourceConflict" in reasons

    api.delete_md(namespace, "mine")
    wait_until("the model's Deployment collected", lambda: not api.deployments(namespace, "mine"), timeout=60)
    assert api.core.read_namespaced_service("mine", namespace).spec.selector == {"app": "mine"}
