"""Canary traffic weights on the user's Gateway API HTTPRoute (pure: observed route in, apply body out).

The user owns the HTTPRoute named by ``spec.rollout.canary.trafficRouting.gatewayAPI.httpRouteRef``; the
operator only splits the traffic of the rules that route to the model between the stable and the canary
revision Services (``service.build_revision_service``), by server-side apply under its own field manager
``tritonops-traffic``.

**What the server-side apply body must hold.** In the HTTPRoute CRD (Gateway API v1.6.3, standard channel,
versions v1 and v1beta1) every list on this path is atomic, not a map list::

    rules:        {x-kubernetes-list-type: atomic, maxItems: 16}
    backendRefs:  {x-kubernetes-list-type: atomic, maxItems: 16}   # spec.rules[].backendRefs
    parentRefs:   {x-kubernetes-list-type: atomic, maxItems: 32}   # hostnames too

An atomic list is a single field to server-side apply: it has no per-rule or per-backend keys, so a manager
can own ``spec.rules`` only whole, and an apply body with some rules would delete the others. The body
therefore carries *every* rule of the observed route, copied whole, with only the backendRefs of the model's
rules replaced, and nothing else: ``parentRefs``, ``hostnames``, labels and annotations are left out and stay
the user's. The body also carries the observed ``metadata.resourceVersion``, a precondition: an apply built
from a stale read fails with 409 Conflict instead of reverting a rule the user has just changed; the
operator reads the route again and retries.

**Consequences of atomic rules.**

- After the first (forced) apply, ``tritonops-traffic`` owns all of ``spec.rules`` (matches, filters and
  timeouts included) and the user's manager owns none of it.
- A user's later server-side apply of the original manifest conflicts on ``.spec.rules``; with
  ``--force-conflicts`` it takes the rules back and resets the weights, and the operator's next cycle copies
  the new rules and sets the weights again. Edits to matches or filters therefore survive, and the route
  keeps what the user last wrote except the model's backendRefs.
- GitOps tools must ignore backendRefs differences under ``/spec/rules`` and must not force them back (for
  Argo CD: ``ignoreDifferences`` with ``jqPathExpressions: ['.spec.rules[].backendRefs']`` and the
  ``RespectIgnoreDifferences=true`` sync option), or every sync undoes the canary's split.

**Which rules are the model's.** A rule is the model's when one of its backendRefs is a Service in the
route's namespace named like the ModelDeployment's Service or one of its revision Services
(``service.is_model_service``). Such a rule must route only to the model: the operator sets the weights of
all of its backendRefs. ``route_patch(...)["spec"]["rules"] == route["spec"]["rules"]`` means the route
already says what the operator wants, and nothing needs writing.
"""

from __future__ import annotations

import copy
from typing import Any

from tritonops.builders.service import is_model_service, revision_service_name, service_name
from tritonops_runtime.contract import HTTP_PORT

TRAFFIC_FIELD_MANAGER = "tritonops-traffic"
ROUTE_REF_FIELD = "spec.rollout.canary.trafficRouting.gatewayAPI.httpRouteRef"
GATEWAY_GROUP = "gateway.networking.k8s.io"
DEFAULT_WEIGHT = 1  # the CRD's default for a backendRef without a weight


def is_model_backend(ref: dict[str, Any], md_name: str, namespace: str) -> bool:
    """Whether a backendRef points at the model: a core Service of ``namespace`` named like ours."""
    return (ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"
            and ref.get("namespace", namespace) == namespace and is_model_service(md_name, ref.get("name", "")))


def _route_id(route: dict[str, Any]) -> str:
    meta = route.get("metadata", {})
    return f"HTTPRoute {meta.get('namespace', '')}/{meta.get('name', '')}"


