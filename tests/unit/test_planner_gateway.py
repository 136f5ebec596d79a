"""Planner tables for a canary routed through a Gateway API HTTPRoute: sizes, weights, delays, a bad route."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_planner_canary import canary_md, cycle, replicas
from tritonops import canary as c
from tritonops.planner import Observed

ROUTE = "clf-route"


def routed(*steps: dict[str, Any], **canary: Any) -> tuple[dict[str, Any], Observed, str, str]:
    md, observed, stable, rev = canary_md(*steps)
    md["spec"]["rollout"]["canary"].update(
        {"trafficRouting": {"gatewayAPI": {"httpRouteRef": {"name": ROUTE}}}, **canary})
    observed.route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                      "metadata": {"name": ROUTE, "namespace": md["metadata"]["namespace"], "resourceVersion": "7"},
                      "spec": {"parentRefs": [{"name": "gw"}],
                               "rules": [{"backendRefs": [{"name": "clf", "port": 8000}]}]}}
    return md, observed, stable, rev


def weights(body: dict[str, Any] | None) -> list[tuple[str, int]]:
    assert body is not None
    return [(r["name"], r["weight"]) for r in body["spec"]["rules"][0]["backendRefs"]]


@pytest.mark.parametrize(("total", "weight", "surge", "split"), [
    (4, 25, True, (4, 1)), (4, 30, True, (4, 2)), (2, 30, True, (2, 1)), (4, 100, True, (4, 4)),
    (4, 25, False, (3, 1)), (4, 60, False, (1, 3)), (1, 50, False, (1, 0)), (4, 0, True, (4, 0)),
])
def test_route_split_sizes_the_canary_for_its_weight(total: int, weight: int, surge: bool,
                                                     split: tuple[int, int]) -> None:
    got = c.route_split(total, weight, surge)
    assert (got.stable, got.canary) == split


def test_the_route_gets_the_exact_weight_once_the_canary_is_ready() -> None:
    md, observed, stable, rev = routed({"setWeight": 30}, {"pause": {}})
    p = cycle(md, observed, ready=False)
    assert weights(p.route) == [(stable, 100), (rev, 0)]  # not ready: the canary gets nothing yet
    assert {stable, rev} <= {o["metadata"]["name"] for o in p.apply if o["kind"] == "Service"}
    assert replicas(observed, rev) == 2  # ceil(4 x 30 %)
    observed.deployments.pop(rev)
    cycle(md, observed)
    p = cycle(md, observed)
    assert md["status"]["canaryWeight"] == 30 and weights(p.route) == [(stable, 70), (rev, 30)]
    assert p.route and p.route["metadata"]["resourceVersion"] == "7"  # applied only onto what was read


def test_an_unchanged_route_is_not_written() -> None:
    md, observed, _stable, _rev = routed({"setWeight": 30}, {"pause": {}})
    for _ in range(3):
        p = cycle(md, observed)
        if p.route:
            observed.route = {**observed.route, "spec": {**observed.route["spec"], "rules": p.route["spec"]["rules"]}}
    assert cycle(md, observed, 1).route is None


def test_abort_moves_the_weight_at_once_and_the_pods_after_the_delay() -> None:
    md, observed, stable, rev = routed({"setWeight": 50}, {"pause": {}}, abortScaleDownDelaySeconds=20)
    for _ in range(3):
        cycle(md, observed)
    md["metadata"]["annotations"] = {"tritonops.io/abort": rev}
    p = cycle(md, observed, 10)
    assert weights(p.route) == [(stable, 100), (rev, 0)] and replicas(observed, rev) == 2  # ceil(4 x 50 %)
    assert p.requeue_after == 20
    cycle(md, observed, 29)
    assert replicas(observed, rev) == 2
    cycle(md, observed, 31)
    assert replicas(observed, rev) == 0


def test_promotion_keeps_the_old_stable_for_the_scale_down_delay() -> None:
    md, observed, stable, rev = routed({"setWeight": 50}, scaleDownDelaySeconds=15)
    for i in range(4):
        p = cycle(md, observed, i)
    assert md["status"]["stableRevision"] == rev and weights(p.route) == [(rev, 100)]
    assert stable in observed.deployments and not p.delete
    p = cycle(md, observed, 30)
    assert ("Deployment", stable) in p.delete and ("Service", stable) in p.delete


def test_a_route_without_a_rule_for_the_model_holds_the_canary() -> None:
    md, observed, stable, _rev = routed({"setWeight": 50})
    assert observed.route is not None
    observed.route["spec"]["rules"][0]["backendRefs"][0]["name"] = "someone-else"
    p = cycle(md, observed)
    degraded = next(x for x in md["status"]["conditions"] if x["type"] == "Degraded")
    assert degraded["reason"] == "TrafficRouteUnusable" and "httpRouteRef" in degraded["message"]
    assert p.route is None and md["status"]["rollout"]["weight"] == 0 and md["status"]["stableRevision"] == stable


def test_a_full_promotion_keeps_the_step_weight_until_the_canary_has_every_replica() -> None:
    # found by bench/rollouts.py: the route sent 100 % to a canary still sized for its step
    md, observed, stable, rev = routed({"setWeight": 50}, {"pause": {}})
    for i in range(3):
        cycle(md, observed, i)
    assert replicas(observed, rev) == 2 and md["status"]["rollout"]["weight"] == 50
    md["metadata"]["annotations"] = {"tritonops.io/promote": rev}
    p = cycle(md, observed, 5, ready=False)  # the canary grows to 4 replicas, not yet available
    assert replicas(observed, rev) == 4 and weights(p.route) == [(stable, 50), (rev, 50)]
    observed.deployments[rev]["status"] = {"replicas": 4, "readyReplicas": 4, "availableReplicas": 4,
                                           "updatedReplicas": 4, "observedGeneration": 1}
    p = cycle(md, observed, 6)
    assert md["status"]["stableRevision"] == rev and weights(p.route) == [(rev, 100)]
