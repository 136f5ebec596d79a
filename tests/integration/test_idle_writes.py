"""Zero writes while idle, proven on the server side rather than with the operator's request counter.

Three ModelDeployments are brought to rest: a Rolling one (after a rolling update, so it has history), a
Canary one paused at an indefinite ``pause`` step, and one whose spec the operator refuses (``InvalidSpec``:
a GPU index the pod does not have; nothing is deployed for it). Then the namespace is snapshotted from the
API server and the operator is left running through at least three resyncs (``resync_seconds`` = 2), and
afterwards restarted and left through three more, so that kopf's start-up path (initial listing, resuming)
is covered as well.

What is compared, per object: ``metadata.resourceVersion`` of every ModelDeployment, Deployment, Service
and ConfigMap in the namespace (the kinds the operator writes; the status subresource shares the object's
resourceVersion), and the set of Events (none new, none updated). Every persisted write bumps the
resourceVersion, whoever makes it: the operator's own client, kopf (annotations, finalizers,
``status.kopf``), or anyone else. ReplicaSets and Pods are left out: the controller-manager, the scheduler
and KWOK write those, never the operator. A request that changes nothing (a no-op apply) is not persisted
and does not bump the resourceVersion; the operator's counter (checked last, as a second opinion) covers
those.

When something was written, the failure names the object, the managedFields entries that changed (manager,
operation, subresource, fields) and the values that differ.

Progress is measured by the operator's ``tritonops_reconciles_total`` (cycles read from the watch cache, so
they make no request to count): the counter is for all objects, not per object, so the wait asks for three
per object *and* for three resync periods of wall time, never for a fixed sleep alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.support import Api, OperatorProcess, converged, md_body, wait_until

pytestmark = pytest.mark.cluster

CPU = {"runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}},
       "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}
STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]
REFUSED_GROUPS = {"runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [
    {"kind": "KIND_GPU", "count": 1, "gpus": [4]}]}}}  # the pod has 1 GPU: index 4 does not exist
Key = tuple[str, str]  # (kind, name)
Snapshot = dict[Key, dict[str, Any]]
IGNORED = {("metadata", "resourceVersion"), ("metadata", "managedFields")}


# --- reading the namespace from the API server -------------------------------------------------------------

def snapshot(api: Api, ns: str) -> Snapshot:
    """Every object of the compared kinds in ``ns``, as plain dicts keyed by (kind, name)."""
    def plain(items: list[Any]) -> list[dict[str, Any]]:
        return [api.client.sanitize_for_serialization(o) for o in items]

    lists: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "ModelDeployment": lambda: api.custom.list_namespaced_custom_object(
            "tritonops.io", "v1alpha1", ns, "modeldeployments")["items"],
        "Deployment": lambda: plain(api.apps.list_namespaced_deployment(ns).items),
        "Service": lambda: plain(api.core.list_namespaced_service(ns).items),
        "ConfigMap": lambda: plain(api.core.list_namespaced_config_map(ns).items),
        "Event": lambda: plain(api.core.list_namespaced_event(ns).items),
    }
    return {(kind, o["metadata"]["name"]): o for kind, read in lists.items() for o in read()}


def _field_paths(fields: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Leaf paths of a managedFields ``fieldsV1`` set (``f:spec`` → ``spec``, ``k:{...}`` → ``[{...}]``)."""
    for key, sub in fields.items():
        if key == ".":
            continue
        kind, _, rest = key.partition(":")
        here = f"{prefix}.{rest}" if kind == "f" else f"{prefix}[{rest}]"
        here = here.lstrip(".")
        leaves = list(_field_paths(sub, here)) if sub else []
        yield from leaves or [here]


