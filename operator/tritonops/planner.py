"""The plan: a pure function from a ModelDeployment and its observed children to what should change.

``plan()`` returns the objects to apply (only those out of sync), the objects to delete, the status to
write (None when unchanged) and the events to post. It reads no clock (``now`` is passed in), does no I/O
and is table-tested. Revisions: the *target* is the revision the spec asks for; the *stable* revision
is the last one that became available. The stable revision keeps serving until the target is available,
and is never touched while the spec cannot be honoured.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tritonops import autoscaling_plan, rolling
from tritonops.analysis import Window
from tritonops.builders.configmap import build_config_map
from tritonops.builders.deployment import BuildOptions, build_deployment, deployment_replicas
from tritonops.builders.meta import LABEL_REVISION, Owner, selector_string
from tritonops.builders.monitor import drift_enabled
from tritonops.builders.service import build_service
from tritonops.canary import ABORTED, parse_time, stamp, to_status
from tritonops.diagnose import Diagnosis, deployment_available, diagnose
from tritonops.diff import first_difference
from tritonops.history import Event, canary_events, condition_events, history_limit
from tritonops.history import history as history_after
from tritonops.ownership import conflict_message, controlled_by
from tritonops.retrain_plan import DriftReading, JobView, merge_status, plan_retraining, serving_md
from tritonops.revisions import frozen, resolve
from tritonops.rollout_plan import CanaryPlan, aborted_entry, canary_conditions, plan_canary, route_ref
from tritonops.status import reasons as r
from tritonops.status.conditions import Cond, find, merge, phase
from tritonops.traffic_plan import desired_route, retire_delay, revision_services, route_problem
from tritonops.validate import problems_of, render_model_config


@dataclass
class Observed:
    """The children of one ModelDeployment as read from the API server, keyed by name."""

    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] | None = None  # read only when a pod is unschedulable (None: not read)
    foreign: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (kind, name): not ours
    autoscalers: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> our HPA / ScaledObject
    keda_installed: bool | None = None  # whether the ScaledObject CRD exists (None: not looked)
    analysis: Window | None = None  # a canary analysis window measured this cycle
    route: dict[str, Any] | None = None  # the HTTPRoute a routed canary weights (None: absent or not routed)
    gpu_room: int | None = None  # replicas the free GPUs take now (read only while the autoscaler grows)
    jobs: dict[str, JobView] = field(default_factory=dict)  # our retraining Jobs, by name
    drift: DriftReading | None = None  # the drift monitors, when read this cycle


@dataclass
class Plan:
    """What one reconcile cycle should do."""

    apply: list[dict[str, Any]]
    why: list[str]  # for each object to apply, the first field that differs (for the log)
    scale: list[dict[str, Any]]  # replicas of a stable revision lent to a NoSurge canary (own field manager)
    delete: list[tuple[str, str]]  # (kind, name)
    status: dict[str, Any] | None  # the full new status, or None when unchanged
    events: list[Event]
    requeue_after: float | None
    route: dict[str, Any] | None = None  # HTTPRoute weights to apply (field manager TRAFFIC_FIELD_MANAGER)
    jobs: list[dict[str, Any]] = field(default_factory=list)  # retraining Jobs to create



@dataclass(frozen=True)
class _Revisions:
    target: str | None  # None when the spec cannot be honoured
    stable: str | None  # after this cycle's promotion, if any
    promoted: bool


CANARY_KEYS = ("currentStepIndex", "stepStartedAt", "weight", "decision", "message", "decidedAt", "analysis")


timestamp = stamp  # RFC 3339, seconds precision, UTC (tritonops.canary.stamp)


def desired_replicas(spec: dict[str, Any]) -> int:
    """The serving size: spec.replicas (written by the autoscaler, when there is one) within its bounds."""
    return autoscaling_plan.total(spec)


def _recorded_stable(md: dict[str, Any], observed: Observed, target: str | None) -> str | None:
    stable: str | None = (md.get("status") or {}).get("stableRevision") or None
    if stable and stable != target and stable not in observed.deployments:
        return None  # its Deployment is gone; nothing of it serves any more
    return stable


def _revisions(md: dict[str, Any], observed: Observed, target: str | None, stable: str | None,
               canary: CanaryPlan | None) -> _Revisions:
    ready = canary.promote if canary else deployment_available(
        observed.deployments.get(target or ""), desired_replicas(md["spec"]))
    if target and target != stable and ready:
        return _Revisions(target, target, True)
    return _Revisions(target, stable, False)


def failed_rolling(md: dict[str, Any], revs: _Revisions, canary: CanaryPlan | None, now: datetime) -> bool:
    """A Rolling update past its progress deadline with a stable revision to fall back on: the new revision
    then leaves the serving path (scaled to zero) and the stable one serves alone, until the spec changes."""
    if canary or not revs.stable or not revs.target or revs.target == revs.stable:
        return False
    status = md.get("status") or {}
    started = parse_time((status.get("rollout") or {}).get("startedAt"))
    deadline = int(md["spec"].get("rollout", {}).get("progressDeadlineSeconds", 600))
    return status.get("canaryRevision") == revs.target and started is not None and \
        (now - started).total_seconds() > deadline


def _rolling(md: dict[str, Any], observed: Observed, revs: _Revisions, canary: CanaryPlan | None,
             failed: bool) -> tuple[int | None, int] | None:
    """(stable, target) replicas of a Rolling update with maxSurge/maxUnavailable, or None (not rolling)."""
    total = desired_replicas(md["spec"])
    if failed:
        return total, 0
    stable_dep = observed.deployments.get(revs.stable or "")
    if canary or total is None or not revs.target or revs.target == revs.stable or stable_dep is None:
        return None
    limits = rolling.bounds(md["spec"], total)
    if limits is None:
        return None

    def side(dep: dict[str, Any] | None) -> rolling.Side:
        return rolling.Side(int((dep or {}).get("spec", {}).get("replicas", 0)),
                            int((dep or {}).get("status", {}).get("availableReplicas", 0)))

    return rolling.split(total, *limits, side(stable_dep), side(observed.deployments.get(revs.target)))


def _desired(md: dict[str, Any], owner: Owner, revs: _Revisions, opts: BuildOptions,
             canary: CanaryPlan | None, rolled: tuple[int | None, int] | None,
             scaler_blocked: str) -> list[dict[str, Any]]:
    target = revs.target
    objs = [build_service(owner, drift_enabled(md["spec"])),
            *revision_services(md, owner, [revs.stable, target] if target else []),
            *autoscaling_plan.desired(md, owner, opts.prometheus_url, scaler_blocked)]
    if target:
        spec = md["spec"]
        replicas = canary.canary_replicas if canary else rolled[1] if rolled else desired_replicas(spec)
        objs.append(build_config_map(owner, target, render_model_config(spec)))
        objs.append(build_deployment(owner, target, spec, replicas, opts))
    return objs


def _observed_of(observed: Observed, obj: dict[str, Any]) -> dict[str, Any] | None:
    name = obj["metadata"]["name"]
    if obj["kind"] in autoscaling_plan.KINDS:
        found = observed.autoscalers.get(obj["kind"])
        return found if found and found["metadata"]["name"] == name else observed.foreign.get((obj["kind"], name))
    table = {"Deployment": observed.deployments, "ConfigMap": observed.config_maps,
             "Service": observed.services}[obj["kind"]]
    return table.get(name) or observed.foreign.get((obj["kind"], name))


def creations(observed: Observed, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects of ``objs`` nothing observed stands for (the controller checks their names are free)."""
    return [o for o in objs if _observed_of(observed, o) is None]


