"""examples/gitops: Kustomize overlays build, Argo CD / Flux manifests are well-formed, and the Argo CD
health check and resource actions behave as documented when run by a real Lua 5.4 interpreter.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tools import ROOT, documents, run, tool
from tests.conftest import Golden

GITOPS = ROOT / "examples" / "gitops"
ARGOCD = GITOPS / "argocd"
HARNESS = Path(__file__).resolve().parent / "argocd_harness.lua"
ACTIONS = ("promote", "abort", "pause", "resume", "retrain")
ARGOCD_CM = ARGOCD / "argocd-cm.yaml"
KEY = "tritonops.io_ModelDeployment"


# ---------------------------------------------------------------- running Lua like Argo CD does


def lua_literal(value: Any) -> str:
    """A Lua table constructor for a JSON-like value (null members are dropped, as Argo CD does)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items()
                               if v is not None) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return f'"{escaped}"'
    raise TypeError(f"cannot pass {type(value).__name__} to Lua")


def run_lua(script: Path, obj: dict[str, Any], tmp_path: Path, epoch: int = 1_767_225_600) -> dict[str, Any]:
    """Run an Argo CD customization against ``obj``; returns {"result": …} or {"error": …}."""
    obj_file = tmp_path / "obj.lua"
    obj_file.write_text("return " + lua_literal(obj) + "\n")
    out = run([tool("lua5.4"), str(HARNESS), str(script), str(obj_file), str(epoch)]).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def md(generation: int = 1, status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
       **spec: Any) -> dict[str, Any]:
    """A ModelDeployment as the API server returns it (defaults included)."""
    obj: dict[str, Any] = {
        "apiVersion": "tritonops.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "clf", "namespace": "ml", "generation": generation, "uid": "u-1",
                     "annotations": {"team": "ml", **(annotations or {})}},
        "spec": {"model": {"name": "clf", "storageUri": "s3://m/clf.pt", "format": "torchscript", "version": 1},
                 "replicas": 2, "rollout": {"strategy": "Rolling", "paused": False,
                                            "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10},
                 **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}


def status(*conditions: dict[str, Any], observed: int = 1, **extra: Any) -> dict[str, Any]:
    return {"observedGeneration": observed, "conditions": list(conditions), "phase": "Ready",
            "stableRevision": "clf-1a2b3c4d5e", **extra}


READY = cond("Ready", "True", "Available", "2/2 replicas of clf-1a2b3c4d5e are available")
NOT_PROGRESSING = cond("Progressing", "False", "Stable")
CANARY: dict[str, Any] = {"canaryRevision": "clf-9f8e7d6c5b", "canaryWeight": 10}

HEALTH_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "no status yet": (md(), "Progressing", "observe generation 1"),
    "stale status": (md(2, status(READY, NOT_PROGRESSING)), "Progressing", "observe generation 2"),
    "ready and stable": (md(1, status(READY, NOT_PROGRESSING)), "Healthy", "2/2 replicas"),
    "canary in progress": (md(1, status(READY, cond("Progressing", "True", "CanaryStep", "weight 10%"), **CANARY)),
                           "Progressing", "CanaryStep: weight 10%"),
    "insufficient gpu": (md(1, status(cond("Ready", "False", "Unavailable"), cond("Progressing", "True"),
                                      cond("Degraded", "True", "InsufficientGPU", "0/3 nodes: 3 Insufficient "
                                           "nvidia.com/gpu"))), "Degraded", "InsufficientGPU: 0/3 nodes"),
    "invalid spec": (md(1, status(READY, cond("InvalidSpec", "True", "ArgsOverrideManagedFlags",
                                              "--model-repository is managed"))), "Degraded",
                     "ArgsOverrideManagedFlags"),
    "paused mid canary": (md(1, status(READY, cond("Progressing", "True", "CanaryStep"), **CANARY),
                             rollout={"strategy": "Canary", "paused": True}), "Suspended", "paused"),
    "canary paused by the action": (md(1, status(READY, cond("Progressing", "True", "CanaryStep"), **CANARY),
                                       annotations={"tritonops.io/pause": "clf-9f8e7d6c5b"}), "Suspended",
                                    "Canary clf-9f8e7d6c5b paused"),
    "a pause of an older canary does not hold": (md(1, status(READY, cond("Progressing", "True", "CanaryStep"),
                                                              **CANARY), annotations={"tritonops.io/pause": "clf-old"}),
                                                 "Progressing", "CanaryStep"),
    "degraded wins over paused": (md(1, status(cond("Degraded", "True", "ModelFetchFailed", "403 from s3")),
                                     rollout={"paused": True}), "Degraded", "ModelFetchFailed: 403 from s3"),
    "not ready yet": (md(1, status(cond("Ready", "False", "Unavailable", "0/2 available"), NOT_PROGRESSING)),
                      "Progressing", "Unavailable: 0/2 available"),
    "empty conditions": (md(1, status()), "Progressing", "Waiting for the serving revision"),
}


