"""Never adopt what we did not create: a user's object under a child's name is left alone and reported."""

from __future__ import annotations

from tests.factories import model_deployment
from tests.unit.test_planner import NOW, OPTS, _cond, converge
from tritonops.planner import Observed, creations, plan

USERS_SERVICE = {"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "clf", "namespace": "ml", "uid": "u-1", "resourceVersion": "5"},
                 "spec": {"selector": {"app": "mine"}, "ports": [{"port": 80}]}}


def test_a_users_service_under_our_name_is_not_taken_over() -> None:
    md = model_deployment()
    first = plan(md, Observed(), NOW, OPTS)
    assert ("Service", "clf") in [(o["kind"], o["metadata"]["name"]) for o in creations(Observed(), first.apply)]
    observed = Observed(foreign={("Service", "clf"): USERS_SERVICE})  # what the controller found by name
    p = plan(md, observed, NOW, OPTS)
    assert [o["kind"] for o in p.apply] == ["ConfigMap", "Deployment"]  # the model still rolls out
    assert p.status is not None and _cond(p.status, "Degraded") == ("True", "ResourceConflict")
    message = next(c["message"] for c in p.status["conditions"] if c["type"] == "Degraded")
    assert "Service ml/clf (created by someone else)" in message and "delete or rename it" in message
    assert ("Warning", "ResourceConflict") in [(e.type, e.reason) for e in p.events]


def test_an_object_with_our_labels_but_another_controller_is_neither_applied_nor_deleted() -> None:
    md = model_deployment()
    observed = Observed()
    converge(md, observed)
    stranger = {"kind": "Deployment", "metadata": {
        "name": "clf-0000000000", "labels": {"tritonops.io/revision": "clf-0000000000"},
        "ownerReferences": [{"kind": "ModelDeployment", "name": "other", "uid": "uid-other", "controller": True}]}}
    observed.deployments["clf-0000000000"] = stranger
    p = plan(md, observed, NOW, OPTS)
    assert ("Deployment", "clf-0000000000") not in p.delete