def _taken(observed: Observed, desired: list[dict[str, Any]], uid: str) -> list[dict[str, Any]]:
    """Existing objects with the name of a desired child that this ModelDeployment does not control."""
    found = [_observed_of(observed, o) for o in desired]
    return [o for o in found if o is not None and not controlled_by(o, uid)]


def _deletions(observed: Observed, revs: _Revisions, routed: bool, retiring: bool,
               uid: str) -> list[tuple[str, str]]:
    """Children of revisions neither stable nor target (none while a routed promotion's delay runs), and
    revision Services nothing routes to; only objects this ModelDeployment controls."""
    if revs.target is None or retiring:
        return []  # never tear anything down because of a spec we cannot honour
    keep = {revs.target, revs.stable}

    def gone(obj: dict[str, Any], kept: set[str | None]) -> bool:
        revision = obj["metadata"].get("labels", {}).get(LABEL_REVISION)
        return revision is not None and revision not in kept and controlled_by(obj, uid)

    out = [("Deployment", n) for n, d in observed.deployments.items() if gone(d, keep)]
    out += [("ConfigMap", n) for n, cm in observed.config_maps.items() if gone(cm, keep)]
    out += [("Service", n) for n, svc in observed.services.items() if gone(svc, keep if routed else set())]
    return sorted(out)


