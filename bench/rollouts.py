"""Canary rollouts: decision -> all traffic on the stable side, and the overhead per canary step beyond the
configured pauses, for both traffic routers (replica ratio and a Gateway API HTTPRoute).

Method:

- **Cluster.** A private control plane (etcd, kube-apiserver, controller-manager, scheduler) with two KWOK
  CPU nodes (:mod:`bench.cluster`; ``$KUBECONFIG`` is refused), the ModelDeployment and Gateway API CRDs,
  and one ``tritonops run`` for the bench's namespace (admin credentials, the default resync of 300 s, so
  every step is driven by watch events and the operator's own timers, not by resyncs). KWOK pods are Ready
  about a second after they are scheduled and no Triton runs, so the figures are the operator's own overhead
  plus the control plane's (Deployment controller, scheduler, endpoints), not a model's load time. No gateway
  implementation runs: "traffic" on a route is what the route says.
- **Observation.** Watches (ModelDeployments, Deployments, HTTPRoutes, EndpointSlices) in threads, every
  event timestamped on receipt; each measured point is the first event after which a predicate holds
  (:class:`bench.cluster.Watcher`). Nothing is polled.
- **Models.** ``replicas`` replicas of a CPU model each, all created and Ready before any timing; the
  replica-ratio ones route through their Service, the routed ones through an HTTPRoute of their own (a rule
  to the model's Service, as a user writes it) with ``scaleDownDelaySeconds`` and
  ``abortScaleDownDelaySeconds`` 0.
- **Decisions** (``abort`` and ``promote``; ``decision_reps`` models per mode and decision, interleaved):
  version 2 by canary steps ``[setWeight 50, pause]``; once paused at 50 % (and, with replica ratio, the
  canary's pods in the Service's endpoints) the ``tritonops.io/abort`` or ``tritonops.io/promote``
  annotation naming the canary revision is patched in, as ``kubectl tritonops abort|promote --full`` does.
  Times count from the moment the patch returns to: **write**, the operator's traffic write (the route's
  weights all on the side that stays; with replica ratio, the leaving Deployment scaled to 0 or deleted);
  **traffic**, all traffic on the side that stays (the route again; with replica ratio, no Ready endpoint
  of the leaving revision left in the Service's EndpointSlices, i.e. after the Deployment controller and
  KWOK removed its pods); **status**, ``status`` recording the decision. And **undersized**: how long all
  traffic went to a revision with fewer available replicas than ``spec.replicas`` (from ``traffic`` until
  the side that stays has them all; 0 when it had them first).
- **Completion** (row ``complete``): the same three points for the step runs below, counted from the moment
  the last pause ends: its ``status.rollout.stepStartedAt`` (whole seconds, the time the operator's step
  machine counts from) plus its duration, against the wall-clock receipt times.
- **Steps** (``step_reps`` rollouts per mode): ``steps`` pairs of ``setWeight`` (evenly spaced weights) and
  ``pause: {durationSeconds: pause}``; wall time from the spec patch returning to ``status`` naming the new
  stable revision. Overhead per step = (wall - configured pauses) / steps; ratio = wall / configured pauses
  (1.00: no overhead). From the ModelDeployment's status events: the mean time of the setWeight steps (new
  canary pods becoming Ready), the mean time of the pauses beyond their duration, and of that the part that
  is the step machine rounding each step's start up to a whole second (``stepStartedAt`` minus the moment the
  status entering the pause was seen), and the operator's reaction in a setWeight step: from the model's
  last Deployment event in the step (the canary pods becoming available) to the status entering the next.
- Not measured: an abort by a failing analysis (it needs Prometheus and a measured canary; the decision
  path after the verdict is the same as a human abort's).

Reading the numbers (2 cores, 2026-11-30): a decision reaches the traffic in 10-75 ms (the operator's write
in 10-30 ms; with replica ratio the endpoints follow once the Deployment controller and KWOK removed the
pods), except a routed promotion, which first grows the canary to every replica and only then moves the
route (0.4 s on KWOK; on real GPUs, a pod start and a model load). Before the operator read from watch
caches the same decisions took 0.35-0.45 s, the cycles caused by the canary's pod events having drained the
client's request budget, and a routed promotion sent all traffic to the step-sized canary for 0.3-0.4 s.
Each step costs about 1 s beyond its pause, 0.7 s of it the step machine rounding each step's start up to a
whole second (status times have one-second precision).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.cluster import (
    DEPLOYMENTS,
    HTTPROUTES,
    MODELDEPLOYMENTS,
    BenchCluster,
    Seen,
    State,
    Watcher,
    bench_cluster,
)
from bench.common import BenchError, emit, parse_args, ratio, table, write_result
from tests.integration.support import md_body
from tritonops.builders.service import revision_service_name
from tritonops.rollout_plan import ABORT_ANNOTATION, PROMOTE_ANNOTATION

NAME = "rollouts"
REPLICA, ROUTE = "replicaRatio", "httpRoute"
MODES = (REPLICA, ROUTE)
ABORT, PROMOTE, COMPLETE = "abort", "promote", "complete"
POINTS = ("write", "traffic", "status")
ENDPOINTSLICES = ("discovery.k8s.io", "v1", "endpointslices")
PREFIX = {REPLICA: "rr", ROUTE: "gw"}
CPU = {"runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}},
       "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}
SETUP_TIMEOUT = 180.0
DECISION_TIMEOUT = 60.0


@dataclass(frozen=True)
class Sizes:
    decision_reps: int
    step_reps: int
    steps: int
    pause: int
    replicas: int


DEFAULT = Sizes(decision_reps=7, step_reps=3, steps=4, pause=3, replicas=2)
SMOKE = Sizes(decision_reps=1, step_reps=1, steps=2, pause=1, replicas=2)


# --- objects and predicates on the watched state -----------------------------------------------------------

def md_of(state: State, name: str) -> dict[str, Any]:
    return state.get(("modeldeployments", name)) or {}


def status_of(state: State, name: str) -> dict[str, Any]:
    return md_of(state, name).get("status") or {}


def route_name(name: str) -> str:
    return f"{name}-route"


def user_route(name: str) -> dict[str, Any]:
    """A route as a user writes it: one rule to the model's Service."""
    return {"apiVersion": f"{HTTPROUTES[0]}/v1", "kind": "HTTPRoute", "metadata": {"name": route_name(name)},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{name}"}}],
                 "backendRefs": [{"name": name, "port": 8000}]}]}}


