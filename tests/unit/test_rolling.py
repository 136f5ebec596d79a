"""Rolling updates with maxSurge / maxUnavailable: the split per cycle, and a whole update played out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.factories import model_deployment, with_spec
from tests.unit.test_planner import NOW, OPTS, _store, converge
from tritonops import rolling
from tritonops.builders.meta import revision_of
from tritonops.planner import Observed, plan


@pytest.mark.parametrize(("value", "total", "up", "count"), [
    (1, 4, True, 1), ("2", 4, True, 2), ("25%", 4, True, 1), ("25%", 3, True, 1), ("25%", 3, False, 0),
    ("50%", 5, False, 2), ("100%", 4, True, 4),
])
def test_counts_and_percentages(value: int | str, total: int, up: bool, count: int) -> None:
    assert rolling.resolve(value, total, round_up=up) == count


@pytest.mark.parametrize(("surge", "unavailable", "old", "new", "split"), [
    (1, 0, (4, 4), (0, 0), (4, 1)),  # one extra pod first
    (1, 0, (4, 4), (1, 1), (3, 1)),  # it is available: one old pod goes
    (1, 0, (3, 3), (1, 1), (3, 2)),  # then one more new
    (0, 1, (4, 4), (0, 0), (3, 0)),  # no surge: make room first
    (0, 1, (3, 3), (0, 0), (3, 1)),  # then fill it
    (0, 1, (3, 3), (1, 0), (3, 1)),  # the new pod is loading its model: wait
    (0, 1, (3, 3), (1, 1), (2, 1)),
    (1, 0, (4, 2), (1, 0), (2, 1)),  # unavailable old pods may always go
])
def test_split(surge: int, unavailable: int, old: tuple[int, int], new: tuple[int, int],
               split: tuple[int, int]) -> None:
    assert rolling.split(4, surge, unavailable, rolling.Side(*old), rolling.Side(*new)) == split


def _ready_only(observed: Observed, name: str, available: int) -> None:
    dep = observed.deployments[name]
    dep["status"] = {**dep.get("status", {}), "availableReplicas": available, "readyReplicas": available,
                     "updatedReplicas": dep["spec"]["replicas"]}


@pytest.mark.parametrize("limits", [{"maxSurge": 0, "maxUnavailable": 1}, {"maxSurge": "25%"}])
def test_an_update_never_exceeds_its_bounds(limits: dict[str, Any]) -> None:
    md = model_deployment(with_spec("replicas", 4))
    observed = Observed()
    converge(md, observed)
    old = md["status"]["stableRevision"]
    md["spec"]["model"]["version"] = 2
    md["spec"]["rollout"] = {"strategy": "Rolling", "rolling": limits, "progressDeadlineSeconds": 600}
    new = revision_of("clf", md["spec"], OPTS.runtime_image)
    surge = 1 if limits.get("maxSurge") else 0
    for _ in range(20):
        p = plan(md, observed, NOW, OPTS)
        before = {n: d.get("status", {}).get("availableReplicas", 0) for n, d in observed.deployments.items()}
        _store(observed, p, ready=False)  # new pods come up unready, running ones stay available
        for name, dep in observed.deployments.items():
            _ready_only(observed, name, min(before.get(name, 0), dep["spec"]["replicas"]))
        if p.status is not None:
            md["status"] = p.status
        sizes = {n: d["spec"]["replicas"] for n, d in observed.deployments.items()}
        assert sum(sizes.values()) <= 4 + surge, sizes
        available = sum(d.get("status", {}).get("availableReplicas", 0) for d in observed.deployments.values())
        assert available >= 4 - (0 if surge else 1), sizes
        for name in observed.deployments:
            _ready_only(observed, name, observed.deployments[name]["spec"]["replicas"])
        if md["status"].get("stableRevision") == new and old not in observed.deployments:
            break
    assert md["status"]["stableRevision"] == new and list(observed.deployments) == [new]
    assert observed.deployments[new]["spec"]["replicas"] == 4


def test_a_rollout_past_its_deadline_leaves_the_serving_path_and_stable_serves_alone() -> None:
    md = model_deployment(with_spec("replicas", 2))
    observed = Observed()
    converge(md, observed)
    old = md["status"]["stableRevision"]
    md["spec"]["model"]["version"] = 2
    md["spec"]["rollout"] = {"strategy": "Rolling", "progressDeadlineSeconds": 60}
    new = revision_of("clf", md["spec"], OPTS.runtime_image)
    pod = {"metadata": {"name": f"{new}-x", "labels": {"tritonops.io/revision": new}}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}]}}
    observed.pods = [pod]
    for seconds in (0, 30):
        p = plan(md, observed, NOW + timedelta(seconds=seconds), OPTS)
        _store(observed, p, ready=False)
        md["status"] = p.status or md["status"]
    assert observed.deployments[new]["spec"]["replicas"] == 2  # still trying
    p = plan(md, observed, NOW + timedelta(seconds=61), OPTS)
    _store(observed, p, ready=False)
    md["status"] = p.status or md["status"]
    assert observed.deployments[new]["spec"]["replicas"] == 0 and observed.deployments[old]["spec"]["replicas"] == 2
    message = next(c["message"] for c in md["status"]["conditions"] if c["type"] == "Degraded")
    assert "Insufficient nvidia.com/gpu" in message and f"revision {old} serves alone" in message
    observed.pods = []  # its pods are gone; the reason stays
    p = plan(md, observed, NOW + timedelta(seconds=90), OPTS)
    assert p.status is None or "Insufficient nvidia.com/gpu" in next(
        c["message"] for c in p.status["conditions"] if c["type"] == "Degraded")
