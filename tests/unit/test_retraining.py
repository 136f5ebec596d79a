"""The drift → retraining → candidate loop as tables: triggers, cooldown, one Job at a time, the Job's
result, promotion by canary or approval, rollback, history limits, and the pod with the drift monitor."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from tests.factories import model_deployment, with_spec
from tests.unit.test_planner import NOW, OPTS, _store, converge
from tritonops.builders.deployment import build_deployment
from tritonops.builders.meta import Owner, revision_of
from tritonops.builders.monitor import trace_args
from tritonops.planner import Observed, plan
from tritonops.retrain_plan import (
    APPROVE_ANNOTATION,
    RETRAIN_ANNOTATION,
    DriftReading,
    JobView,
    effective_model,
    job_view,
)
from tritonops_runtime import contract as c
from tritonops_runtime.drift import capture

DRIFT = {"enabled": True, "method": "psi", "reference": {"storageUri": "s3://models/clf/reference_profile.json"},
         "quality": {"metric": "accuracy", "minimum": 0.8}}
RETRAINING = {"enabled": True, "image": "retrain:1", "dataStorageUri": "s3://data/clf/new.npz",
              "outputStorageUri": "s3://models/clf", "trigger": {"onDrift": True, "cooldownSeconds": 600},
              "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1}
ACCEPTED = {"decision": "Accepted", "storageUri": "s3://models/clf/2/model.pt", "version": "2",
            "digest": "sha256:" + "a" * 64, "format": "torchscript", "metrics": {"candidate": {"accuracy": 0.93}}}


def looped(**retraining: Any) -> tuple[dict[str, Any], Observed]:
    md = model_deployment(with_spec("drift", DRIFT), with_spec("retraining", {**RETRAINING, **retraining}))
    observed = Observed()
    converge(md, observed)
    return md, observed


def cycle(md: dict[str, Any], observed: Observed, seconds: float = 0, reading: DriftReading | None = None) -> Any:
    observed.drift = reading
    p = plan(md, observed, NOW + timedelta(seconds=seconds), OPTS)
    _store(observed, p)
    if p.status is not None:
        md["status"] = p.status
    observed.drift = None
    return p


def finish(observed: Observed, name: str, result: dict[str, Any] | None, state: str = "Succeeded") -> None:
    observed.jobs[name] = JobView(name, state, result, "BackoffLimitExceeded" if state == "Failed" else "",
                                  "2026-11-23T12:30:00Z")


def test_drift_starts_one_job_with_the_serving_model_and_the_cooldown_holds_the_next() -> None:
    md, observed = looped()
    assert md["status"]["retraining"] == {"phase": "Idle", "jobs": 0} and not observed.jobs
    p = cycle(md, observed, reading=DriftReading(detected=True, score=0.41, windows=3))
    (job,) = p.jobs
    assert job["metadata"]["name"] == "clf-retrain-1" and md["status"]["drift"]["detected"] is True
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[c.ENV_RETRAIN_MODEL_URI] == "s3://models/clf/model.pt" and env[c.ENV_RETRAIN_TRIGGER] == "Drift"
    assert container["command"] == ["tritonops-retrain"] and "--data-uri=$(TRITONOPS_DATA_URI)" in container["args"]
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [c.RETRAIN_EXIT_REJECTED]
    assert "tritonops.io/modeldeployment" not in job["spec"]["template"]["metadata"]["labels"]  # never serves
    assert [e.reason for e in p.events] == ["DriftDetected", "RetrainingStarted"]
    assert md["status"]["retraining"]["phase"] == "Running"
    assert not cycle(md, observed, 5, DriftReading(detected=True)).jobs  # one Job at a time
    finish(observed, "clf-retrain-1", {"decision": "Rejected", "reasons": ["accuracy 0.7 < 0.9 of the serving"]},
           "Failed")
    p = cycle(md, observed, 10)
    assert md["status"]["retraining"]["phase"] == "Rejected" and [e.reason for e in p.events] == ["CandidateRejected"]
    p = cycle(md, observed, 20, DriftReading(detected=True))
    assert not p.jobs and p.requeue_after == 580  # the cooldown counts from the first trigger
    assert cycle(md, observed, 600, DriftReading(detected=True)).jobs[0]["metadata"]["name"] == "clf-retrain-2"


def test_a_manual_request_skips_the_cooldown_once_per_value() -> None:
    md, observed = looped()
    md["metadata"]["annotations"] = {RETRAIN_ANNOTATION: "2026-11-23T12:00:00Z"}
    assert cycle(md, observed).jobs[0]["metadata"]["annotations"]["tritonops.io/trigger"] == "Manual"
    finish(observed, "clf-retrain-1", None, "Failed")
    cycle(md, observed, 1)
    assert md["status"]["retraining"]["message"] == "Job clf-retrain-1 failed: BackoffLimitExceeded"
    assert not cycle(md, observed, 2).jobs  # the same request is not a new one
    md["metadata"]["annotations"][RETRAIN_ANNOTATION] = "2026-11-23T12:00:05Z"
    assert cycle(md, observed, 3).jobs


def start_and_accept(md: dict[str, Any], observed: Observed) -> None:
    cycle(md, observed, reading=DriftReading(detected=True))
    finish(observed, "clf-retrain-1", ACCEPTED)
    cycle(md, observed, 60)


def test_an_accepted_candidate_is_served_instead_of_spec_model_and_promoted() -> None:
    md, observed = looped()
    old = md["status"]["stableRevision"]
    start_and_accept(md, observed)
    candidate = md["status"]["retraining"]["candidate"]
    assert (candidate["promotion"], candidate["version"], candidate["specModel"]) == \
        ("RollingOut", 2, "s3://models/clf/model.pt@1")
    assert md["spec"]["model"]["storageUri"] == "s3://models/clf/model.pt"  # spec is never edited
    served = effective_model(md)
    assert (served["storageUri"], served["version"], served["digest"]) == \
        (ACCEPTED["storageUri"], 2, ACCEPTED["digest"])
    status = converge(md, observed)
    assert status["stableRevision"] != old and status["retraining"]["candidate"]["promotion"] == "Promoted"
    assert status["retraining"]["serving"]["storageUri"] == ACCEPTED["storageUri"]
    assert [h["outcome"] for h in status["history"]][-2:] == ["Promoted", "CandidatePromoted"]
    md["spec"]["model"].update(storageUri=ACCEPTED["storageUri"], version=2, digest=ACCEPTED["digest"],
                               format="torchscript")  # committed to Git
    status = converge(md, observed)
    assert status["retraining"]["candidate"]["promotion"] == "Committed" and "serving" not in status["retraining"]
    assert status["stableRevision"] == revision_of("clf", md["spec"], OPTS.runtime_image)  # nothing restarted


def test_manual_promotion_waits_for_approval_of_that_job() -> None:
    md, observed = looped(promotion={"mode": "Manual"})
    stable = md["status"]["stableRevision"]
    start_and_accept(md, observed)
    assert md["status"]["retraining"]["candidate"]["promotion"] == "Pending"
    assert converge(md, observed)["stableRevision"] == stable
    md["metadata"]["annotations"] = {APPROVE_ANNOTATION: "clf-retrain-1"}
    assert converge(md, observed)["retraining"]["candidate"]["promotion"] == "Promoted"


def test_an_aborted_canary_rolls_the_candidate_back_and_the_previous_model_serves() -> None:
    md, observed = looped()
    start_and_accept(md, observed)
    md["status"]["rollout"] = {"decision": "Aborted", "startedAt": "2026-11-23T12:01:00Z"}
    cycle(md, observed, 61)
    assert md["status"]["retraining"]["candidate"]["promotion"] == "RolledBack"
    assert effective_model(md) is md["spec"]["model"]


def test_a_spec_change_supersedes_the_candidate() -> None:
    md, observed = looped()
    start_and_accept(md, observed)
    md["spec"]["model"]["version"] = 7
    cycle(md, observed, 61)
    assert md["status"]["retraining"]["candidate"]["promotion"] == "Superseded"
    assert effective_model(md)["version"] == 7


def test_finished_jobs_beyond_the_history_limits_are_deleted() -> None:
    md, observed = looped()
    md["status"]["retraining"]["jobs"] = 3
    for n, state in ((1, "Succeeded"), (2, "Succeeded"), (3, "Failed")):
        finish(observed, f"clf-retrain-{n}", None, state)
    assert sorted(d for d in cycle(md, observed).delete if d[0] == "Job") == [("Job", "clf-retrain-1")]


def test_the_result_is_the_newest_pods_termination_message() -> None:
    def pod(created: str, message: str) -> dict[str, Any]:
        return {"metadata": {"creationTimestamp": created}, "status": {"containerStatuses": [
            {"name": "retrain", "state": {"terminated": {"exitCode": 1, "message": message}}}]}}

    job = {"metadata": {"name": "clf-retrain-1"}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code 3"}]}}
    view = job_view(job, [pod("2026-11-23T12:00:00Z", "Traceback ..."),
                          pod("2026-11-23T12:01:00Z", json.dumps({"decision": "Rejected", "reasons": ["worse"]}))])
    assert (view.state, view.result, view.reason) == ("Failed", {"decision": "Rejected", "reasons": ["worse"]},
                                                      "exit code 3")
    assert job_view({"metadata": {"name": "j"}, "status": {}}, []).state == "Running"
    torch = "Traceback:\n  ...\nModuleNotFoundError: No module named 'torch'\n"
    crashed = job_view(job, [pod("2026-11-23T12:00:00Z", torch)])
    assert crashed.result is None and crashed.reason == "ModuleNotFoundError: No module named 'torch'; exit code 3"


def test_the_monitor_runs_beside_triton_and_disabled_drift_changes_no_revision() -> None:
    plain = model_deployment()
    watched = model_deployment(with_spec("drift", DRIFT))
    off = model_deployment(with_spec("drift", {**DRIFT, "enabled": False}))
    assert revision_of("clf", off["spec"], "img") == revision_of("clf", plain["spec"], "img")
    assert revision_of("clf", watched["spec"], "img") != revision_of("clf", plain["spec"], "img")
    pod = build_deployment(Owner("clf", "ml", "u"), "clf-x", watched["spec"], 1, OPTS)["spec"]["template"]["spec"]
    triton, monitor = pod["containers"]
    assert monitor["name"] == "drift-monitor" and "readinessProbe" not in monitor  # never takes the model down
    args = dict(zip(monitor["args"][::2], monitor["args"][1::2], strict=False))
    assert (args["--threshold"], args["--method"], args["--quality-metric"]) == ("0.2", "psi", "accuracy")
    assert triton["args"][-6:] == trace_args(DRIFT)
    runtime = capture.trace_args(f"{c.CAPTURE_DIR}/{c.TRACE_FILE}", 10, 20)  # the runtime's own, verified
    assert trace_args(DRIFT) == [f"{flag}={value}" for flag, value in zip(runtime[::2], runtime[1::2], strict=True)]
    assert {"name": "capture", "mountPath": c.CAPTURE_DIR} in triton["volumeMounts"]


def test_an_onnx_served_model_is_trained_from_its_torchscript_and_replaced_by_the_candidates_onnx() -> None:
    pt = {"storageUri": "s3://models/clf/model.pt", "digest": "sha256:" + "b" * 64}
    md, observed = looped(trainableModel=pt)
    md["spec"]["model"].update(storageUri="s3://models/clf/model.onnx", format="onnx", digest="sha256:" + "c" * 64)
    converge(md, observed)
    job = cycle(md, observed, reading=DriftReading(detected=True)).jobs[0]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env[c.ENV_RETRAIN_MODEL_URI], env[c.ENV_RETRAIN_MODEL_DIGEST]) == (pt["storageUri"], pt["digest"])
    assert "--onnx" in job["spec"]["template"]["spec"]["containers"][0]["args"]  # servable the same way
    onnx = {"versionUri": "s3://models/clf/2/", "onnxDigest": "sha256:" + "d" * 64}
    finish(observed, "clf-retrain-1", {**ACCEPTED, **onnx})
    cycle(md, observed, 60)
    served = effective_model(md)
    assert (served["storageUri"], served["format"], served["digest"]) == \
        ("s3://models/clf/2/model.onnx", "onnx", "sha256:" + "d" * 64)
    converge(md, observed)
    md["metadata"]["annotations"] = {RETRAIN_ANNOTATION: "again"}
    job = cycle(md, observed, 120).jobs[0]  # the next run fine-tunes the candidate's own TorchScript file
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env[c.ENV_RETRAIN_MODEL_URI], env[c.ENV_RETRAIN_MODEL_DIGEST]) == (ACCEPTED["storageUri"],
                                                                               ACCEPTED["digest"])
