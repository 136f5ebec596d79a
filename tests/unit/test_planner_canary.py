"""Planner tables for Canary rollouts with replica-ratio traffic (Surge): steps, pauses, promote, abort."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from tests.factories import model_deployment, with_spec
from tests.unit.test_planner import NOW, OPTS, _cond, _store, converge
from tritonops import analysis as a
from tritonops.builders.meta import revision_of
from tritonops.planner import Observed, Plan, plan

STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"durationSeconds": 60}}]


def canary_md(*steps: dict[str, Any]) -> tuple[dict[str, Any], Observed, str, str]:
    """A ModelDeployment serving version 1 on 4 replicas, then asked for version 2 by canary steps."""
    md = model_deployment(with_spec("replicas", 4))
    observed = Observed()
    converge(md, observed)
    stable = md["status"]["stableRevision"]
    md["spec"]["model"]["version"] = 2
    md["spec"]["rollout"] = {"strategy": "Canary", "canary": {"steps": list(steps or STEPS)},
                             "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10, "paused": False}
    md["metadata"]["generation"] = 2
    return md, observed, stable, revision_of("clf", md["spec"], OPTS.runtime_image)


def cycle(md: dict[str, Any], observed: Observed, seconds: float = 0, ready: bool = True) -> Plan:
    """One reconcile at NOW + seconds; the API server takes what it applies (Deployments ready if ``ready``)."""
    p = plan(md, observed, NOW + timedelta(seconds=seconds), OPTS)
    _store(observed, p, ready)
    if p.status is not None:
        md["status"] = p.status
    return p


def replicas(observed: Observed, name: str) -> int:
    return int(observed.deployments[name]["spec"]["replicas"])


def test_weight_follows_ready_canary_replicas_and_an_indefinite_pause_holds() -> None:
    md, observed, stable, canary = canary_md()
    cycle(md, observed, ready=False)
    assert replicas(observed, canary) == 1 and replicas(observed, stable) == 4  # Surge: stable untouched
    assert md["status"]["canaryWeight"] == 0  # not ready yet: no weight claimed
    assert md["status"]["rollout"]["currentStepIndex"] == 0
    observed.deployments.pop(canary)
    cycle(md, observed)  # the canary Deployment appears ready
    p = cycle(md, observed)
    assert [(e.type, e.reason) for e in p.events] == [("Normal", "CanaryStep"), ("Normal", "CanaryPaused")]
    status = md["status"]
    assert (status["canaryWeight"], status["rollout"]["currentStepIndex"]) == (20, 1)  # 1 of 5 pods
    assert status["rollout"]["decision"] == "Paused"
    assert _cond(status, "Progressing") == ("True", "CanaryPaused")
    assert status["stableRevision"] == stable and status["canaryRevision"] == canary
    assert cycle(md, observed, seconds=86_400).status is None  # held: nothing changes, nothing written


def test_promote_annotation_skips_the_remaining_steps_and_the_canary_becomes_stable() -> None:
    md, observed, stable, canary = canary_md()
    for _ in range(3):
        cycle(md, observed)
    md["metadata"]["annotations"] = {"tritonops.io/promote": canary}
    cycle(md, observed, 5)
    assert replicas(observed, canary) == 4
    p = cycle(md, observed, 6)
    status = md["status"]
    assert status["stableRevision"] == canary and "canaryRevision" not in status and "canaryWeight" not in status
    assert ("Deployment", stable) in p.delete
    assert [h["outcome"] for h in status["history"]] == ["Superseded", "Promoted"]
    assert "currentStepIndex" not in status.get("rollout", {})


def test_a_promotion_for_another_revision_does_nothing() -> None:
    md, observed, _, canary = canary_md()
    md["metadata"]["annotations"] = {"tritonops.io/promote": "clf-0000000000"}
    for _ in range(3):
        cycle(md, observed)
    assert md["status"]["rollout"]["decision"] == "Paused" and md["status"]["canaryRevision"] == canary


def test_abort_sends_traffic_back_and_records_it_once() -> None:
    md, observed, stable, canary = canary_md()
    for _ in range(3):
        cycle(md, observed)
    md["metadata"]["annotations"] = {"tritonops.io/abort": canary}
    p = cycle(md, observed, 10)
    status = md["status"]
    assert replicas(observed, canary) == 0 and replicas(observed, stable) == 4
    assert status["canaryWeight"] == 0 and status["rollout"]["decision"] == "Aborted"
    assert _cond(status, "Degraded") == ("True", "RolloutAborted")
    assert _cond(status, "Ready") == ("True", "RevisionAvailable")  # stable serves alone
    assert any(e.type == "Warning" and e.reason == "RolloutAborted" for e in p.events)
    assert [h["outcome"] for h in status["history"]] == ["Promoted", "Aborted"]
    cycle(md, observed, 20)  # replica counts catch up with the canary's scale-down
    assert cycle(md, observed, 30).status is None  # stays aborted
    assert [h["outcome"] for h in md["status"]["history"]] == ["Promoted", "Aborted"]


def test_timed_pause_promotes_after_its_duration() -> None:
    md, observed, _, canary = canary_md({"setWeight": 50}, {"pause": {"durationSeconds": 60}})
    cycle(md, observed)
    p = cycle(md, observed, 1)
    assert md["status"]["canaryWeight"] == 50 and p.requeue_after == 60
    assert cycle(md, observed, 30).status is None
    cycle(md, observed, 61)
    cycle(md, observed, 62)
    assert md["status"]["stableRevision"] == canary


def test_spec_change_mid_canary_restarts_against_the_same_stable() -> None:
    md, observed, stable, canary = canary_md()
    for _ in range(3):
        cycle(md, observed)
    md["spec"]["model"]["version"] = 3
    md["metadata"]["generation"] = 3
    newer = revision_of("clf", md["spec"], OPTS.runtime_image)
    p = cycle(md, observed, 30)
    assert ("Deployment", canary) in p.delete and ("Deployment", stable) not in p.delete
    status = md["status"]
    assert status["stableRevision"] == stable and status["canaryRevision"] == newer
    assert status["rollout"]["currentStepIndex"] == 0 and status["canaryWeight"] == 0


def test_spec_rollout_paused_holds_the_canary() -> None:
    md, observed, _, canary = canary_md({"setWeight": 50}, {"pause": {"durationSeconds": 1}})
    md["spec"]["rollout"]["paused"] = True
    for seconds in (0, 1, 100):
        cycle(md, observed, seconds)
    assert md["status"]["rollout"]["decision"] == "Paused" and replicas(observed, canary) == 0  # frozen
    assert "spec.rollout.paused" in md["status"]["rollout"]["message"]


def test_pause_annotation_holds_this_canary_and_removing_it_resumes() -> None:
    md, observed, _, canary = canary_md({"setWeight": 50}, {"pause": {"durationSeconds": 1}})
    md["metadata"]["annotations"] = {"tritonops.io/pause": canary}
    for seconds in (0, 1, 100):
        cycle(md, observed, seconds)
    assert md["status"]["rollout"]["decision"] == "Paused" and md["status"]["canaryRevision"] == canary
    md["metadata"]["annotations"] = {}
    for seconds in (101, 102, 103, 104):
        cycle(md, observed, seconds)
    assert md["status"]["stableRevision"] == canary


ANALYSIS = {"intervalSeconds": 30, "failureLimit": 2, "inconclusiveLimit": 2, "minRequests": 100,
            "metrics": [{"name": "ErrorRate", "thresholdRange": {"max": 0.05}},
                        {"name": "LatencyP99Ms", "thresholdRange": {"max": 40}}]}
WITH_PROMETHEUS = replace(OPTS, prometheus_url="http://prometheus:9090")


def analysed_md(*steps: dict[str, Any]) -> tuple[dict[str, Any], Observed, str, str]:
    md, observed, stable, canary = canary_md(*steps)
    md["spec"]["rollout"]["canary"]["analysis"] = ANALYSIS
    return md, observed, stable, canary


def window(canary: str, error_rate: float, requests: float = 500.0) -> a.Window:
    checks = a.checks(ANALYSIS, "default", canary)
    return a.judge(checks, {"ErrorRate": error_rate, "LatencyP99Ms": 12.0}, requests, 100, canary)


def analysed(md: dict[str, Any], observed: Observed, seconds: float, win: a.Window | None = None) -> Plan:
    """One cycle with the operator's Prometheus configured; ``win``: the window the controller measured."""
    observed.analysis = win
    p = plan(md, observed, NOW + timedelta(seconds=seconds), WITH_PROMETHEUS)
    observed.analysis = None
    _store(observed, p, True)
    if p.status is not None:
        md["status"] = p.status
    return p


