"""Every permission the chart grants is needed, and together they are enough.

One trial per (apiGroup, resource, verb) of the chart's Role and scanning ClusterRole: the operator runs
under the chart's RBAC minus that one verb, in a namespace of its own, through a full lifecycle (create a
ModelDeployment, wait for Ready, change the model version, wait for the new revision to serve and the old
one to be deleted). A trial shows that the verb is needed only when the operator logs a denial *of that
verb on that resource* (the API server's ``cannot <verb> resource "<resource>"``, or kopf's "Not enough
permissions to <verb> <resource>"); a lifecycle that merely times out proves nothing (a slow machine would
otherwise "prove" every verb) and fails the test as unproven. The control trial with every verb must finish
with no denial.
Trials run concurrently, each bounded by a deadline and ended early at the first denial.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rbac import operator_kubeconfig, render_rbac
from tests.integration.support import Api, OperatorProcess, install_crd, md_body
from tritonops.devcluster.session import create_namespace, delete_namespace

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

Permission = tuple[str, str, str]  # (apiGroup, resource, verb)
# A bare "403" would also match log timestamps ("21:39:42,403"); API denials always say Forbidden.
DENIAL = re.compile(r"forbidden|not enough permissions", re.IGNORECASE)
# Granted for what this lifecycle (a Rolling update) does not reach; the chart carries the same reason as a
# comment. The Gateway API ones are exercised under the chart's RBAC by tests/integration/test_gateway_canary.py.
JUSTIFIED: dict[Permission, str] = {
    ("tritonops.io", "modeldeployments/finalizers", "update"): "OwnerReferencesPermissionEnforcement",
    ("", "services", "delete"): "HTTPRoute also has a Service per revision",
    ("gateway.networking.k8s.io", "httproutes", "get"): "weights the backendRefs of the user's HTTPRoute",
    ("gateway.networking.k8s.io", "httproutes", "patch"): "weights the backendRefs of the user's HTTPRoute",
    ("", "nodes", "list"): "to tell a node selector no node matches from a taint the pod does not",
    # (pods list is also in the Role: a trial drops both, and the Role's is needed by every lifecycle)
    # Retraining Jobs (spec.retraining; the lifecycle here has none): tests/integration/test_retraining.py runs
    # a Job's whole life under the chart's RBAC. (list and watch are trialed: the informer always lists Jobs.)
    **{("batch", "jobs", verb): "Retraining Jobs (spec.retraining)" for verb in ("get", "create", "delete")},
    **{(group, resource, verb): "The autoscaler of a ModelDeployment with spec.autoscaling"  # test_autoscaling.py
       for group, resource in (("autoscaling", "horizontalpodautoscalers"), ("keda.sh", "scaledobjects"))
       for verb in ("get", "list", "create", "patch", "delete")},
}
TRIAL_SECONDS = 45.0
WORKERS = 6


@dataclass
class Outcome:
    """What one trial saw."""

    finished: bool = False
    denials: list[str] = field(default_factory=list)
    stage: str = "start"
    seconds: float = 0.0


def denies(line: str, permission: Permission) -> bool:
    """Whether a log line reports a denial of exactly this verb on this resource."""
    _, resource, verb = permission
    return (f'cannot {verb} resource "{resource}"' in line or f"permissions to {verb} {resource}" in line
            or f"permissions to {verb} for {resource}" in line)


def permissions(objects: list[dict[str, Any]]) -> list[Permission]:
    found: list[Permission] = []
    for obj in objects:
        if obj["kind"] in ("Role", "ClusterRole"):
            for rule in obj["rules"]:
                found += [(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]]
    return found


def without(permission: Permission) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A rule filter that removes one verb of one resource (dropping rules left with no verbs)."""
    group, resource, verb = permission

    def apply(obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        rules = []
        for rule in obj["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
                rest = dict(rule, resources=[r for r in rule["resources"] if r != resource])
                if rest["resources"]:
                    rules.append(rest)
                verbs = [v for v in rule["verbs"] if v != verb]
                if verbs:
                    rules.append(dict(rule, resources=[resource], verbs=verbs))
            else:
                rules.append(rule)
        obj["rules"] = rules
        return obj

    return apply


def cpu_model(name: str) -> dict[str, Any]:
    """A small CPU-only ModelDeployment, so that concurrent trials never compete for GPUs."""
    return md_body(name, runtime={"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU",
                                                                                     "count": 1}]}},
                   resources={"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}})


def lifecycle_done(api: Api, ns: str, outcome: Outcome, old_revision: list[str]) -> bool:
    """Advance the lifecycle one observation; True once it is complete."""
    md = api.md(ns, "clf") or {}
    status = md.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    current = ready and status.get("observedGeneration") == md["metadata"]["generation"]
    if outcome.stage == "start" and current:
        old_revision.append(status["stableRevision"])
        api.patch_md(ns, "clf", {"spec": {"model": {"version": 2}}})
        outcome.stage = "rolling"
        return False
    if outcome.stage == "rolling" and current and status.get("stableRevision") not in (None, old_revision[0]):
        names = [d.metadata.name for d in api.deployments(ns, "clf")]
        maps = [c.metadata.name for c in api.core.list_namespaced_config_map(
            ns, label_selector="tritonops.io/modeldeployment=clf").items]
        events = api.core.list_namespaced_event(ns, field_selector="involvedObject.name=clf").items
        if names == [status["stableRevision"]] and f"{old_revision[0]}-config" not in maps and events:
            outcome.stage = "done"
            return True
    return False


def trial(cluster: Any, api: Api, base: Path, drop: Permission | None) -> Outcome:
    """Run the lifecycle under the chart's RBAC, minus ``drop``."""
    ns = f"t-rbac-{uuid.uuid4().hex[:10]}"
    work = base / ns
    work.mkdir()
    create_namespace(cluster.kubeconfig, ns)
    outcome = Outcome()
    t0 = time.monotonic()
    proc: OperatorProcess | None = None
    try:
        kubeconfig = operator_kubeconfig(cluster, ns, work, rules=None if drop is None else without(drop))
        proc = OperatorProcess(str(kubeconfig), ns, work / "operator.log").start()
        api.create_md(ns, cpu_model("clf"))
        old: list[str] = []
        deadline = t0 + TRIAL_SECONDS
        while time.monotonic() < deadline:
            lines = [line for line in (work / "operator.log").read_text().splitlines() if DENIAL.search(line)]
            outcome.denials = [line for line in lines if drop is None or denies(line, drop)]
            if outcome.denials and drop is not None:
                break
            if lifecycle_done(api, ns, outcome, old):
                outcome.finished = True
                break
            time.sleep(0.25)
    except AssertionError as err:  # the operator could not even start
        outcome.denials.append(str(err))
    finally:
        if proc is not None:
            proc.stop()
        outcome.seconds = time.monotonic() - t0
        delete_namespace(cluster.kubeconfig, ns)
    return outcome


def test_every_permission_is_needed_and_all_are_enough(cluster: Any, tmp_path: Path) -> None:
    install_crd(cluster)
    api = Api.from_kubeconfig(str(cluster.kubeconfig))
    granted = permissions(render_rbac("example"))
    assert len(granted) == len(set(granted))
    tried = [p for p in granted if p not in JUSTIFIED]
    templates = Path(__file__).resolve().parents[2] / "charts" / "tritonops" / "templates"
    chart_rbac = (templates / "_rbac.tpl").read_text() + (templates / "rbac.yaml").read_text()
    for reason in JUSTIFIED.values():
        assert reason in chart_rbac.replace("-\n# ", "")
    t0 = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        control = pool.submit(trial, cluster, api, tmp_path, None)
        futures = {p: pool.submit(trial, cluster, api, tmp_path, p) for p in tried}
        results = {p: f.result() for p, f in futures.items()}
        baseline = control.result()
    total = time.monotonic() - t0
    report = "\n".join(f"{'/'.join(p[:2])} {p[2]}: finished={o.finished} stage={o.stage} {o.seconds:.1f}s "
                       f"{(o.denials or [''])[0][:160]}" for p, o in results.items())
    print(f"{len(results)} trials in {total:.0f}s; control: finished={baseline.finished} in "
          f"{baseline.seconds:.1f}s\n{report}")
    assert baseline.finished and not baseline.denials, baseline
    unneeded = [p for p, o in results.items() if o.finished and not o.denials]
    assert unneeded == [], f"granted but not needed: {unneeded}\n{report}"
    unproven = [p for p, o in results.items() if not o.finished and not o.denials]
    assert unproven == [], f"no denial of the dropped verb observed (timed out): {unproven}\n{report}"