@pytest.mark.parametrize("case", sorted(HEALTH_CASES))
def test_health(case: str, tmp_path: Path) -> None:
    obj, want_status, want_message = HEALTH_CASES[case]
    out = run_lua(ARGOCD / "health.lua", obj, tmp_path)
    assert "error" not in out, out
    assert out["result"]["status"] == want_status
    assert want_message in out["result"]["message"]


DISCOVERY_CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "stable, running": (md(1, status(READY)), set()),
    "canary": (md(1, status(READY, **CANARY)), {"promote", "abort", "pause"}),
    "paused canary": (md(1, status(READY, **CANARY), annotations={"tritonops.io/pause": "clf-9f8e7d6c5b"}),
                      {"promote", "abort", "resume"}),
    "no status, retraining on": (md(retraining={"enabled": True}), {"retrain"}),
}


@pytest.mark.parametrize("case", sorted(DISCOVERY_CASES))
def test_discovery(case: str, tmp_path: Path) -> None:
    obj, enabled = DISCOVERY_CASES[case]
    out = run_lua(ARGOCD / "actions" / "discovery.lua", obj, tmp_path)["result"]
    assert set(out) == set(ACTIONS)
    assert {name for name, a in out.items() if not a["disabled"]} == enabled


def changes(before: Any, after: Any, path: str = "") -> set[str]:
    """Dotted paths where two JSON-like values differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: set[str] = set()
        for key in set(before) | set(after):
            out |= changes(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        return out
    return set() if before == after else {path}


ACTION_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "promote": (md(1, status(READY, **CANARY)),
                {"metadata.annotations.tritonops.io/promote": "clf-9f8e7d6c5b"}),
    "abort": (md(1, status(READY, **CANARY)), {"metadata.annotations.tritonops.io/abort": "clf-9f8e7d6c5b"}),
    "pause": (md(1, status(READY, **CANARY)), {"metadata.annotations.tritonops.io/pause": "clf-9f8e7d6c5b"}),
    "resume": (md(1, status(READY, **CANARY), annotations={"tritonops.io/pause": "clf-9f8e7d6c5b"}),
               {"metadata.annotations.tritonops.io/pause": None}),
    "retrain": (md(1, status(READY), retraining={"enabled": True}),
                {"metadata.annotations.tritonops.io/retrain": "2026-01-01T00:00:00Z"}),
}


def lookup(obj: Any, dotted: str) -> Any:
    """The value at a dotted path, None where it is absent."""
    for part in re.split(r"\.(?![^.]*/)", dotted):  # annotation keys contain dots before the slash
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


@pytest.mark.parametrize("action", ACTIONS)
def test_action_changes_only_its_field(action: str, tmp_path: Path) -> None:
    obj, want = ACTION_CASES[action]
    out = run_lua(ARGOCD / "actions" / action / "action.lua", copy.deepcopy(obj), tmp_path)
    assert "error" not in out, out
    after = out["result"]
    assert changes(obj, after) == set(want)
    for dotted, value in want.items():
        assert lookup(after, dotted) == value
    assert after["metadata"]["annotations"]["team"] == "ml"  # other annotations are kept


def test_actions_work_without_annotations_or_rollout(tmp_path: Path) -> None:
    obj = md(1, status(READY, **CANARY))
    del obj["metadata"]["annotations"]
    del obj["spec"]["rollout"]
    promoted = run_lua(ARGOCD / "actions" / "promote" / "action.lua", obj, tmp_path)["result"]
    assert promoted["metadata"]["annotations"] == {"tritonops.io/promote": "clf-9f8e7d6c5b"}
    paused = run_lua(ARGOCD / "actions" / "pause" / "action.lua", obj, tmp_path)["result"]
    assert paused["metadata"]["annotations"] == {"tritonops.io/pause": "clf-9f8e7d6c5b"}


@pytest.mark.parametrize(("action", "obj"), [("promote", md(1, status(READY))), ("abort", md()),
                                             ("pause", md(1, status(READY))),
                                             ("retrain", md(1, status(READY)))])
def test_actions_refuse_when_not_applicable(action: str, obj: dict[str, Any], tmp_path: Path) -> None:
    out = run_lua(ARGOCD / "actions" / action / "action.lua", obj, tmp_path)
    assert "error" in out and ("canary" in out["error"] or "retraining" in out["error"])


# ---------------------------------------------------------------- registration in argocd-cm


def render_argocd_cm() -> str:
    """The argocd-cm patch that registers health.lua and the actions (kept in sync with the .lua files)."""

    class Literal(str):
        pass

    def literal(dumper: yaml.SafeDumper, data: Literal) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(Literal, literal)
    dumper = Dumper
    actions = {
        "discovery.lua": Literal((ARGOCD / "actions" / "discovery.lua").read_text()),
        "definitions": [{"name": a, "action.lua": Literal((ARGOCD / "actions" / a / "action.lua").read_text())}
                        for a in ACTIONS],
    }
    cm = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd",
                     "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}},
        "data": {
            f"resource.customizations.health.{KEY}": Literal((ARGOCD / "health.lua").read_text()),
            f"resource.customizations.actions.{KEY}": Literal(yaml.dump(actions, Dumper=dumper, sort_keys=False,
                                                                        width=120)),
        },
    }
    header = ("# Generated from health.lua and actions/ by tests/chart/test_gitops.py (pytest --update-golden);\n"
              "# merge into Argo CD's argocd-cm (for example as a Kustomize patch of the Argo CD install).\n")
    return header + yaml.dump(cm, Dumper=dumper, sort_keys=False, width=120)


def test_argocd_cm_is_current(golden: Golden) -> None:
    golden(ARGOCD_CM, render_argocd_cm())
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    actions = yaml.safe_load(data[f"resource.customizations.actions.{KEY}"])
    assert [d["name"] for d in actions["definitions"]] == list(ACTIONS)


# ---------------------------------------------------------------- manifests


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_overlays_build(env: str) -> None:
    out = run([tool("kubectl"), "kustomize", str(GITOPS / "kustomize" / "overlays" / env)]).stdout
    docs = documents(out)
    ns = f"models-{env}"
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("Namespace", ns), ("ModelDeployment", "classifier")]
    assert docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    model = docs[1]
    assert model["metadata"]["namespace"] == ns
    assert "annotations" not in model["metadata"]  # nothing that the operator or a tool would fight over
    if env == "prod":
        assert model["spec"]["rollout"]["strategy"] == "Canary" and model["spec"]["replicas"] == 3
    else:
        assert model["spec"]["model"]["version"] == 2


def test_argocd_applications_use_server_side_apply() -> None:
    apps = [d for f in ("operator.yaml", "models.yaml") for d in documents((ARGOCD / f).read_text())]
    assert {a["metadata"]["name"] for a in apps} == {"tritonops", "models-staging", "models-prod"}
    for app in apps:
        assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
        assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
        source = app["spec"]["source"]
        assert (ROOT / source["path"]).is_dir(), source["path"]
    operator = next(a for a in apps if a["metadata"]["name"] == "tritonops")
    assert operator["spec"]["source"]["path"] == "charts/tritonops"
    assert operator["spec"]["source"]["helm"]["valuesObject"]["watchNamespaces"] == ["models-staging", "models-prod"]


def test_flux_manifests() -> None:
    docs = [d for f in sorted((GITOPS / "flux").rglob("*.yaml")) if f.name != "kustomization.yaml"
            for d in documents(f.read_text())]
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert kinds == {("source.toolkit.fluxcd.io/v1", "HelmRepository"),
                     ("source.toolkit.fluxcd.io/v1", "GitRepository"),
                     ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
                     ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")}
    release = next(d for d in docs if d["kind"] == "HelmRelease")
    assert release["spec"]["chart"]["spec"]["chart"] == "tritonops"
    repo = next(d for d in docs if d["kind"] == "HelmRepository")
    assert release["spec"]["chart"]["spec"]["sourceRef"]["name"] == repo["metadata"]["name"]
    for k in (d for d in docs if d["kind"] == "Kustomization"):
        assert (ROOT / k["spec"]["path"]).is_dir(), k["spec"]["path"]
    run([tool("kubectl"), "kustomize", str(GITOPS / "flux" / "operator")])