def test_analysis_without_a_prometheus_is_refused_and_stable_keeps_serving() -> None:
    md, observed, stable, _ = analysed_md({"setWeight": 50}, {"analysis": {"durationSeconds": 60}})
    p = cycle(md, observed)
    status = md["status"]
    assert _cond(status, "InvalidSpec") == ("True", "InvalidSpec")
    assert "analysis.prometheus.url" in next(c["message"] for c in status["conditions"] if c["type"] == "InvalidSpec")
    assert status["stableRevision"] == stable and not p.delete
    assert [o["kind"] for o in p.apply if o["kind"] == "Deployment"] == []


def test_passing_windows_complete_the_analysis_step_and_promote() -> None:
    md, observed, stable, canary = analysed_md({"setWeight": 25}, {"analysis": {"durationSeconds": 60}})
    analysed(md, observed, 0)
    p = analysed(md, observed, 1)  # the canary is ready: weight 20 %, analysis counts from here
    rollout = md["status"]["rollout"]
    assert (rollout["weight"], rollout["currentStepIndex"], rollout["analysis"]) == (
        20, 1, {"since": "2026-11-23T12:00:01Z"})
    assert p.requeue_after == 30  # the next window is due in one interval
    analysed(md, observed, 31, window(canary, 0.0))
    rollout = md["status"]["rollout"]
    assert rollout["analysis"]["result"] == "Passed" and rollout["currentStepIndex"] == 1  # 60 s not over
    analysed(md, observed, 61, window(canary, 0.01))
    analysed(md, observed, 62)  # promoted: canary scaled to the full size
    analysed(md, observed, 63)
    assert md["status"]["stableRevision"] == canary
    assert ("Deployment", stable) in analysed(md, observed, 64).delete or stable not in observed.deployments