def _rules(route: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = (route.get("spec") or {}).get("rules") or []
    return rules


def model_rule_indexes(route: dict[str, Any], md_name: str) -> list[int]:
    """Indexes in ``spec.rules`` of the rules with a backendRef to the model (see the module docstring)."""
    namespace = route.get("metadata", {}).get("namespace", "")
    return [i for i, rule in enumerate(_rules(route))
            if any(is_model_backend(ref, md_name, namespace) for ref in rule.get("backendRefs") or [])]


def _check_rules(route: dict[str, Any], md_name: str, indexes: list[int]) -> None:
    """Raise ValueError when no rule routes to the model, or a rule also routes elsewhere."""
    if not indexes:
        raise ValueError(
            f"{_route_id(route)} has no rule whose backendRefs reference Service {service_name(md_name)!r} "
            f"(or one of its revision Services) in its namespace, so the canary cannot weight its traffic: "
            f"point a rule's backendRefs at Service {service_name(md_name)!r} port {HTTP_PORT}, or set "
            f"{ROUTE_REF_FIELD}.name to the HTTPRoute that serves this model")
    namespace = route.get("metadata", {}).get("namespace", "")
    for i in indexes:
        rule = _rules(route)[i]
        others = [ref.get("name", "") for ref in rule.get("backendRefs") or []
                  if not is_model_backend(ref, md_name, namespace)]
        if others:
            label = f"rule {i}" + (f" ({rule['name']})" if rule.get("name") else "")
            raise ValueError(
                f"{label} of {_route_id(route)} routes to ModelDeployment {md_name!r} and to other backends "
                f"{sorted(others)}; the operator sets the weights of every backend of that rule: move the other "
                f"backends to a rule of their own (the route named by {ROUTE_REF_FIELD})")


def backend_refs(md_name: str, stable_rev: str, canary_rev: str | None, canary_weight: int,
                 filters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The weighted backendRefs of one rule: stable ``100 - w`` and canary ``w``, or stable alone at 100.

    Every field the API server would default (group, kind, weight) is written out, so the stored rule equals
    the applied one. ``filters`` (per-backend filters the user set on the model's backend) go on each ref.
    """
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary weight must be between 0 and 100, not {canary_weight}")
    split = [(stable_rev, 100)]
    if canary_rev and canary_rev != stable_rev:
        split = [(stable_rev, 100 - canary_weight), (canary_rev, canary_weight)]
    refs = []
    for revision, weight in split:
        ref: dict[str, Any] = {"group": "", "kind": "Service", "name": revision_service_name(md_name, revision),
                               "port": HTTP_PORT, "weight": weight}
        if filters:
            ref["filters"] = copy.deepcopy(filters)
        refs.append(ref)
    return refs


def route_patch(route: dict[str, Any], md_name: str, stable_rev: str, canary_rev: str | None,
                canary_weight: int) -> dict[str, Any]:
    """The server-side apply body (field manager ``tritonops-traffic``) that weights the model's rules.

    ``route`` is the HTTPRoute as read from the API server. Without a canary (``canary_rev`` None or equal to
    ``stable_rev``) all of the model's traffic goes to the stable revision and ``canary_weight`` is ignored.
    Raises ValueError when the route has no rule for the model or mixes it with other backends in one rule.
    """
    indexes = model_rule_indexes(route, md_name)
    _check_rules(route, md_name, indexes)
    namespace = route["metadata"]["namespace"]
    rules = copy.deepcopy(_rules(route))
    for i in indexes:
        ours = [ref for ref in rules[i]["backendRefs"] if is_model_backend(ref, md_name, namespace)]
        rules[i]["backendRefs"] = backend_refs(md_name, stable_rev, canary_rev, canary_weight,
                                               ours[0].get("filters"))
    meta: dict[str, Any] = {"name": route["metadata"]["name"], "namespace": namespace}
    if route["metadata"].get("resourceVersion"):
        meta["resourceVersion"] = route["metadata"]["resourceVersion"]
    return {"apiVersion": route.get("apiVersion", f"{GATEWAY_GROUP}/v1"), "kind": "HTTPRoute",
            "metadata": meta, "spec": {"rules": rules}}


def route_weights(route: dict[str, Any], md_name: str) -> dict[str, int]:
    """What the route says now: the weight of each of the model's Services (revision Services are named like
    their revision), from the first of the model's rules; empty when no rule routes to the model.

    Weights are as written (a missing weight is the CRD's default, 1), not percentages. ``route_patch`` gives
    every model rule the same backendRefs, so the rules differ only until the next apply.
    """
    indexes = model_rule_indexes(route, md_name)
    if not indexes:
        return {}
    namespace = route.get("metadata", {}).get("namespace", "")
    weights: dict[str, int] = {}
    for ref in _rules(route)[indexes[0]].get("backendRefs") or []:
        if is_model_backend(ref, md_name, namespace):
            weights[ref["name"]] = weights.get(ref["name"], 0) + int(ref.get("weight", DEFAULT_WEIGHT))
    return weights