def _changes(old: Any, new: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """``path: old -> new`` for every differing value (lists of equal length compared item by item)."""
    if path[:2] in IGNORED:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            yield from _changes(old.get(key), new.get(key), (*path, str(key)))
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from _changes(a, b, (*path, str(i)))
    elif old != new:
        yield f"{'.'.join(path)}: {str(old)[:120]} -> {str(new)[:120]}"


def _managers(obj: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(m.get("manager", ""), m.get("operation", ""), m.get("subresource", "")): m
            for m in obj["metadata"].get("managedFields") or []}


def describe_write(key: Key, old: dict[str, Any], new: dict[str, Any]) -> str:
    """Which managers wrote what, and which values changed, between two versions of one object."""
    kind, name = key
    lines = [f"{kind}/{name}: resourceVersion {old['metadata']['resourceVersion']} -> "
             f"{new['metadata']['resourceVersion']}"]
    before, after = _managers(old), _managers(new)
    touched = {k: e for k, e in after.items() if (p := before.get(k)) is None
               or (p.get("time"), p.get("fieldsV1")) != (e.get("time"), e.get("fieldsV1"))}
    if not touched:  # entry times have 1 s resolution: a second write by the same manager can leave no trace
        lines.append("  no managedFields entry changed; entries: " + ", ".join(
            f"{m} ({o}{' ' + s if s else ''}) at {e.get('time')}" for (m, o, s), e in after.items()))
    for (manager, operation, sub), entry in touched.items():
        fields = sorted(_field_paths(entry.get("fieldsV1") or {}))
        lines.append(f"  managedFields: {manager} ({operation}{' ' + sub if sub else ''}) at {entry.get('time')}"
                     f" owns {', '.join(fields[:15])}{' ...' if len(fields) > 15 else ''}")
    lines += [f"  changed {c}" for c in list(_changes(old, new))[:20]]
    return "\n".join(lines)


def writes_between(before: Snapshot, after: Snapshot) -> list[str]:
    """A description of every object created, deleted or written between two snapshots."""
    found = []
    for key in sorted(after.keys() - before.keys()):
        obj = after[key]
        detail = f" {obj.get('type')} {obj.get('reason')}: {obj.get('message')}" if key[0] == "Event" else ""
        managers = ", ".join(m for m, _, _ in _managers(obj))
        found.append(f"{key[0]}/{key[1]}: created (managers: {managers}){detail}")
    found += [f"{kind}/{name}: deleted" for kind, name in sorted(before.keys() - after.keys())]
    found += [describe_write(key, before[key], after[key]) for key in sorted(before.keys() & after.keys())
              if before[key]["metadata"]["resourceVersion"] != after[key]["metadata"]["resourceVersion"]]
    return found


# --- bringing the ModelDeployments to rest -----------------------------------------------------------------

def paused(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    md = api.md(ns, name) or {}
    rollout = md.get("status", {}).get("rollout", {})
    return md if rollout.get("decision") == "Paused" and rollout.get("currentStepIndex") == 1 else None


def refused(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    md = api.md(ns, name) or {}
    cond = api.condition(ns, name, "InvalidSpec")
    current = md.get("status", {}).get("observedGeneration") == md.get("metadata", {}).get("generation")
    return md if cond and cond["status"] == "True" and current else None


def bring_to_rest(api: Api, ns: str) -> list[str]:
    """Create the three ModelDeployments and wait until each is where it stays; returns their names."""
    api.create_md(ns, md_body("rolling", replicas=2, **CPU, rollout={
        "strategy": "Rolling", "rolling": {"maxSurge": 1, "maxUnavailable": 0}}))
    api.create_md(ns, md_body("canary", replicas=3, **CPU))
    api.create_md(ns, md_body("refused", **REFUSED_GROUPS))

    wait_until("canary v1 Ready", lambda: converged(api, ns, "canary"), timeout=90)
    old = wait_until("rolling v1 Ready", lambda: converged(api, ns, "rolling"), timeout=90)["status"]["stableRevision"]
    api.patch_md(ns, "rolling", {"spec": {"model": {"version": 2}}})
    api.patch_md(ns, "canary", {"spec": {"model": {"version": 2},
                                         "rollout": {"strategy": "Canary", "canary": {"steps": STEPS}}}})
    new = wait_until("rolling v2 stable", lambda: (m := converged(api, ns, "rolling"))
                     and m["status"]["stableRevision"] != old and m, timeout=90)["status"]["stableRevision"]
    wait_until("rolling v1 removed", lambda: [d.metadata.name for d in api.deployments(ns, "rolling")] == [new])
    wait_until("canary paused at its pause step", lambda: paused(api, ns, "canary"), timeout=90)
    wait_until("refused: InvalidSpec", lambda: refused(api, ns, "refused"), timeout=30)
    assert api.deployments(ns, "refused") == []
    return ["rolling", "canary", "refused"]


def reconciles(operator: OperatorProcess) -> float:
    """Reconcile cycles so far."""
    return operator.reconciles()


def wait_resyncs(operator: OperatorProcess, objects: int, rounds: int, since: float = 0.0) -> None:
    """Wait for ``rounds`` reconciles per object after ``since`` (counter value), spanning ``rounds`` resyncs."""
    floor = time.monotonic() + rounds * operator.resync_seconds
    wait_until(f"{rounds} resyncs of {objects} ModelDeployments",
               lambda: reconciles(operator) >= since + rounds * objects and time.monotonic() >= floor,
               timeout=rounds * operator.resync_seconds + 30)


def assert_unwritten(before: Snapshot, after: Snapshot, when: str) -> None:
    found = writes_between(before, after)
    assert not found, f"writes {when}:\n" + "\n".join(found)


def test_idle_operator_writes_nothing_on_the_server(api: Api, operator: OperatorProcess, namespace: str) -> None:
    names = bring_to_rest(api, namespace)
    wait_resyncs(operator, len(names), 2, reconciles(operator))  # let in-flight cycles and their events land
    before = snapshot(api, namespace)
    assert {("ModelDeployment", n) for n in names} <= before.keys()
    assert any(k == "Event" and o["reason"] == "InvalidSpec" for (k, _), o in before.items())
    writes = operator.writes()

    wait_resyncs(operator, len(names), 3, reconciles(operator))
    assert_unwritten(before, snapshot(api, namespace), "by the running operator over 3 resyncs")
    assert operator.writes() == writes, "the operator's own counter saw write requests (no-op ones?)"

    operator.stop()
    operator.start()  # a fresh process: kopf lists everything again and the controller starts cold
    wait_resyncs(operator, len(names), 4)  # the initial listing, then three resyncs
    assert_unwritten(before, snapshot(api, namespace), "by a restarted operator over 3 resyncs")
    assert operator.writes() == 0, "the restarted operator's own counter saw write requests"