def plan(md: dict[str, Any], observed: Observed, now: datetime, opts: BuildOptions) -> Plan:
    """One reconcile decision for ``md``."""
    requested = autoscaling_plan.total(md["spec"])
    owner = Owner(md["metadata"]["name"], md["metadata"]["namespace"], md["metadata"]["uid"])
    retrain = plan_retraining(md, owner, observed.jobs, observed.drift, now)
    md = autoscaling_plan.serving_spec(serving_md(md), observed.gpu_room)  # a retrained model; bounded growth
    meta, spec = md["metadata"], md["spec"]
    problems = problems_of(spec, bool(opts.prometheus_url))
    target, image = (None, opts.runtime_image) if problems else resolve(
        meta["name"], spec, opts.runtime_image, observed.deployments, (md.get("status") or {}).get("stableRevision"))
    opts = replace(opts, runtime_image=image)
    stable = _recorded_stable(md, observed, target)
    blocked = route_problem(md, observed.route)
    canary = plan_canary(md, observed.deployments, target, stable, now, observed.analysis, not blocked)
    revs = _revisions(md, observed, target, stable, canary)
    if revs.promoted:
        canary = None  # promoted this cycle: the rest of the plan treats it as the stable revision
    failed = failed_rolling(md, revs, canary, now)
    rolled = _rolling(md, observed, revs, canary, failed)
    scaler_blocked = autoscaling_plan.problem(spec, observed.keda_installed, opts.prometheus_url)
    desired = _desired(md, owner, revs, opts, canary, rolled, scaler_blocked)
    taken = _taken(observed, desired, owner.uid)
    names = {(o["kind"], o["metadata"]["name"]) for o in taken}
    desired = [o for o in desired if (o["kind"], o["metadata"]["name"]) not in names]
    held = [o for o in desired if o["kind"] == "Deployment" and frozen(_observed_of(observed, o))]
    desired = [o for o in desired if o not in held]  # earlier operator versions' revisions: replicas only
    drift = [(o, first_difference(_observed_of(observed, o), o)) for o in desired]
    to_apply = [(o, why) for o, why in drift if why is not None]
    conflict = Diagnosis(r.RESOURCE_CONFLICT, conflict_message(taken, meta["namespace"])) if taken else \
        Diagnosis(r.AUTOSCALER_UNAVAILABLE, scaler_blocked) if scaler_blocked else None
    new_status, events, requeue = _status(md, observed, revs, problems, now, canary, blocked, conflict)
    new_status = merge_status(new_status, retrain, history_limit(spec))
    delay = retire_delay(md, revs.stable, now, revs.promoted)
    waits = [t for t in (requeue, delay or None, autoscaling_plan.mark_bounded(new_status, requested),
                         retrain.requeue) if t]
    requeue = min(waits) if waits else None
    route = desired_route(md, observed.route, revs.stable or target or "", canary.progress.canary if canary else None,
                          canary.route_weight if canary else 0, blocked) if target else None
    old = {k: v for k, v in (md.get("status") or {}).items() if k != "kopf"}
    return Plan(apply=[o for o, _ in to_apply], why=[w for _, w in to_apply],
                scale=_scale(observed, revs, canary.stable_replicas if canary else rolled and rolled[0],
                             meta["namespace"]) + _held_replicas(observed, held),
                delete=_deletions(observed, revs, bool(route_ref(spec)), delay > 0, owner.uid) + [
                    d for d in autoscaling_plan.stale(observed.autoscalers, desired)
                    if controlled_by(observed.autoscalers[d[0]], owner.uid)] + [("Job", j) for j in retrain.delete],
                status=None if new_status == old else new_status, events=events + retrain.events,
                requeue_after=requeue, route=route, jobs=[retrain.create] if retrain.create else [])


def _scale(observed: Observed, revs: _Revisions, keep: int | None, namespace: str) -> list[dict[str, Any]]:
    """The stable Deployment's replicas when a NoSurge canary borrows or returns them, or a Rolling update
    with maxSurge/maxUnavailable shrinks it (``keep``: what it keeps; None: leave it alone)."""
    if keep is None or not revs.stable:
        return []
    dep = observed.deployments.get(revs.stable)
    if dep is None or dep.get("spec", {}).get("replicas") == keep:
        return []
    return [deployment_replicas(revs.stable, namespace, keep)]