def test_failed_windows_up_to_the_limit_abort_with_the_numbers() -> None:
    md, observed, stable, canary = analysed_md({"setWeight": 50}, {"pause": {}})
    analysed(md, observed, 0)
    analysed(md, observed, 1)
    p = analysed(md, observed, 31, window(canary, 0.2))
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "AnalysisFailed")]
    assert md["status"]["rollout"]["decision"] == "Paused"  # one failure of two tolerated
    assert replicas(observed, canary) == 4
    p = analysed(md, observed, 61, window(canary, 0.3))
    status = md["status"]
    assert status["rollout"]["decision"] == "Aborted" and replicas(observed, canary) == 0
    assert _cond(status, "Degraded") == ("True", "RolloutAborted")
    assert ("Warning", "RolloutAborted") in [(e.type, e.reason) for e in p.events]
    entry = status["history"][-1]
    assert entry["outcome"] == "Aborted" and entry["revision"] == canary
    assert "2 failed window(s), limit 2" in entry["message"] and "ErrorRate=0.3 (max 0.05)" in entry["message"]
    assert status["stableRevision"] == stable and replicas(observed, stable) == 4
    analysed(md, observed, 3600)  # the canary's pods are gone: replica counts catch up
    assert analysed(md, observed, 3601).status is None  # an aborted canary stays aborted, stable serves


def test_too_little_traffic_pauses_until_a_user_promotes_the_step() -> None:
    md, observed, _, canary = analysed_md({"setWeight": 25}, {"analysis": {"durationSeconds": 30}})
    analysed(md, observed, 0)
    analysed(md, observed, 1)
    analysed(md, observed, 31, window(canary, 0.0, requests=5))
    assert md["status"]["rollout"]["decision"] == "Progressing"
    analysed(md, observed, 61, window(canary, 0.0, requests=5))
    status = md["status"]
    assert status["rollout"]["decision"] == "Paused" and status["canaryWeight"] == 20  # keeps its share
    assert _cond(status, "Progressing") == ("True", "AnalysisInconclusive")
    assert "too little canary traffic" in status["rollout"]["message"]
    md["metadata"]["annotations"] = {"tritonops.io/promote-step": f"{canary}/1"}
    analysed(md, observed, 91, window(canary, 0.0))  # traffic is back and passes: the step completes
    assert md["status"]["rollout"]["decision"] in ("Progressing", "Promoted")
    assert md["status"]["rollout"]["currentStepIndex"] == 2


