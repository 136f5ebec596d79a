"""One reconcile cycle per ModelDeployment: observe → plan → apply → report.

Level-based: whatever triggered it (create, update, resume, a child event, the periodic resync), the
cycle reads the object and its children afresh and converges them. Status is written once per cycle and
only when it changed; an unchanged spec makes zero write calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from tritonops import CAPACITY_MANAGER
from tritonops.analysis_run import measure_due
from tritonops.api import API_VERSION, KIND
from tritonops.autoscaling_plan import growth_pending, short_before
from tritonops.builders.deployment import BuildOptions
from tritonops.builders.httproute import TRAFFIC_FIELD_MANAGER
from tritonops.builders.meta import LABEL_MANAGED_BY, LABEL_MD, MANAGED_BY
from tritonops.cache import Cache
from tritonops.capacity import newest_template, room
from tritonops.diagnose import deployment_available, unschedulable
from tritonops.drift_run import read_drift, reading_due
from tritonops.history import Event
from tritonops.kube import ApiError, Kube
from tritonops.ownership import controlled_by
from tritonops.planner import (
    SYSTEM_NAMESPACES,
    Observed,
    Plan,
    creations,
    plan,
    refusal,
    timestamp,
)
from tritonops.prom import Endpoint
from tritonops.retrain_plan import RUNNING, job_view
from tritonops.rollout_metrics import forget_rollout, record_end, record_loop_events, record_rollout
from tritonops.rollout_plan import route_ref
from tritonops.workqueue import WorkQueue

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
RECONCILES = Counter("tritonops_reconciles_total", "Reconcile cycles run, by result", ["result"])
RECONCILE_SECONDS = Histogram("tritonops_reconcile_seconds", "Wall time of one reconcile cycle (API calls included)",
                              buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


@dataclass(frozen=True)
class ControllerConfig:
    """Operator settings that shape reconciliation."""

    build: BuildOptions = field(default_factory=BuildOptions)
    resync_seconds: float = 300.0
    workers: int = 4
    prometheus: Endpoint | None = None  # for canary analysis (a ModelDeployment may name its own)
    listed: frozenset[str] = frozenset()  # namespaces named explicitly (system namespaces need it)


class Reader:
    """Where a cycle reads objects: the watch-fed cache for the kinds it holds, else the API server."""

    def __init__(self, kube: Kube, cache: Cache | None) -> None:
        self.kube, self.cache = kube, cache

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        if self.cache is not None and self.cache.holds(kind):
            return self.cache.list(kind, namespace, selector)
        return self.kube.list(kind, namespace, selector)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if self.cache is not None and self.cache.holds(kind):
            return self.cache.get(kind, namespace, name)
        return self.kube.get(kind, namespace, name)

    def refresh(self, kind: str, obj: dict[str, Any] | None) -> None:
        """Keep the answer to our own write (so the next cycle does not act on the version before it)."""
        if self.cache is not None and obj and self.cache.holds(kind):
            self.cache.refresh(kind, obj)


def observe(kube: Kube, md: dict[str, Any], cache: Cache | None = None) -> Observed:
    """Read the children of one ModelDeployment (by our labels), from the cache when there is one.

    Pods are only read when some Deployment is short of available replicas: that is the only case in
    which the planner looks at them (to say why), and they are the largest list by far.
    """
    namespace, name = md["metadata"]["namespace"], md["metadata"]["name"]
    selector = f"{LABEL_MD}={name},{LABEL_MANAGED_BY}={MANAGED_BY}"
    reader = Reader(kube, cache)

    def by_name(kind: str) -> dict[str, dict[str, Any]]:
        return {o["metadata"]["name"]: o for o in reader.list(kind, namespace, selector)}

    observed = Observed(deployments=by_name("Deployment"), config_maps=by_name("ConfigMap"),
                        services=by_name("Service"))
    if route := route_ref(md["spec"]):
        observed.route = kube.get("HTTPRoute", namespace, route)
    if md["spec"].get("autoscaling") or (md.get("status") or {}).get("autoscaler"):
        _observe_autoscalers(kube, observed, namespace, selector)
    if short_before(md) or any(not deployment_available(d, None) for d in observed.deployments.values()):
        observed.pods = reader.list("Pod", namespace, f"{LABEL_MD}={name}")
        if unschedulable(observed.pods):
            observed.nodes = kube.list_cluster("Node")
    if growth_pending(md, observed.deployments):
        _observe_gpu_room(kube, md, observed)
    if md["spec"].get("retraining") or (md.get("status") or {}).get("retraining"):
        _observe_jobs(reader, md, observed, selector)
    return observed


def _observe_jobs(kube: Reader, md: dict[str, Any], observed: Observed, selector: str) -> None:
    """Our retraining Jobs; the pods of the active one once it is over (its result is their termination
    message)."""
    namespace = md["metadata"]["namespace"]
    active = ((md.get("status") or {}).get("retraining") or {}).get("activeJob")
    for job in kube.list("Job", namespace, selector):
        view = job_view(job, [])
        if view.name == active and view.state != RUNNING:
            view = job_view(job, kube.list("Pod", namespace, f"batch.kubernetes.io/job-name={view.name}"))
        observed.jobs[view.name] = view


def _create_jobs(kube: Kube, md: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    """Create the retraining Jobs of a plan; a name taken by a Job we do not control is left alone."""
    meta = md["metadata"]
    for job in jobs:
        name = job["metadata"]["name"]
        existing = kube.get("Job", meta["namespace"], name)
        if existing is None:
            log.info("creating retraining Job %s/%s", meta["namespace"], name)
            kube.create("Job", meta["namespace"], job)
        elif not controlled_by(existing, meta["uid"]):
            log.warning("Job %s/%s exists and is not ours: not adopted", meta["namespace"], name)


def _observe_gpu_room(kube: Kube, md: dict[str, Any], observed: Observed) -> None:
    """The replicas the free GPUs can take now (Nodes and Pods of the whole cluster; only while the
    autoscaler asks for more than is served). Left unknown without the permission to list them."""
    nodes = observed.nodes if observed.nodes is not None else kube.list_cluster("Node")
    pods = kube.list_cluster("Pod", {"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"})
    if nodes is None or pods is None:
        return
    observed.nodes = nodes
    template = newest_template(observed.deployments)
    own = md["metadata"]["name"]
    pending = sum(1 for p in pods if not p.get("spec", {}).get("nodeName")
                  and p["metadata"].get("namespace") == md["metadata"]["namespace"]
                  and p["metadata"].get("labels", {}).get(LABEL_MD) == own)
    observed.gpu_room = room(template, nodes, pods, pending)


def _observe_autoscalers(kube: Kube, observed: Observed, namespace: str, selector: str) -> None:
    """Our HPA and ScaledObject (only while autoscaling is asked for or one was created)."""
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        try:
            for obj in kube.list(kind, namespace, selector):
                observed.autoscalers[kind] = obj
        except ApiError as err:
            if err.status != 404 or kind != "ScaledObject":
                raise
            observed.keda_installed = False  # KEDA's CRD is not installed
    if observed.keda_installed is None:
        observed.keda_installed = True


def names_taken(kube: Kube, observed: Observed, result: Plan) -> dict[tuple[str, str], dict[str, Any]]:
    """Objects that already exist under the names of children the plan would create.

    Children are listed by our labels; an object without them (a user's Service named like the
    ModelDeployment) is invisible to that list, so each creation is checked by name first.
    """
    found = {}
    for obj in creations(observed, result.apply):
        existing = kube.get(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if existing is not None:
            found[(obj["kind"], obj["metadata"]["name"])] = existing
    return found


def status_patch(old: dict[str, Any], new: dict[str, Any], keep: tuple[str, ...] = ("kopf",)) -> dict[str, Any]:
    """A merge patch turning ``old`` status into ``new``: removed keys become null at every depth (a merge
    patch merges nested objects, so a key dropped from ``replicaSplit`` would otherwise stay); kopf's kept."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        patch[key] = status_patch(before, value, ()) if isinstance(value, dict) and isinstance(before, dict) \
            else value
    for key in old:
        if key not in new and key not in keep:
            patch[key] = None
    return patch