def _held_replicas(observed: Observed, held: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The replicas of frozen Deployments, the only field the operator still sets on them."""
    out = []
    for obj in held:
        have = observed.deployments.get(obj["metadata"]["name"], {}).get("spec", {}).get("replicas")
        want = obj["spec"].get("replicas")
        if want is not None and want != have:
            out.append(deployment_replicas(obj["metadata"]["name"], obj["metadata"]["namespace"], want))
    return out


SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


def refusal(md: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """The status of a ModelDeployment in a system namespace the operator was not told to serve (None when
    it already says so): nothing is created there, so a cluster-wide install cannot be used to write
    Deployments into kube-system."""
    gen, stamp = int(md["metadata"].get("generation", 0)), timestamp(now)
    message = (f"namespace {md['metadata']['namespace']} is a system namespace: the operator serves models there "
               "only when it is listed explicitly (chart value watchNamespaces, or --namespace); move the "
               "ModelDeployment to an application namespace")
    old = md.get("status") or {}
    conditions = merge(old.get("conditions") or [], [Cond(r.INVALID_SPEC, True, r.SYSTEM_NAMESPACE, message),
                                                     Cond(r.READY, False, r.SYSTEM_NAMESPACE, message)], gen, stamp)
    status = {"observedGeneration": gen, "phase": phase(conditions), "conditions": conditions}
    current = {k: old.get(k) for k in status}
    return None if current == status else status


# --- status ------------------------------------------------------------------------------------


_ALONE = " serves alone until the spec changes"


def _rollout_conditions(revs: _Revisions, problems: list[str], started: str | None, now: datetime,
                        deadline: int, diag: Diagnosis | None, old_message: str) -> tuple[list[Cond], float | None]:
    if problems:
        return [Cond(r.PROGRESSING, False, r.ROLLOUT_BLOCKED, "; ".join(problems)),
                Cond(r.DEGRADED, False, r.AS_EXPECTED, "")], None
    if revs.target == revs.stable:
        degraded = Cond(r.DEGRADED, True, diag.reason, diag.message) if diag else \
            Cond(r.DEGRADED, False, r.AS_EXPECTED, "")
        return [Cond(r.PROGRESSING, False, r.ROLLOUT_COMPLETE, f"revision {revs.stable} is serving"),
                degraded], None
    elapsed = (now - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds() if started else 0
    progressing = Cond(r.PROGRESSING, True, r.NEW_REVISION_PROGRESSING,
                       f"rolling out revision {revs.target}")
    if elapsed > deadline:
        msg = f"revision {revs.target} did not become available within {deadline}s"
        if diag:
            msg += f": {diag.message}"
        elif old_message.startswith(msg):
            msg = old_message  # its pods are gone: keep the reason they gave
        if revs.stable and not msg.endswith(_ALONE):
            msg += f"; it was scaled to zero and revision {revs.stable}{_ALONE}"
        return [Cond(r.PROGRESSING, False, r.PROGRESS_DEADLINE_EXCEEDED, msg),
                Cond(r.DEGRADED, True, r.PROGRESS_DEADLINE_EXCEEDED, msg)], None
    if diag:
        return [progressing, Cond(r.DEGRADED, True, diag.reason, diag.message)], max(1.0, deadline - elapsed)
    return [progressing, Cond(r.DEGRADED, False, r.AS_EXPECTED, "")], max(1.0, deadline - elapsed)


def _serving_conditions(observed: Observed, revs: _Revisions, replicas: int | None) -> list[Cond]:
    dep = observed.deployments.get(revs.stable) if revs.stable else None
    if dep is None:
        return [Cond(r.READY, False, r.NO_STABLE_REVISION, "no revision has become available yet"),
                Cond(r.AVAILABLE, False, r.NO_STABLE_REVISION, "no revision has become available yet")]
    st = dep.get("status", {})
    have = st.get("availableReplicas", 0)
    want = dep.get("spec", {}).get("replicas", 1) if replicas is None or revs.stable != revs.target \
        else replicas
    msg = f"revision {revs.stable}: {have}/{want} replicas available"
    if want == 0:
        ready = Cond(r.READY, False, r.SCALED_TO_ZERO, f"revision {revs.stable} is scaled to zero")
    elif deployment_available(dep, want):
        ready = Cond(r.READY, True, r.REVISION_AVAILABLE, msg)
    else:
        ready = Cond(r.READY, False, r.REPLICAS_UNAVAILABLE, msg)
    available = Cond(r.AVAILABLE, have > 0, r.MINIMUM_REPLICAS_AVAILABLE if have > 0 else r.NO_REPLICAS_AVAILABLE,
                     msg)
    return [ready, available]


def _rollout_status(old: dict[str, Any], canary_rev: str, canary: CanaryPlan | None, stamp: str) -> dict[str, Any]:
    rollout = {k: v for k, v in (old.get("rollout") or {}).items() if k not in CANARY_KEYS}
    if not canary_rev:
        rollout.pop("startedAt", None)
    elif old.get("canaryRevision") != canary_rev or "startedAt" not in rollout:
        rollout["startedAt"] = stamp
    if canary:
        rollout.update(to_status(canary.progress))
        if canary.analysis:
            rollout["analysis"] = canary.analysis
    return rollout


def _status(md: dict[str, Any], observed: Observed, revs: _Revisions, problems: list[str],
            now: datetime, canary: CanaryPlan | None, blocked: str = "",
            conflict: Diagnosis | None = None) -> tuple[dict[str, Any], list[Event], float | None]:
    spec, old = md["spec"], md.get("status") or {}
    gen = int(md["metadata"].get("generation", 0))
    stamp = timestamp(now)
    canary_rev = revs.target if revs.target and revs.target != revs.stable else ""
    rollout = _rollout_status(old, canary_rev, canary, stamp)
    deadline = int(spec.get("rollout", {}).get("progressDeadlineSeconds", 600))
    replicas = canary.canary_replicas if canary else desired_replicas(spec)
    diag = conflict or (Diagnosis(r.TRAFFIC_ROUTE_UNUSABLE, blocked) if blocked
                        else _diagnosis(observed, revs.target, replicas))
    old_degraded = find(old.get("conditions") or [], r.DEGRADED) or {}
    conds, requeue = canary_conditions(canary, diag, now, deadline) if canary else _rollout_conditions(
        revs, problems, rollout.get("startedAt"), now, deadline, diag, str(old_degraded.get("message", "")))
    conds = _serving_conditions(observed, revs, desired_replicas(spec)) + conds
    conds.append(Cond(r.INVALID_SPEC, bool(problems), r.INVALID_SPEC_REASON if problems else r.SPEC_VALID,
                      "; ".join(problems)))
    old_conds = old.get("conditions") or []
    conditions = merge(old_conds, conds, gen, stamp)
    deps = observed.deployments.values()
    history = history_after(old.get("history") or [], spec, revs.stable if revs.promoted else None, stamp)
    if canary and canary.progress.decision == ABORTED and (old.get("rollout") or {}).get("decision") != ABORTED:
        history = [*history, aborted_entry(canary, spec, stamp)][-max(history_limit(spec), 1):]
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "phase": phase(conditions),
        "conditions": conditions,
        "replicas": sum(d.get("status", {}).get("replicas", 0) for d in deps),
        "readyReplicas": sum(d.get("status", {}).get("readyReplicas", 0) for d in deps),
        "availableReplicas": sum(d.get("status", {}).get("availableReplicas", 0) for d in deps),
        "selector": selector_string(md["metadata"]["name"]),
        "history": history,
    }
    autoscaler = autoscaling_plan.kind(spec)
    startup = autoscaling_plan.startup_seconds(observed.pods) or old.get("startupSeconds")
    for key, value in (("stableRevision", revs.stable), ("canaryRevision", canary_rev), ("rollout", rollout),
                       ("autoscaler", autoscaler), ("startupSeconds", autoscaler and startup)):
        if value:
            status[key] = value
    if canary:
        status["canaryWeight"] = canary.progress.weight
    if canary or autoscaler:
        status["replicaSplit"] = autoscaling_plan.split_status(
            spec, observed.deployments, revs.stable, canary.progress.canary if canary else None,
            canary.stable_replicas if canary else None, canary.canary_replicas if canary else 0)
    same = canary is not None and old.get("canaryRevision") == canary.progress.canary
    events = condition_events(old_conds, conditions, revs.stable if revs.promoted else None) + \
        canary_events(old.get("rollout") if same else {}, canary)
    return status, events, requeue


def _diagnosis(observed: Observed, target: str | None, replicas: int | None) -> Diagnosis | None:
    """Why the target revision's pods are not all available (None when they are, or nothing is known)."""
    if not target or deployment_available(observed.deployments.get(target), replicas):
        return None
    return diagnose([p for p in observed.pods if p["metadata"].get("labels", {}).get(LABEL_REVISION) == target],
                    observed.nodes)
