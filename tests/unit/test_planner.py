"""Planner tables: (spec, status, observed children) → (objects to apply, deletions, status, events)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.factories import as_observed, model_deployment, ready_deployment, with_spec, with_status
from tritonops.builders.deployment import BuildOptions
from tritonops.builders.meta import revision_of
from tritonops.planner import Observed, Plan, plan
from tritonops.retrain_plan import JobView
from tritonops.status.conditions import find

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
OPTS = BuildOptions(runtime_image="runtime:test")


def _kinds(p: Plan) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in p.apply]


def _cond(status: dict[str, Any], type_: str) -> tuple[str, str]:
    c = find(status["conditions"], type_)
    assert c is not None, type_
    return c["status"], c["reason"]


def _store(observed: Observed, p: Plan, ready: bool = True) -> None:
    """Play the API server: applied objects appear (Deployments ready), deleted ones vanish."""
    for obj in p.apply:
        if obj["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            observed.autoscalers[obj["kind"]] = as_observed(obj)
            continue
        table = {"Deployment": observed.deployments, "ConfigMap": observed.config_maps,
                 "Service": observed.services}[obj["kind"]]
        table[obj["metadata"]["name"]] = ready_deployment(obj) if obj["kind"] == "Deployment" and ready \
            else as_observed(obj)
    for obj in p.scale:  # only spec.replicas changes
        dep = observed.deployments[obj["metadata"]["name"]]
        observed.deployments[dep["metadata"]["name"]] = ready_deployment(
            {**dep, "spec": {**dep["spec"], "replicas": obj["spec"]["replicas"]}})
    for job in p.jobs:  # a retraining Job starts running
        observed.jobs[job["metadata"]["name"]] = JobView(job["metadata"]["name"], "Running")
    for kind, name in p.delete:
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            observed.autoscalers.pop(kind)
            continue
        if kind == "Job":
            observed.jobs.pop(name)
            continue
        {"Deployment": observed.deployments, "ConfigMap": observed.config_maps,
         "Service": observed.services}[kind].pop(name)


def converge(md: dict[str, Any], observed: Observed, now: datetime = NOW) -> dict[str, Any]:
    """Run cycles until a plan changes nothing; returns the final status."""
    for _ in range(6):
        p = plan(md, observed, now, OPTS)
        if not p.apply and not p.scale and not p.delete and p.status is None:
            return dict(md.get("status") or {})
        _store(observed, p)
        if p.status is not None:
            md["status"] = p.status
    raise AssertionError("did not converge in 6 cycles")


def test_new_model_deployment_creates_children_and_reports_progress() -> None:
    md = model_deployment()
    rev = revision_of("clf", md["spec"], OPTS.runtime_image)
    p = plan(md, Observed(), NOW, OPTS)
    assert _kinds(p) == [("Service", "clf"), ("ConfigMap", f"{rev}-config"), ("Deployment", rev)]
    assert p.delete == []
    assert p.status is not None
    assert _cond(p.status, "Ready") == ("False", "NoRevisionAvailable")
    assert _cond(p.status, "Progressing") == ("True", "NewRevisionProgressing")
    assert _cond(p.status, "InvalidSpec") == ("False", "SpecValid")
    assert p.status["canaryRevision"] == rev
    assert p.status["phase"] == "Progressing"
    assert p.status["rollout"]["startedAt"] == "2026-11-23T12:00:00Z"
    assert p.status["observedGeneration"] == 1
    assert p.status["selector"] == ("app.kubernetes.io/instance=clf,app.kubernetes.io/name=triton,"
                                    "tritonops.io/modeldeployment=clf")


def test_converged_state_needs_zero_writes() -> None:
    md, observed = model_deployment(), Observed()
    status = converge(md, observed)
    rev = revision_of("clf", md["spec"], OPTS.runtime_image)
    assert status["stableRevision"] == rev and "canaryRevision" not in status
    assert _cond(status, "Ready") == ("True", "RevisionAvailable")
    assert status["phase"] == "Ready"
    later = plan(md, observed, NOW + timedelta(hours=1), OPTS)
    assert (later.apply, later.delete, later.status, later.events) == ([], [], None, [])


def test_model_change_rolls_out_new_revision_while_old_keeps_serving() -> None:
    md, observed = model_deployment(), Observed()
    converge(md, observed)
    old = md["status"]["stableRevision"]
    with_spec("model.version", 2)(md)
    md["metadata"]["generation"] = 2
    p = plan(md, observed, NOW, OPTS)
    new = revision_of("clf", md["spec"], OPTS.runtime_image)
    assert _kinds(p) == [("ConfigMap", f"{new}-config"), ("Deployment", new)]
    assert p.delete == []
    assert p.status is not None
    assert p.status["stableRevision"] == old and p.status["canaryRevision"] == new
    assert _cond(p.status, "Ready") == ("True", "RevisionAvailable")
    _store(observed, p, ready=False)
    md["status"] = p.status
    assert set(observed.deployments) == {old, new}


def test_available_new_revision_is_promoted_and_old_removed() -> None:
    md, observed = model_deployment(), Observed()
    converge(md, observed)
    old = md["status"]["stableRevision"]
    with_spec("model.version", 2)(md)
    status = converge(md, observed, NOW + timedelta(minutes=1))
    new = revision_of("clf", md["spec"], OPTS.runtime_image)
    assert status["stableRevision"] == new
    assert set(observed.deployments) == {new}
    assert set(observed.config_maps) == {f"{new}-config"}
    assert [(h["revision"], h["outcome"]) for h in status["history"]] == [(old, "Superseded"), (new, "Promoted")]
    assert status["history"][0]["retiredAt"] == "2026-11-23T12:01:00Z"


def test_promotion_posts_an_event() -> None:
    md, observed = model_deployment(), Observed()
    p = plan(md, observed, NOW, OPTS)
    _store(observed, p)
    md["status"] = p.status
    p2 = plan(md, observed, NOW, OPTS)
    assert [(e.type, e.reason) for e in p2.events] == [("Normal", "RevisionPromoted")]


def test_invalid_spec_keeps_the_serving_revision_untouched() -> None:
    md, observed = model_deployment(), Observed()
    converge(md, observed)
    stable = md["status"]["stableRevision"]
    with_spec("runtime.triton.instanceGroups", [{"kind": "KIND_GPU", "count": 1, "gpus": [3]}])(md)
    md["metadata"]["generation"] = 2
    p = plan(md, observed, NOW, OPTS)
    assert [k for k in _kinds(p) if k[0] != "Service"] == [] and p.delete == []
    assert p.status is not None
    assert _cond(p.status, "InvalidSpec") == ("True", "InvalidSpec")
    assert _cond(p.status, "Ready") == ("True", "RevisionAvailable")
    assert _cond(p.status, "Progressing") == ("False", "RolloutBlockedByInvalidSpec")
    assert p.status["stableRevision"] == stable and p.status["phase"] == "InvalidSpec"
    message = find(p.status["conditions"], "InvalidSpec")["message"]  # type: ignore[index]
    assert "spec.runtime.triton.instanceGroups[0].gpus" in message and "nvidia.com/gpu" in message
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "InvalidSpec")]


def test_unschedulable_pods_degrade_with_the_schedulers_reason() -> None:
    md = model_deployment()
    rev = revision_of("clf", md["spec"], OPTS.runtime_image)
    pod = {"metadata": {"name": f"{rev}-abc", "labels": {"tritonops.io/revision": rev}},
           "status": {"phase": "Pending", "conditions": [{
               "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
               "message": "0/4 nodes are available: 2 Insufficient nvidia.com/gpu."}]}}
    p = plan(md, Observed(pods=[pod]), NOW, OPTS)
    assert p.status is not None
    assert _cond(p.status, "Degraded") == ("True", "InsufficientGPU")
    assert "Insufficient nvidia.com/gpu" in find(p.status["conditions"], "Degraded")["message"]  # type: ignore[index]
    assert p.status["phase"] == "Degraded"


def test_failed_fetch_is_reported_from_the_termination_message() -> None:
    md = model_deployment()
    rev = revision_of("clf", md["spec"], OPTS.runtime_image)
    pod = {"metadata": {"name": f"{rev}-abc", "labels": {"tritonops.io/revision": rev}},
           "status": {"initContainerStatuses": [{"name": "fetch-model", "restartCount": 2, "state": {
               "terminated": {"exitCode": 1, "message": "tritonops-fetch: sha256 mismatch"}}}]}}
    p = plan(md, Observed(pods=[pod]), NOW, OPTS)
    assert p.status is not None
    assert _cond(p.status, "Degraded") == ("True", "ModelFetchFailed")
    assert "sha256 mismatch" in find(p.status["conditions"], "Degraded")["message"]  # type: ignore[index]


def test_progress_deadline_exceeded() -> None:
    md = model_deployment(with_spec("rollout.progressDeadlineSeconds", 60))
    p = plan(md, Observed(), NOW, OPTS)
    md["status"] = p.status
    late = plan(md, Observed(), NOW + timedelta(seconds=61), OPTS)
    assert late.status is not None
    assert _cond(late.status, "Progressing") == ("False", "ProgressDeadlineExceeded")
    assert _cond(late.status, "Degraded") == ("True", "ProgressDeadlineExceeded")


def test_hand_edited_deployment_is_reapplied() -> None:
    md, observed = model_deployment(), Observed()
    converge(md, observed)
    rev = md["status"]["stableRevision"]
    observed.deployments[rev]["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    p = plan(md, observed, NOW, OPTS)
    assert _kinds(p) == [("Deployment", rev)]


def test_server_canonical_quantities_are_not_a_change() -> None:
    md, observed = model_deployment(), Observed()
    converge(md, observed)
    dep = observed.deployments[md["status"]["stableRevision"]]
    dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"
    dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1000m"
    assert plan(md, observed, NOW, OPTS).apply == []


def test_replicas_change_keeps_revision() -> None:
    md, observed = model_deployment(), Observed()
    converge(md, observed)
    rev = md["status"]["stableRevision"]
    with_spec("replicas", 5)(md)
    p = plan(md, observed, NOW, OPTS)
    assert _kinds(p) == [("Deployment", rev)]
    assert p.apply[0]["spec"]["replicas"] == 5


def test_deleted_stable_deployment_is_recreated() -> None:
    md, observed = model_deployment(), Observed()
    converge(md, observed)
    rev = md["status"]["stableRevision"]
    del observed.deployments[rev]
    p = plan(md, observed, NOW, OPTS)
    assert _kinds(p) == [("Deployment", rev)]


def test_last_transition_time_only_moves_on_a_flip() -> None:
    md, observed = model_deployment(), Observed()
    converge(md, observed)
    before = copy.deepcopy(md["status"]["conditions"])
    with_spec("rollout.progressDeadlineSeconds", 900)(md)
    md["metadata"]["generation"] = 2
    later = NOW + timedelta(hours=2)
    status = converge(md, observed, later)
    after = {c["type"]: c for c in status["conditions"]}
    for c in before:
        assert after[c["type"]]["lastTransitionTime"] == c["lastTransitionTime"]
        assert after[c["type"]]["observedGeneration"] == 2


def test_stale_status_from_other_fields_is_removed() -> None:
    md = model_deployment(with_status(canaryRevision="clf-gone", canaryWeight=0))
    p = plan(md, Observed(), NOW, OPTS)
    assert p.status is not None and "canaryWeight" not in p.status


def test_scaling_past_gpu_capacity_degrades_the_stable_revision() -> None:
    md, observed = model_deployment(), Observed()
    converge(md, observed)
    rev = md["status"]["stableRevision"]
    with_spec("replicas", 3)(md)
    pod = {"metadata": {"name": f"{rev}-xyz", "labels": {"tritonops.io/revision": rev}},
           "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                      "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}]}}
    observed.pods.append(pod)
    p = plan(md, observed, NOW, OPTS)
    assert p.status is not None
    assert _cond(p.status, "Degraded") == ("True", "InsufficientGPU")
    assert _cond(p.status, "Ready") == ("False", "ReplicasUnavailable")