def _event_body(md: dict[str, Any], event: Event, now: datetime) -> dict[str, Any]:
    meta = md["metadata"]
    stamp = timestamp(now)
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"],
                           "resourceVersion": meta.get("resourceVersion", "")},
        "type": event.type, "reason": event.reason, "message": event.message[:1024],
        "source": {"component": MANAGED_BY}, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "reportingComponent": MANAGED_BY, "reportingInstance": MANAGED_BY,
    }


def execute(kube: Kube, md: dict[str, Any], result: Plan, now: datetime, cache: Cache | None = None) -> None:
    """Apply a plan: children first, then deletions, then the status, then events."""
    meta = md["metadata"]
    ns = meta["namespace"]
    reader = Reader(kube, cache)
    for obj, why in zip(result.apply, result.why, strict=True):
        log.info("applying %s %s/%s (differs at %s)", obj["kind"], ns, obj["metadata"]["name"], why)
        reader.refresh(obj["kind"], kube.apply(obj))
    for obj in result.scale:
        log.info("scaling Deployment %s/%s to %s for the canary", ns, obj["metadata"]["name"], obj["spec"]["replicas"])
        reader.refresh(obj["kind"], kube.apply(obj, CAPACITY_MANAGER))
    if result.route is not None:
        log.info("weighting HTTPRoute %s/%s", ns, result.route["metadata"]["name"])
        kube.apply(result.route, TRAFFIC_FIELD_MANAGER)
    _create_jobs(kube, md, result.jobs)
    for kind, name in result.delete:
        log.info("deleting %s %s/%s", kind, ns, name)
        kube.delete(kind, ns, name)
    if result.status is not None:
        reader.refresh(KIND, kube.patch_status(KIND, ns, meta["name"],
                                               status_patch(md.get("status") or {}, result.status)))
    for event in result.events:
        kube.create("Event", ns, _event_body(md, event, now))


