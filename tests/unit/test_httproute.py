"""Revision Services and the canary's weights on a user's HTTPRoute: table tests of the pure builders."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tritonops.builders.httproute import (
    ROUTE_REF_FIELD,
    TRAFFIC_FIELD_MANAGER,
    backend_refs,
    model_rule_indexes,
    route_patch,
    route_weights,
)
from tritonops.builders.meta import ANNOTATION_SPEC_HASH, LABEL_COMPONENT, LABEL_REVISION, Owner
from tritonops.builders.service import (
    build_revision_service,
    build_service,
    is_model_service,
    revision_service_name,
)

MD = "clf"
STABLE = "clf-0123456789"
CANARY = "clf-abcdef0123"
OLD = "clf-5555555555"
OWNER = Owner(MD, "team-a", "uid-1")


def svc(name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    """A backendRef to a Service on the HTTP port, as a user writes it."""
    ref: dict[str, Any] = {"name": name, "port": 8000, **extra}
    if weight is not None:
        ref["weight"] = weight
    return ref


def ref(name: str, weight: int, **extra: Any) -> dict[str, Any]:
    """A backendRef as route_patch writes it (every defaulted field spelled out)."""
    return {"group": "", "kind": "Service", "name": name, "port": 8000, "weight": weight, **extra}


def route(*rules: dict[str, Any], rv: str = "42") -> dict[str, Any]:
    """An observed HTTPRoute with the user's parentRefs and hostnames."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "team-a", "resourceVersion": rv, "uid": "u",
                         "labels": {"team": "a"}, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["models.example.com"], "rules": list(rules)},
            "status": {"parents": []}}


MATCH = [{"path": {"type": "PathPrefix", "value": "/v2/models/clf"}}]
HEADER = [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-model", "value": "clf"}]}}]
OTHER_RULE = {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}], "backendRefs": [svc("docs")]}

# name: (rules of the observed route, canary revision, weight, expected backendRefs of each model rule)
PATCH_CASES: dict[str, tuple[list[dict[str, Any]], str | None, int, list[dict[str, Any]]]] = {
    "first-canary-step": ([{"backendRefs": [svc(MD)]}], CANARY, 20, [ref(STABLE, 80), ref(CANARY, 20)]),
    "no-canary": ([{"backendRefs": [svc(MD)]}], None, 20, [ref(STABLE, 100)]),
    "canary-equals-stable": ([{"backendRefs": [svc(MD)]}], STABLE, 20, [ref(STABLE, 100)]),
    "canary-at-zero": ([{"backendRefs": [svc(MD)]}], CANARY, 0, [ref(STABLE, 100), ref(CANARY, 0)]),
    "canary-at-100": ([{"backendRefs": [svc(MD)]}], CANARY, 100, [ref(STABLE, 0), ref(CANARY, 100)]),
    "next-step-on-routed": ([{"backendRefs": [ref(STABLE, 80), ref(CANARY, 20)]}], CANARY, 50,
                            [ref(STABLE, 50), ref(CANARY, 50)]),
    "old-canary-replaced": ([{"backendRefs": [ref(STABLE, 60), ref(OLD, 40)]}], CANARY, 10,
                            [ref(STABLE, 90), ref(CANARY, 10)]),
    "explicit-same-namespace": ([{"backendRefs": [svc(MD, namespace="team-a", kind="Service", group="")]}],
                                CANARY, 30, [ref(STABLE, 70), ref(CANARY, 30)]),
    "per-backend-filters-kept": ([{"backendRefs": [svc(MD, filters=HEADER)]}], CANARY, 25,
                                 [ref(STABLE, 75, filters=HEADER), ref(CANARY, 25, filters=HEADER)]),
}


@pytest.mark.parametrize("name", list(PATCH_CASES))
def test_route_patch_weights(name: str) -> None:
    rules, canary, weight, expected = PATCH_CASES[name]
    body = route_patch(route(*rules), MD, STABLE, canary, weight)
    assert body["spec"]["rules"] == [{**rules[0], "backendRefs": expected}]


def test_body_holds_only_the_rules_and_a_resource_version_precondition() -> None:
    body = route_patch(route({"backendRefs": [svc(MD)]}), MD, STABLE, CANARY, 10)
    assert body["apiVersion"] == "gateway.networking.k8s.io/v1" and body["kind"] == "HTTPRoute"
    assert body["metadata"] == {"name": "web", "namespace": "team-a", "resourceVersion": "42"}
    assert list(body["spec"]) == ["rules"]  # parentRefs and hostnames stay the user's
    assert "status" not in body
    assert TRAFFIC_FIELD_MANAGER == "tritonops-traffic"


def test_every_rule_travels_whole_and_only_the_models_backends_change() -> None:
    model_rule = {"name": "infer", "matches": MATCH, "filters": HEADER, "timeouts": {"request": "30s"},
                  "backendRefs": [svc(MD)]}
    second = {"matches": [{"path": {"type": "Exact", "value": "/v2/health/ready"}}], "backendRefs": [svc(MD, 1)]}
    observed = route(OTHER_RULE, model_rule, second)
    before = copy.deepcopy(observed)
    rules = route_patch(observed, MD, STABLE, CANARY, 40)["spec"]["rules"]
    assert observed == before  # the observed route is not modified
    assert rules[0] == OTHER_RULE
    assert rules[1] == {**model_rule, "backendRefs": [ref(STABLE, 60), ref(CANARY, 40)]}
    assert rules[2] == {**second, "backendRefs": [ref(STABLE, 60), ref(CANARY, 40)]}
    assert model_rule_indexes(observed, MD) == [1, 2]


