"""The Gateway API CRDs install in the real API server, and it accepts the canary's HTTPRoute apply as designed.

What ``tritonops.builders.httproute`` relies on is checked here against the served schema: ``spec.rules`` and
their ``backendRefs`` are atomic lists, so the ``tritonops-traffic`` apply owns ``spec.rules`` whole and
nothing else, the user keeps ``parentRefs`` and ``hostnames``, and a stale read cannot overwrite the route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.integration.gateway import HTTPROUTE_CRD, ensure_gateway_api_crds
from tests.integration.support import Api, kubectl
from tritonops.builders.httproute import TRAFFIC_FIELD_MANAGER, route_patch, route_weights
from tritonops.builders.meta import Owner
from tritonops.builders.service import build_revision_service

pytestmark = pytest.mark.cluster

MD = "clf"
STABLE = "clf-0123456789"
CANARY = "clf-abcdef0123"
USER = "user-gitops"
GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"


@pytest.fixture(scope="module")
def gateway_api(cluster: Any) -> list[str]:
    return ensure_gateway_api_crds(cluster)


@pytest.fixture
def custom(cluster: Any) -> Iterator[Any]:
    api = Api.from_kubeconfig(str(cluster.kubeconfig))
    yield api.custom
    api.client.close()


def user_route(namespace: str) -> dict[str, Any]:
    """The route a user writes: one rule for the model (with matches and a filter) and one for something else."""
    model_rule = {"matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/clf"}}],
                  "filters": [{"type": "RequestHeaderModifier",
                               "requestHeaderModifier": {"set": [{"name": "x-model", "value": "clf"}]}}],
                  "backendRefs": [{"name": MD, "port": 8000}]}
    docs_rule = {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                 "backendRefs": [{"name": "docs", "port": 80}]}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["models.example.com"],
                     "rules": [docs_rule, model_rule]}}


def apply(custom: Any, body: dict[str, Any], manager: str, *, force: bool = False,
          dry_run: bool = False) -> dict[str, Any]:
    """Server-side apply of an HTTPRoute, as the operator (or a user's tool) sends it."""
    meta = body["metadata"]
    resp = custom.patch_namespaced_custom_object(
        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body, field_manager=manager, force=force,
        dry_run="All" if dry_run else None, _content_type="application/apply-patch+yaml", _preload_content=False)
    obj: dict[str, Any] = json.loads(resp.data)  # the client does not decode apply-patch answers itself
    return obj


def owned(obj: dict[str, Any], manager: str) -> dict[str, Any]:
    """The fieldsV1 set of ``manager``'s Apply entry ({} when it owns nothing)."""
    entries = [e for e in obj["metadata"].get("managedFields", []) if e["manager"] == manager]
    fields: dict[str, Any] = entries[0]["fieldsV1"] if entries else {}
    return fields


def test_crds_install_established_and_idempotent(cluster: Any, gateway_api: list[str]) -> None:
    if cluster.owned:  # our control plane starts without them; an earlier test of the session may have installed them
        for name in (HTTPROUTE_CRD, "gateways.gateway.networking.k8s.io", "gatewayclasses.gateway.networking.k8s.io"):
            assert kubectl(cluster, "get", "crd", name, check=False).returncode == 0, name
    crd = json.loads(kubectl(cluster, "get", "crd", HTTPROUTE_CRD, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert any(v["name"] == "v1" and v["served"] and v["storage"] for v in crd["spec"]["versions"])
    assert ensure_gateway_api_crds(cluster) == []  # a second call finds them and installs nothing


def test_served_schema_has_atomic_rules_and_backend_refs(cluster: Any, gateway_api: list[str]) -> None:
    """The premise of route_patch: if a Gateway API release made these map lists, the body could shrink."""
    crd = json.loads(kubectl(cluster, "get", "crd", HTTPROUTE_CRD, "-o", "json").stdout)
    for version in (v for v in crd["spec"]["versions"] if v["served"]):
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        rules = spec["rules"]
        backend_refs = rules["items"]["properties"]["backendRefs"]
        for field in (rules, backend_refs, spec["parentRefs"]):  # a CRD list without a list-type is atomic
            assert field.get("x-kubernetes-list-type", "atomic") == "atomic", version["name"]


def test_route_patch_is_accepted_and_owns_only_the_rules(custom: Any, gateway_api: list[str],
                                                         namespace: str) -> None:
    observed = apply(custom, user_route(namespace), USER)
    body = route_patch(observed, MD, STABLE, CANARY, 20)

    dry = apply(custom, body, TRAFFIC_FIELD_MANAGER, force=True, dry_run=True)
    assert route_weights(dry, MD) == {STABLE: 80, CANARY: 20}
    assert route_weights(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "web"), MD) == {MD: 1}

    stored = apply(custom, body, TRAFFIC_FIELD_MANAGER, force=True)
    assert stored["spec"]["rules"] == body["spec"]["rules"]  # nothing defaulted on top: compare to skip writes
    assert route_patch(stored, MD, STABLE, CANARY, 20)["spec"]["rules"] == stored["spec"]["rules"]
    assert route_weights(stored, MD) == {STABLE: 80, CANARY: 20}
    assert stored["spec"]["rules"][0] == observed["spec"]["rules"][0]  # the other rule, untouched
    assert stored["spec"]["rules"][1]["matches"] == observed["spec"]["rules"][1]["matches"]
    assert stored["spec"]["rules"][1]["filters"] == observed["spec"]["rules"][1]["filters"]
    assert stored["spec"]["parentRefs"] == [{"group": GROUP, "kind": "Gateway", "name": "gw"}]

    assert owned(stored, TRAFFIC_FIELD_MANAGER) == {"f:spec": {"f:rules": {}}}
    user_spec = owned(stored, USER)["f:spec"]
    assert "f:parentRefs" in user_spec and "f:hostnames" in user_spec and "f:rules" not in user_spec


def test_stale_reads_and_users_reapply_conflict(custom: Any, gateway_api: list[str], namespace: str) -> None:
    observed = apply(custom, user_route(namespace), USER)
    stored = apply(custom, route_patch(observed, MD, STABLE, CANARY, 20), TRAFFIC_FIELD_MANAGER, force=True)

    # Built from the read before the last write: the resourceVersion precondition refuses it.
    with pytest.raises(kubernetes.client.ApiException) as stale:
        apply(custom, route_patch(observed, MD, STABLE, CANARY, 50), TRAFFIC_FIELD_MANAGER, force=True)
    assert stale.value.status == 409 and "has been modified" in (stale.value.body or "")

    # The user's unchanged manifest now conflicts on the rules (what GitOps tools must be told to ignore).
    with pytest.raises(kubernetes.client.ApiException) as conflict:
        apply(custom, user_route(namespace), USER)
    assert conflict.value.status == 409 and ".spec.rules" in json.loads(conflict.value.body or "{}").get("message", "")

    # Taken back by force, the rules are the user's again; the operator's next apply re-weights them.
    reverted = apply(custom, user_route(namespace), USER, force=True)
    assert route_weights(reverted, MD) == {MD: 1}
    again = apply(custom, route_patch(reverted, MD, STABLE, CANARY, 50), TRAFFIC_FIELD_MANAGER, force=True)
    assert route_weights(again, MD) == {STABLE: 50, CANARY: 50}
    assert int(again["metadata"]["resourceVersion"]) > int(stored["metadata"]["resourceVersion"])


def test_revision_service_is_valid(cluster: Any, namespace: str) -> None:
    """The API server takes the revision Service as built (name, labels, ports), checked without creating it."""
    api = Api.from_kubeconfig(str(cluster.kubeconfig))
    body = build_revision_service(Owner(MD, namespace, "00000000-0000-0000-0000-000000000000"), CANARY)
    try:
        created = api.core.create_namespaced_service(namespace, body, dry_run="All")
    finally:
        api.client.close()
    assert created.metadata.name == CANARY and created.spec.selector["tritonops.io/revision"] == CANARY
    assert [p.port for p in created.spec.ports] == [8000, 8001, 8002]