def reconcile_once(kube: Kube, key: Key, config: ControllerConfig,
                   clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                   cache: Cache | None = None) -> float | None:
    """Observe, plan and apply one ModelDeployment; returns seconds until it needs another look.

    With a ``cache`` (the running operator) the object and its children are read from it, so a cycle that
    has nothing to change makes no request at all; without one (tests, one-off calls) from the API server.
    """
    namespace, name = key
    md = Reader(kube, cache).get(KIND, namespace, name)
    if md is None or md["metadata"].get("deletionTimestamp"):
        return None  # gone or going: owner references let the garbage collector remove the children
    now = clock()
    if namespace in SYSTEM_NAMESPACES and namespace not in config.listed:
        if (status := refusal(md, now)) is not None:
            kube.patch_status(KIND, namespace, name, status_patch(md.get("status") or {}, status))
        return None
    observed = observe(kube, md, cache)
    observed.analysis = measure_due(md, config.prometheus, now)
    observed.drift = read_drift(md, config.prometheus) if reading_due(md, now) else None
    result = plan(md, observed, now, config.build)
    if found := names_taken(kube, observed, result):
        observed.foreign.update(found)  # someone else's objects under our children's names: plan around them
        result = plan(md, observed, now, config.build)
    execute(kube, md, result, now, cache)
    record_end(md.get("status"), result.status, now)
    record_rollout(namespace, name, result.status if result.status is not None else md.get("status"))
    record_loop_events(namespace, name, [e.reason for e in result.events])
    # Our own writes come back as watch events and trigger the next cycle; only time-based steps
    # (a progress deadline) need a timer shorter than the resync.
    if result.requeue_after is not None:
        return min(config.resync_seconds, result.requeue_after)
    return config.resync_seconds


class Controller:
    """Owns the work queue; kopf handlers only call :meth:`enqueue` and :meth:`forget`."""

    def __init__(self, kube: Kube, config: ControllerConfig, cache: Cache | None = None,
                 synced: Callable[[], object] | None = None) -> None:
        self.kube = kube
        self.config = config
        self.cache = cache
        self.synced = synced  # blocks until the cache holds every child kind's first listing
        self.queue = WorkQueue(self._handle, workers=config.workers)

    async def _handle(self, key: Hashable) -> float | None:
        assert isinstance(key, tuple)
        if self.synced is not None:
            await asyncio.to_thread(self.synced)
            self.synced = None
        with RECONCILE_SECONDS.time():
            try:
                again = await asyncio.to_thread(reconcile_once, self.kube, key, self.config, cache=self.cache)
            except Exception:
                RECONCILES.labels("error").inc()
                raise
        RECONCILES.labels("ok").inc()
        return again

    def enqueue(self, namespace: str, name: str) -> None:
        """Schedule a reconcile of one ModelDeployment."""
        self.queue.add((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: drop its timers and its metrics."""
        self.queue.forget((namespace, name))
        forget_rollout(namespace, name)
