"""Canary traffic through a Gateway API HTTPRoute on the real API server: the operator owns only the weights.

The Gateway API CRDs come from the pinned ``sigs.k8s.io/gateway-api`` module (``tests/integration/gateway.py``);
no gateway implementation runs here, so these tests prove what the operator writes (weights, revision
Services, ownership, delays), not that a data plane honours it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from tests.integration.gateway import GROUP, ensure_gateway_api_crds
from tests.integration.support import Api, OperatorProcess, converged, kubectl, md_body, wait_until

pytestmark = pytest.mark.cluster
CPU = {"runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}},
       "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}


def user_route(name: str, service: str) -> dict[str, Any]:
    """A route as a user writes it: a parent Gateway, a hostname, the model's rule and an unrelated rule."""
    return {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute", "metadata": {"name": name}, "spec": {
        "parentRefs": [{"name": "public"}], "hostnames": ["models.example.com"],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{service}"}}],
                   "backendRefs": [{"name": service, "port": 8000}]},
                  {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                   "backendRefs": [{"name": "docs", "port": 80}]}]}}


def route(api: Api, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = api.custom.get_namespaced_custom_object(GROUP, "v1", ns, "httproutes", name)
    return obj


def weights(api: Api, ns: str, name: str) -> list[tuple[str, int]]:
    return [(ref["name"], ref.get("weight", 1)) for ref in route(api, ns, name)["spec"]["rules"][0]["backendRefs"]]


def routed_canary(api: Api, cluster: Any, ns: str, name: str, steps: list[dict[str, Any]]) -> tuple[str, str]:
    """Serve version 1 on 2 replicas with a user's route, then canary version 2 through it: (stable, canary)."""
    ensure_gateway_api_crds(cluster)
    api.create_md(ns, md_body(name, replicas=2, **CPU))
    stable = wait_until("v1 Ready", lambda: converged(api, ns, name), timeout=90)["status"]["stableRevision"]
    kubectl(cluster, "apply", "-n", ns, "--server-side", "--field-manager=user", "-f", "-",
            stdin=yaml.safe_dump(user_route(f"{name}-route", name)))
    api.patch_md(ns, name, {"spec": {"model": {"version": 2}, "rollout": {"strategy": "Canary", "canary": {
        "steps": steps, "scaleDownDelaySeconds": 6, "abortScaleDownDelaySeconds": 4,
        "trafficRouting": {"gatewayAPI": {"httpRouteRef": {"name": f"{name}-route"}}}}}}})
    md = wait_until("a canary revision", lambda: (m := api.md(ns, name)) and m["status"].get("canaryRevision") and m,
                    timeout=60)
    return stable, md["status"]["canaryRevision"]


def test_the_route_carries_exact_weights_and_the_users_fields_stay_theirs(
        api: Api, operator: OperatorProcess, namespace: str, cluster: Any) -> None:
    stable, canary = routed_canary(api, cluster, namespace, "gw", [{"setWeight": 30}, {"pause": {}}])
    wait_until("route at 70/30", lambda: weights(api, namespace, "gw-route") == [(stable, 70), (canary, 30)],
               timeout=60)
    # the route is written before the status in a cycle; exact on a route (replicas would give 1 of 3 = 33)
    wait_until("status at 30", lambda: (api.md(namespace, "gw") or {})["status"].get("canaryWeight") == 30)
    assert api.apps.read_namespaced_deployment(canary, namespace).spec.replicas == 1  # ceil(2 x 30 %)
    r = route(api, namespace, "gw-route")
    assert r["spec"]["parentRefs"] == [{"group": GROUP, "kind": "Gateway", "name": "public"}]
    assert r["spec"]["hostnames"] == ["models.example.com"]
    assert r["spec"]["rules"][0]["matches"][0]["path"]["value"] == "/v2/models/gw"
    assert r["spec"]["rules"][1]["backendRefs"][0]["name"] == "docs"  # the other rule untouched
    owners = {f["manager"]: json.dumps(f.get("fieldsV1", {})) for f in r["metadata"]["managedFields"]}
    assert "f:parentRefs" in owners["user"] and "f:hostnames" in owners["user"]
    assert json.loads(owners["tritonops-traffic"]) == {"f:spec": {"f:rules": {}}}
    for rev in (stable, canary):
        svc = api.core.read_namespaced_service(rev, namespace)
        assert svc.spec.selector["tritonops.io/revision"] == rev

    api.custom.patch_namespaced_custom_object("tritonops.io", "v1alpha1", namespace, "modeldeployments", "gw",
                                              {"metadata": {"annotations": {"tritonops.io/promote": canary}}})
    wait_until("route all on the promoted revision", lambda: weights(api, namespace, "gw-route") == [(canary, 100)],
               timeout=60, interval=0.1)
    moved = time.monotonic()
    wait_until("old stable removed after the delay",
               lambda: {d.metadata.name for d in api.deployments(namespace, "gw")} == {canary}, timeout=60,
               interval=0.1)
    assert time.monotonic() - moved >= 6 - 1.5, "the old stable went before scaleDownDelaySeconds (6 s)"
    wait_until("its revision Service removed", lambda: stable not in {
        s.metadata.name for s in api.core.list_namespaced_service(namespace).items}, timeout=30)


def test_abort_sends_the_route_back_to_stable_then_scales_the_canary_down(
        api: Api, operator: OperatorProcess, namespace: str, cluster: Any) -> None:
    stable, canary = routed_canary(api, cluster, namespace, "ab", [{"setWeight": 50}, {"pause": {}}])
    wait_until("route at 50/50", lambda: weights(api, namespace, "ab-route") == [(stable, 50), (canary, 50)],
               timeout=60)
    api.custom.patch_namespaced_custom_object("tritonops.io", "v1alpha1", namespace, "modeldeployments", "ab",
                                              {"metadata": {"annotations": {"tritonops.io/abort": canary}}})
    wait_until("route back on stable", lambda: weights(api, namespace, "ab-route") == [(stable, 100), (canary, 0)],
               timeout=30)
    assert api.apps.read_namespaced_deployment(canary, namespace).spec.replicas == 1  # kept for the delay
    wait_until("canary scaled to zero after the delay",
               lambda: api.apps.read_namespaced_deployment(canary, namespace).spec.replicas == 0, timeout=60)
    md = api.md(namespace, "ab") or {}
    assert md["status"]["rollout"]["decision"] == "Aborted" and md["status"]["stableRevision"] == stable


def test_a_missing_route_holds_the_canary_and_says_why(
        api: Api, operator: OperatorProcess, namespace: str, cluster: Any) -> None:
    ensure_gateway_api_crds(cluster)
    api.create_md(ns := namespace, md_body("nr", replicas=1, **CPU))
    stable = wait_until("v1 Ready", lambda: converged(api, ns, "nr"), timeout=90)["status"]["stableRevision"]
    api.patch_md(ns, "nr", {"spec": {"model": {"version": 2}, "rollout": {"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 50}], "trafficRouting": {"gatewayAPI": {"httpRouteRef": {"name": "nowhere"}}}}}}})

    def unusable() -> dict[str, Any] | None:
        cond = api.condition(ns, "nr", "Degraded")
        return cond if cond and cond["reason"] == "TrafficRouteUnusable" else None

    cond = wait_until("Degraded/TrafficRouteUnusable", unusable, timeout=60)
    assert "HTTPRoute" in cond["message"] and "nowhere" in cond["message"]
    md = api.md(ns, "nr") or {}
    assert md["status"]["stableRevision"] == stable and md["status"]["rollout"]["weight"] == 0