def rollout(mode: str, name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    canary: dict[str, Any] = {"steps": steps}
    if mode == ROUTE:
        canary |= {"scaleDownDelaySeconds": 0, "abortScaleDownDelaySeconds": 0,
                   "trafficRouting": {"gatewayAPI": {"httpRouteRef": {"name": route_name(name)}}}}
    return {"strategy": "Canary", "canary": canary}


def converged(name: str) -> Callable[[State], bool]:
    def check(state: State) -> bool:
        md, status = md_of(state, name), status_of(state, name)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        return bool(ready and status.get("observedGeneration") == md["metadata"]["generation"]
                    and status.get("stableRevision") and not status.get("canaryRevision"))
    return check


def paused_at(name: str, step: int) -> Callable[[State], bool]:
    def check(state: State) -> bool:
        rollout_ = status_of(state, name).get("rollout") or {}
        return rollout_.get("decision") == "Paused" and rollout_.get("currentStepIndex") == step
    return check


def weights(state: State, name: str) -> dict[str, int]:
    route = state.get(("httproutes", route_name(name))) or {}
    rules = (route.get("spec") or {}).get("rules") or [{}]
    return {ref["name"]: ref.get("weight", 1) for ref in rules[0].get("backendRefs") or []}


def ready_endpoints(state: State, name: str) -> list[str]:
    """Pod names of the Ready endpoints of the model's Service (replica-ratio traffic goes to these)."""
    return [(ep.get("targetRef") or {}).get("name", "") for (plural, _), obj in state.items()
            if plural == "endpointslices" and obj["metadata"].get("labels", {}).get(
                "kubernetes.io/service-name") == name
            for ep in obj.get("endpoints") or [] if (ep.get("conditions") or {}).get("ready")]


def serves(state: State, name: str, revision: str) -> bool:
    return any(pod.startswith(f"{revision}-") for pod in ready_endpoints(state, name))


def targets(mode: str, name: str, leaving: str, decision: str,
            replicas: int) -> dict[str, Callable[[State], bool]]:
    """The points of the module docstring, once ``leaving`` (a revision) no longer takes traffic; and
    ``full``: the other revision has ``replicas`` available replicas."""
    leaving_svc = revision_service_name(name, leaving)

    def routed(state: State) -> bool:
        w = weights(state, name)
        return w.get(leaving_svc, 0) == 0 and 100 in w.values()

    def scaled(state: State) -> bool:
        dep = state.get(("deployments", leaving))
        return dep is None or dep["spec"].get("replicas") == 0

    def drained(state: State) -> bool:
        pods = ready_endpoints(state, name)
        return bool(pods) and not any(p.startswith(f"{leaving}-") for p in pods)

    def recorded(state: State) -> bool:
        status = status_of(state, name)
        if decision == ABORT:
            return (status.get("rollout") or {}).get("decision") == "Aborted"
        return status.get("stableRevision") not in (None, leaving) and not status.get("canaryRevision")

    def full(state: State) -> bool:
        return any(plural == "deployments" and dep_name.startswith(f"{name}-") and dep_name != leaving
                   and (dep.get("status") or {}).get("availableReplicas", 0) >= replicas
                   for (plural, dep_name), dep in state.items())

    if mode == ROUTE:
        return {"write": routed, "traffic": routed, "status": recorded, "full": full}
    return {"write": scaled, "traffic": drained, "status": recorded, "full": full}


def undersized(seen: dict[str, Seen]) -> float:
    """Seconds all traffic went to a revision with fewer available replicas than ``spec.replicas``."""
    return max(0.0, seen["full"].mono - seen["traffic"].mono)


# --- the runs -------------------------------------------------------------------------------------------

class Bench:
    """One namespace, its operator and watches; the runs."""

    def __init__(self, bc: BenchCluster, watcher: Watcher, namespace: str, sizes: Sizes) -> None:
        self.bc, self.w, self.ns, self.sizes = bc, watcher, namespace, sizes

    def create(self, names: dict[str, str]) -> None:
        """Create every model (name -> mode) and wait until all are Ready."""
        custom = self.bc.api.custom
        for name, mode in names.items():
            if mode == ROUTE:
                custom.create_namespaced_custom_object(HTTPROUTES[0], "v1", self.ns, "httproutes", user_route(name))
            self.bc.api.create_md(self.ns, md_body(name, replicas=self.sizes.replicas, **CPU))
        for name in names:
            self.w.until(f"{name} Ready", converged(name), SETUP_TIMEOUT)

    def start_canary(self, mode: str, name: str, steps: list[dict[str, Any]]) -> float:
        """Ask for version 2 by ``steps``; returns when the patch returned (monotonic)."""
        self.bc.api.patch_md(self.ns, name, {"spec": {"model": {"version": 2}, "rollout": rollout(mode, name, steps)}})
        return time.monotonic()

    def decision(self, mode: str, name: str, decision: str) -> dict[str, float]:
        self.start_canary(mode, name, [{"setWeight": 50}, {"pause": {}}])
        self.w.until(f"{name} paused at 50%", paused_at(name, 1), SETUP_TIMEOUT)
        status = status_of(self.w.state, name)
        stable, canary = status["stableRevision"], status["canaryRevision"]
        leaving = canary if decision == ABORT else stable
        if mode == REPLICA:
            self.w.until(f"{name}: both revisions in the endpoints",
                         lambda s: serves(s, name, canary) and serves(s, name, stable), SETUP_TIMEOUT)
        points = targets(mode, name, leaving, decision, self.sizes.replicas)
        waits = {k: self.w.expect(f"{name} {decision}: {k}", p) for k, p in points.items()}
        annotation = ABORT_ANNOTATION if decision == ABORT else PROMOTE_ANNOTATION
        self.bc.api.patch_md(self.ns, name, {"metadata": {"annotations": {annotation: canary}}})
        t0 = time.monotonic()
        seen = {k: e.wait(DECISION_TIMEOUT) for k, e in waits.items()}
        return {k: seen[k].mono - t0 for k in POINTS} | {"undersized": undersized(seen)}

    def steps(self, mode: str, name: str) -> dict[str, Any]:
        k, pause = self.sizes.steps, self.sizes.pause
        ladder = [s for i in range(k) for s in ({"setWeight": round(100 * (i + 1) / (k + 1))},
                                                {"pause": {"durationSeconds": pause}})]
        stable = status_of(self.w.state, name)["stableRevision"]
        points = targets(mode, name, stable, PROMOTE, self.sizes.replicas)
        waits = {key: self.w.expect(f"{name} complete: {key}", p) for key, p in points.items()}
        t0 = self.start_canary(mode, name, ladder)
        seen = {key: e.wait(k * (pause + 60) + 60) for key, e in waits.items()}
        return analyse_steps(self.w.history, name, k, pause, t0, seen)


def analyse_steps(history: Sequence[tuple[Seen, str, dict[str, Any]]], name: str, k: int, pause: int,
                  t0: float, seen: dict[str, Seen]) -> dict[str, Any]:
    """Step times from the ModelDeployment's status events (see the module docstring)."""
    entered, last_start = _entered(history, name, k, t0)
    starts = [t0] + [entered[i][0].mono for i in range(1, 2 * k)] + [seen["status"].mono]
    durations = [b - a for a, b in itertools.pairwise(starts)]
    due = _started({"stepStartedAt": last_start}) + pause
    wall = seen["status"].mono - t0
    rounding = [_started(entered[i][1]) - entered[i][0].wall for i in range(1, 2 * k, 2)]
    return {"wallSeconds": wall, "overheadPerStepSeconds": (wall - k * pause) / k,
            "ratio": ratio(wall, k * pause), "setWeightSeconds": statistics.mean(durations[0::2]),
            "setWeightReactionSeconds": statistics.mean(_reactions(history, name, starts)),
            "pauseOvershootSeconds": statistics.mean(durations[1::2]) - pause,
            "startRoundingSeconds": statistics.mean(rounding),
            "completion": {key: seen[key].wall - due for key in POINTS} | {"undersized": undersized(seen)}}


def _entered(history: Sequence[tuple[Seen, str, dict[str, Any]]], name: str, k: int,
             t0: float) -> tuple[dict[int, tuple[Seen, dict[str, Any]]], str]:
    """When the status first showed each step index (and its ``status.rollout``), and the last step's start."""
    entered: dict[int, tuple[Seen, dict[str, Any]]] = {}
    last_start = ""
    for when, _, obj in history:
        status = obj.get("status") or {}
        if obj.get("kind") != "ModelDeployment" or obj["metadata"]["name"] != name or not status.get(
                "canaryRevision") or when.mono < t0:
            continue
        rollout_ = status.get("rollout") or {}
        step = rollout_.get("currentStepIndex")
        if isinstance(step, int) and step not in entered:
            entered[step] = (when, rollout_)
        if step == 2 * k - 1 and rollout_.get("stepStartedAt"):
            last_start = rollout_["stepStartedAt"]  # the pause's start as the step machine counts it
    if not set(range(1, 2 * k)) <= set(entered) or not last_start:
        raise BenchError(f"{name}: status showed steps {sorted(entered)}, not 1..{2 * k - 1} (steps skipped?)")
    return entered, last_start


def _reactions(history: Sequence[tuple[Seen, str, dict[str, Any]]], name: str, starts: list[float]) -> list[float]:
    """Per setWeight step: from the model's last Deployment event in the step (its canary pods becoming
    available) to the status entering the next step, i.e. the operator's reaction to the readiness."""
    events = [when.mono for when, _, obj in history
              if obj.get("kind") == "Deployment" and obj["metadata"]["name"].startswith(f"{name}-")]
    out = []
    for begin, end in zip(starts[0::2], starts[1::2], strict=False):
        inside = [t for t in events if begin <= t < end]
        if inside:
            out.append(end - max(inside))
    if not out:
        raise BenchError(f"{name}: no Deployment event during any setWeight step")
    return out


def _started(rollout_: dict[str, Any]) -> float:
    return datetime.fromisoformat(rollout_["stepStartedAt"].replace("Z", "+00:00")).timestamp()


# --- orchestration and report -----------------------------------------------------------------------------

def run_all(bc: BenchCluster, sizes: Sizes) -> dict[str, Any]:
    ns = bc.namespace("bench-rollouts")
    decision_runs = [(f"{PREFIX[mode]}-{d[:2]}-{i}", mode, d) for i in range(sizes.decision_reps)
                     for mode in MODES for d in (ABORT, PROMOTE)]  # interleaved
    step_names = {f"{PREFIX[mode]}-st-{i}": mode for i in range(sizes.step_reps) for mode in MODES}
    resources = (MODELDEPLOYMENTS, DEPLOYMENTS, HTTPROUTES, ENDPOINTSLICES)
    with Watcher(bc.kubeconfig, ns, resources) as watcher:
        bc.operator(ns)
        bench = Bench(bc, watcher, ns, sizes)
        t = time.monotonic()
        bench.create({name: mode for name, mode, _ in decision_runs} | step_names)
        emit(f"{len(decision_runs) + len(step_names)} models Ready in {time.monotonic() - t:.1f}s")
        decisions: dict[str, dict[str, list[dict[str, float]]]] = {m: {ABORT: [], PROMOTE: []} for m in MODES}
        for name, mode, decision in decision_runs:
            decisions[mode][decision].append(bench.decision(mode, name, decision))
        emit(f"{len(decision_runs)} decisions measured")
        steps: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for name, mode in step_names.items():
            steps[mode].append(bench.steps(mode, name))
            decisions[mode].setdefault(COMPLETE, []).append(steps[mode][-1]["completion"])
    return {"decisions": {m: {d: summarise(runs) for d, runs in by.items()} for m, by in decisions.items()},
            "steps": {m: step_summary(runs, sizes) for m, runs in steps.items()}}


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 4), "max": round(max(values), 4),
            "min": round(min(values), 4)}


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    if not runs:
        raise BenchError("a decision was never measured")
    keys = (*POINTS, "undersized")
    return {"runs": len(runs), **{p: spread([r[p] for r in runs]) for p in keys},
            "samples": {p: [round(r[p], 4) for r in runs] for p in keys}}