def test_every_step_done_waits_for_a_passing_window_before_promoting() -> None:
    md, observed, _, canary = analysed_md({"setWeight": 25})
    analysed(md, observed, 0)
    analysed(md, observed, 1)
    assert md["status"]["rollout"]["message"].startswith("every step done; waiting for a passing analysis")
    analysed(md, observed, 31, window(canary, 0.0))
    assert md["status"]["rollout"]["decision"] == "Promoted"


def test_a_restarted_operator_resumes_the_analysis_record_from_status() -> None:
    md, observed, _, canary = analysed_md({"setWeight": 50}, {"pause": {}})
    analysed(md, observed, 0)
    analysed(md, observed, 1)
    analysed(md, observed, 31, window(canary, 0.2))
    md = json.loads(json.dumps(md))  # a new process sees only what the API server holds
    analysed(md, observed, 61, window(canary, 0.2))
    assert md["status"]["rollout"]["decision"] == "Aborted"
    assert md["status"]["rollout"]["analysis"]["failures"] == 2


def test_a_window_of_another_revision_is_ignored() -> None:
    md, observed, _, _ = analysed_md({"setWeight": 50}, {"pause": {}})
    analysed(md, observed, 0)
    analysed(md, observed, 1)
    analysed(md, observed, 31, window("clf-0000000000", 0.9))
    assert "windows" not in md["status"]["rollout"]["analysis"]


def test_no_surge_lends_stable_replicas_to_the_canary_and_abort_returns_them() -> None:
    md, observed, stable, canary = canary_md()
    md["spec"]["rollout"]["canary"]["capacityPolicy"] = "NoSurge"
    p = cycle(md, observed)
    assert [(o["metadata"]["name"], o["spec"]["replicas"]) for o in p.scale] == [(stable, 3)]
    assert p.scale[0]["spec"] == {"replicas": 3}  # only replicas: the rest stays the operator's apply
    assert replicas(observed, canary) + replicas(observed, stable) == 4  # the GPU count stays constant
    cycle(md, observed)
    assert md["status"]["canaryWeight"] == 25
    md["metadata"]["annotations"] = {"tritonops.io/abort": canary}
    p = cycle(md, observed, 10)
    assert [(o["metadata"]["name"], o["spec"]["replicas"]) for o in p.scale] == [(stable, 4)]
    assert replicas(observed, canary) == 0


def test_no_surge_promotion_hands_every_replica_to_the_canary() -> None:
    md, observed, stable, canary = canary_md({"setWeight": 50}, {"pause": {}})
    md["spec"]["rollout"]["canary"]["capacityPolicy"] = "NoSurge"
    cycle(md, observed)
    cycle(md, observed)
    assert (replicas(observed, stable), replicas(observed, canary)) == (2, 2)
    md["metadata"]["annotations"] = {"tritonops.io/promote": canary}
    p = cycle(md, observed, 5)
    assert [(o["metadata"]["name"], o["spec"]["replicas"]) for o in p.scale] == [(stable, 0)]
    assert replicas(observed, canary) == 4
    cycle(md, observed, 6)
    assert md["status"]["stableRevision"] == canary and stable not in observed.deployments


def test_promote_step_ends_that_pause_only() -> None:
    md, observed, _, canary = canary_md()
    for _ in range(3):
        cycle(md, observed)
    md["metadata"]["annotations"] = {"tritonops.io/promote-step": f"{canary}/1"}
    cycle(md, observed, 5)
    cycle(md, observed, 6)
    rollout = md["status"]["rollout"]
    assert (rollout["currentStepIndex"], md["status"]["canaryWeight"]) == (3, 50)  # past setWeight 50
    assert md["status"]["canaryRevision"] == canary  # the timed pause of step 4 still runs
    md["metadata"]["annotations"] = {"tritonops.io/promote-step": f"{canary}/0"}  # a stale step: ignored
    assert cycle(md, observed, 7).status is None
