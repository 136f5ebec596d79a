"""The Gateway API router of a canary (pure): revision Services, the route's weights, the scale-down delay.

Two routers sit behind one interface, the weight a canary step achieves:

- replica ratio (no ``trafficRouting``): the ModelDeployment's Service selects every revision, so the canary's
  share is its share of ready pods (:func:`tritonops.canary.split_replicas`); nothing here applies;
- Gateway API (``trafficRouting.gatewayAPI.httpRouteRef``): each revision gets its own Service
  (``build_revision_service``) and the operator weights the backendRefs of the user's HTTPRoute
  (:mod:`tritonops.builders.httproute`, field manager ``tritonops-traffic``). A weight reaches the route only
  once the step machine recorded it, i.e. once every canary pod the step asks for is Ready, which with
  ``--strict-readiness`` means Triton reports the model version ready.

After a promotion through a route, the old stable revision keeps its pods for ``scaleDownDelaySeconds``
(clients and gateways still holding connections to it drain), counted from the history entry's
``promotedAt``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tritonops.builders.httproute import ROUTE_REF_FIELD, route_patch
from tritonops.builders.meta import Owner
from tritonops.builders.service import build_revision_service, service_name
from tritonops.canary import parse_time
from tritonops.rollout_plan import route_ref
from tritonops_runtime.contract import HTTP_PORT


def route_problem(md: dict[str, Any], route: dict[str, Any] | None) -> str:
    """Why the named HTTPRoute cannot carry the canary's weights ("" when it can, or none is named)."""
    name = route_ref(md["spec"])
    if not name:
        return ""
    md_name, namespace = md["metadata"]["name"], md["metadata"]["namespace"]
    if route is None:
        return (f"HTTPRoute {namespace}/{name} ({ROUTE_REF_FIELD}.name) does not exist: create it with a rule "
                f"whose backendRefs point at Service {service_name(md_name)!r} port {HTTP_PORT} (and install the "
                "Gateway API CRDs), or fix the name; the stable revision keeps serving and the canary waits")
    try:
        route_patch(route, md_name, "stable", None, 0)
    except ValueError as err:
        return str(err)
    return ""


def desired_route(md: dict[str, Any], route: dict[str, Any] | None, stable: str, canary: str | None,
                  weight: int, blocked: str) -> dict[str, Any] | None:
    """The apply body of the route when its rules differ from what they should say, else None;
    ``blocked``: :func:`route_problem` of this cycle (nothing is written to an unusable route)."""
    if not route_ref(md["spec"]) or route is None or blocked:
        return None
    body = route_patch(route, md["metadata"]["name"], stable, canary, weight)
    return None if body["spec"]["rules"] == (route.get("spec") or {}).get("rules") else body


def revision_services(md: dict[str, Any], owner: Owner, revisions: list[str | None]) -> list[dict[str, Any]]:
    """The per-revision Services a routed canary needs (none with replica-ratio traffic)."""
    if not route_ref(md["spec"]):
        return []
    return [build_revision_service(owner, r) for r in dict.fromkeys(revisions) if r]


def retire_delay(md: dict[str, Any], stable: str | None, now: datetime, just_promoted: bool) -> float:
    """Seconds the revisions before ``stable`` still keep their pods after a routed promotion (0: none);
    ``just_promoted``: ``stable`` was promoted in this very cycle."""
    spec = md["spec"]
    if not stable or not route_ref(spec):
        return 0.0
    if spec.get("rollout", {}).get("canary", {}).get("capacityPolicy") == "NoSurge":
        return 0.0  # the GPUs are the promoted revision's now
    delay = int(spec["rollout"]["canary"].get("scaleDownDelaySeconds", 30))
    if just_promoted:
        return float(delay)
    promoted = [h for h in (md.get("status") or {}).get("history") or []
                if h.get("revision") == stable and h.get("outcome") == "Promoted"]
    at = parse_time(promoted[-1].get("promotedAt")) if promoted else None
    return max(0.0, delay - (now - at).total_seconds()) if at else 0.0