def step_summary(runs: list[dict[str, Any]], sizes: Sizes) -> dict[str, Any]:
    if not runs:
        raise BenchError("no step run was measured")
    keys = ("wallSeconds", "overheadPerStepSeconds", "ratio", "setWeightSeconds", "setWeightReactionSeconds",
            "pauseOvershootSeconds", "startRoundingSeconds")
    return {"runs": len(runs), "steps": sizes.steps, "pauseSeconds": sizes.pause,
            "configuredPauseSeconds": sizes.steps * sizes.pause, **{k: spread([r[k] for r in runs]) for k in keys}}


def report(results: dict[str, Any]) -> None:
    rows = [[f"{mode} {d}", s["runs"], *(s[p][q] for p in POINTS for q in ("p50", "max")), s["undersized"]["max"]]
            for mode, by in results["decisions"].items() for d, s in by.items()]
    emit(table("Decision -> all traffic on the side that stays (s; abort/promote from the annotation patch, "
               "complete from the last pause's end)", ["mode decision", "runs", "write p50", "max",
                                                         "traffic p50", "max", "status p50", "max",
                                                         "undersized max"], rows))
    rows = [[mode, s["runs"], f"{s['steps']}x{s['pauseSeconds']}s", s["wallSeconds"]["p50"],
             s["wallSeconds"]["max"], s["overheadPerStepSeconds"]["p50"], s["overheadPerStepSeconds"]["max"],
             s["ratio"]["p50"], s["setWeightSeconds"]["p50"], s["setWeightReactionSeconds"]["p50"],
             s["pauseOvershootSeconds"]["p50"],
             s["startRoundingSeconds"]["p50"]] for mode, s in results["steps"].items()]
    emit(table("Canary steps: wall time from the spec change to the new stable (s), per-step overhead beyond "
               "the pauses", ["mode", "runs", "steps", "wall p50", "max", "overhead/step p50", "max",
                              "wall/pauses", "setWeight p50", "reaction p50", "pause over p50", "rounding p50"],
               rows))


def main(argv: Sequence[str] | None = None) -> int:
    run = parse_args(NAME, __doc__.splitlines()[0], argv)
    sizes = SMOKE if run.smoke else DEFAULT
    with bench_cluster(gateway_api=True) as bc:
        emit(f"control plane started in {bc.start_seconds:.1f}s")
        results = run_all(bc, sizes)
        results["controlPlaneStartSeconds"] = round(bc.start_seconds, 2)
    report(results)
    path = write_result(run, vars(sizes) | {"modes": list(MODES), "nodes": "2 KWOK CPU nodes"}, results)
    emit(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