def test_applying_the_same_split_again_changes_nothing() -> None:
    observed = route(OTHER_RULE, {"matches": MATCH, "backendRefs": [svc(MD)]})
    body = route_patch(observed, MD, STABLE, CANARY, 30)
    after = {**observed, "spec": {**observed["spec"], "rules": body["spec"]["rules"]}}
    assert route_patch(after, MD, STABLE, CANARY, 30)["spec"]["rules"] == after["spec"]["rules"]
    assert route_patch(after, MD, STABLE, CANARY, 40)["spec"]["rules"] != after["spec"]["rules"]


NOT_OURS: dict[str, dict[str, Any]] = {
    "other-service": svc("docs"),
    "other-namespace": svc(MD, namespace="team-b"),
    "other-kind": svc(MD, group="inference.networking.k8s.io", kind="InferencePool"),
    "longer-name": svc(f"{MD}-0123456789-x"),
    "other-model-prefix": svc("clf2-0123456789"),
}


@pytest.mark.parametrize("name", list(NOT_OURS))
def test_a_route_without_a_model_rule_names_the_field_and_the_fix(name: str) -> None:
    observed = route({"backendRefs": [NOT_OURS[name]]})
    assert model_rule_indexes(observed, MD) == []
    with pytest.raises(ValueError) as err:
        route_patch(observed, MD, STABLE, CANARY, 10)
    message = str(err.value)
    assert "HTTPRoute team-a/web" in message and f"{ROUTE_REF_FIELD}.name" in message
    assert "Service 'clf' port 8000" in message


def test_a_rule_mixing_the_model_with_other_backends_is_refused() -> None:
    observed = route({"name": "split", "backendRefs": [svc(MD, 90), svc("legacy", 10)]})
    with pytest.raises(ValueError, match=r"rule 0 \(split\) of HTTPRoute team-a/web .*\['legacy'\].*own"):
        route_patch(observed, MD, STABLE, CANARY, 10)


@pytest.mark.parametrize("weight", [-1, 101])
def test_weight_out_of_range_is_refused(weight: int) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        backend_refs(MD, STABLE, CANARY, weight)


# name: (backendRefs of the first model rule, expected weights)
WEIGHT_CASES: dict[str, tuple[list[dict[str, Any]], dict[str, int]]] = {
    "users-route-default-weight": ([svc(MD)], {MD: 1}),
    "users-route-weighted": ([svc(MD, 100)], {MD: 100}),
    "split": ([ref(STABLE, 70), ref(CANARY, 30)], {STABLE: 70, CANARY: 30}),
    "duplicate-refs-add-up": ([svc(STABLE, 50), svc(STABLE, 25), svc(CANARY, 25)], {STABLE: 75, CANARY: 25}),
    "others-left-out": ([svc(MD, 9), svc("docs", 1)], {MD: 9}),
}


@pytest.mark.parametrize("name", list(WEIGHT_CASES))
def test_route_weights(name: str) -> None:
    refs, expected = WEIGHT_CASES[name]
    assert route_weights(route(OTHER_RULE, {"backendRefs": refs}), MD) == expected


def test_route_weights_reads_back_a_patch_and_is_empty_without_a_model_rule() -> None:
    observed = route({"backendRefs": [svc(MD)]})
    patched = {**observed, "spec": {"rules": route_patch(observed, MD, STABLE, CANARY, 35)["spec"]["rules"]}}
    assert route_weights(patched, MD) == {STABLE: 65, CANARY: 35}
    assert route_weights(route(OTHER_RULE), MD) == {}
    assert route_weights({"metadata": {"name": "r", "namespace": "team-a"}, "spec": {}}, MD) == {}


# name: (ModelDeployment, revision, expected Service name or None to check only the shape)
NAME_CASES: dict[str, tuple[str, str, str | None]] = {
    "named-like-the-revision": (MD, STABLE, STABLE),
    "unprefixed-revision": (MD, "0123456789", "clf-0123456789"),
    "longest-valid-md": ("m" * 45, "m" * 45 + "-0123456789", "m" * 45 + "-0123456789"),
    "too-long-is-cut-with-a-hash": ("m" * 60, "m" * 60 + "-0123456789", None),
}


@pytest.mark.parametrize("name", list(NAME_CASES))
def test_revision_service_name(name: str) -> None:
    md, revision, expected = NAME_CASES[name]
    got = revision_service_name(md, revision)
    assert len(got) <= 63 and not got.endswith("-")
    assert got == revision_service_name(md, revision)
    if expected is not None:
        assert got == expected
    else:
        assert got != revision_service_name(md, revision[:-1] + "a")  # distinct revisions, distinct names


@pytest.mark.parametrize(("name", "ours"), [(MD, True), (STABLE, True), (CANARY, True), ("clf-0123", False),
                                            ("clf-ABCDEF0123", False), ("xclf-0123456789", False),
                                            ("clf-0123456789-config", False)])
def test_is_model_service(name: str, ours: bool) -> None:
    assert is_model_service(MD, name) is ours


def test_revision_service_selects_one_revision_on_the_same_ports() -> None:
    got = build_revision_service(OWNER, CANARY)
    meta = got["metadata"]
    assert meta["name"] == CANARY and meta["namespace"] == "team-a"
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["labels"][LABEL_COMPONENT] == "revision-service" and meta["labels"][LABEL_REVISION] == CANARY
    assert ANNOTATION_SPEC_HASH in meta["annotations"]
    main = build_service(OWNER)
    assert got["spec"]["ports"] == main["spec"]["ports"] and got["spec"]["type"] == "ClusterIP"
    assert got["spec"]["selector"] == {**main["spec"]["selector"], LABEL_REVISION: CANARY}
    assert got == build_revision_service(OWNER, CANARY)
    assert meta["annotations"] != build_revision_service(OWNER, STABLE)["metadata"]["annotations"]
