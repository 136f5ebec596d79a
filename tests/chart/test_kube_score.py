"""kube-score, a Kubernetes policy linter, over everything this repository deploys.

Two sets of manifests, each linted on its own (kube-score merges objects of the same kind and name):

- the chart, rendered with its default values and with each file of tests/chart/values/;
- the operator's rendered children (tests/golden: the Deployments, Services and ConfigMaps its builders
  write), together with the chart's Triton NetworkPolicy for their namespace, so that the policy is
  checked against the pods it is for and the pods against the policy that covers them.

Any finding (critical or warning) fails. Exclusions are explained where they are made: the chart's as
`kube-score/ignore` annotations in its templates, the children's in tests/chart/kube-score.yaml. An
exclusion that no longer hides a finding fails too, so none outlives its reason.

kube-score is built by hack/build-kube-score.sh (hack/test.sh exports its path as TRITONOPS_KUBE_SCORE);
without it these tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tools import ROOT, VALUES_DIR, documents, helm_template, run

CONFIG = Path(__file__).resolve().parent / "kube-score.yaml"
CHILDREN = sorted((ROOT / "tests" / "golden").glob("*.yaml"))
CHART_VARIANTS = {"default": [], **{f.stem: [f] for f in sorted(VALUES_DIR.glob("*.yaml"))}}
IGNORE_ANNOTATION = "kube-score/ignore"
OK = 10  # kube-score's GradeAllOK; 7 (AlmostOK) and below are reported


@functools.cache
def kube_score() -> str:
    """Path of the kube-score binary: $TRITONOPS_KUBE_SCORE, else the cached build."""
    candidates = []
    if os.environ.get("TRITONOPS_KUBE_SCORE"):
        candidates.append(Path(os.environ["TRITONOPS_KUBE_SCORE"]))
    cache = Path(os.environ.get("TRITONOPS_CACHE") or Path.home() / ".cache" / "tritonops")
    candidates += sorted((cache / "bins").glob("kube-score-*/kube-score"))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    message = "kube-score is not built: run `bash hack/build-kube-score.sh` (hack/test.sh does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@functools.cache
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return loaded


Finding = tuple[str, str, str]  # (object, check id, what kube-score says)


def score(docs: Iterable[dict[str, Any]], tmp: Path, name: str, *, flags: Sequence[str] = (),
          ignore: Iterable[str] = (), annotations: bool = True) -> list[Finding]:
    """kube-score's findings (non-skipped checks below OK) for the documents, sorted."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    cmd = [kube_score(), "score", "--output-format", "json", "--color", "never",
           "--kubernetes-version", config()["kubernetesVersion"]]
    cmd += [f"--enable-optional-test={c}" for c in config()["enableOptional"]]
    cmd += [f"--ignore-test={c}" for c in ignore]
    cmd += list(flags)
    if not annotations:
        cmd.append("--disable-ignore-checks-annotations")
    # Exit status 1 means "critical findings": read them from the JSON instead.
    proc = run([*cmd, str(path)], check=False)
    assert proc.returncode in (0, 1) and proc.stdout.startswith("["), proc.stderr or proc.stdout
    found: list[Finding] = []
    for obj in json.loads(proc.stdout):
        for check in obj["checks"]:
            if check["skipped"] or check["grade"] >= OK:
                continue
            comments = check.get("comments") or [{"path": "", "summary": "(no comment)"}]
            for c in comments:
                where = f"({c['path']}) " if c.get("path") else ""
                found.append((obj["object_name"], check["check"]["id"], where + c["summary"]))
    return sorted(set(found))


def report(findings: list[Finding]) -> str:
    return "kube-score findings (fix them, or exclude one with its reason):\n" + "\n".join(
        f"  {obj}: {check}: {text}" for obj, check, text in findings)


def object_name(doc: dict[str, Any]) -> str:
    """kube-score's object_name of a document: Kind/apiVersion/namespace/name."""
    meta = doc["metadata"]
    return f"{doc['kind']}/{doc['apiVersion']}/{meta.get('namespace', '')}/{meta['name']}"


def annotated_ignores(docs: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(object, check id) of every `kube-score/ignore` annotation in the documents."""
    out = set()
    for doc in docs:
        value = (doc.get("metadata", {}).get("annotations") or {}).get(IGNORE_ANNOTATION)
        if value:
            out |= {(object_name(doc), c.strip()) for c in value.split(",") if c.strip()}
    return out


# -- the chart --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(CHART_VARIANTS))
def test_chart_has_no_findings(variant: str, tmp_path: Path) -> None:
    kube_score()  # skip before rendering anything
    docs = documents(helm_template(CHART_VARIANTS[variant]))
    findings = score(docs, tmp_path, variant)
    assert not findings, report(findings)
    # Every annotated exclusion still hides a finding of its object.
    hidden = {(obj, check) for obj, check, _ in score(docs, tmp_path, f"{variant}-all", annotations=False)}
    assert annotated_ignores(docs) - hidden == set(), "kube-score/ignore annotations that hide nothing"


def test_chart_exclusions_are_explained() -> None:
    """Each kube-score/ignore annotation in the templates has a comment right above it."""
    templates = ROOT / "charts" / "tritonops" / "templates"
    for path in templates.glob("*.yaml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if IGNORE_ANNOTATION + ":" in line:
                above = [x.strip() for x in lines[max(0, i - 3):i]]
                assert any(x.startswith("#") for x in above), f"{path.name}:{i + 1}: explain the exclusion"


# -- the operator's children ------------------------------------------------------------------------


def as_admitted(doc: dict[str, Any]) -> dict[str, Any]:
    """A child as the pods it makes will be: the API server defaults each missing resource request of a
    container to its limit (SetDefaults_Pod), which kube-score does not model."""
    doc = copy.deepcopy(doc)
    if doc.get("kind") == "Deployment":
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            res = c.get("resources") or {}
            if res.get("limits"):
                c["resources"] = {**res, "requests": {**res["limits"], **(res.get("requests") or {})}}
    return doc


def children() -> list[dict[str, Any]]:
    docs = [as_admitted(d) for path in CHILDREN for d in documents(path.read_text())]
    assert docs, "no manifests in tests/golden"
    return docs


def triton_policies(namespaces: list[str]) -> list[dict[str, Any]]:
    """The chart's Triton NetworkPolicies for these namespaces, without their kube-score/ignore
    annotation (here they must select the operator's pods)."""
    sets = ["networkPolicy.enabled=true", f"networkPolicy.namespaces={{{','.join(namespaces)}}}"]
    policies = []
    for doc in documents(helm_template(sets=sets, extra=["--show-only", "templates/networkpolicy.yaml"])):
        if doc["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") != "triton":
            continue  # the operator's own policy: linted with the chart
        doc["metadata"].get("annotations", {}).pop(IGNORE_ANNOTATION, None)
        policies.append(doc)
    assert sorted(p["metadata"]["namespace"] for p in policies) == sorted(namespaces)
    return policies


def children_exclusions() -> tuple[dict[str, str], dict[str, str]]:
    section = config()["children"]
    flags, ignore = section.get("flags") or {}, section.get("ignore") or {}
    for what, reason in {**flags, **ignore}.items():
        assert isinstance(reason, str) and len(reason.split()) >= 5, f"{CONFIG.name}: give {what} its reason"
    return flags, ignore


def test_operator_children_have_no_findings(tmp_path: Path) -> None:
    kube_score()  # skip before rendering anything
    flags, ignore = children_exclusions()
    docs = children()
    namespaces = sorted({d["metadata"]["namespace"] for d in docs})
    docs += triton_policies(namespaces)
    findings = score(docs, tmp_path, "children", flags=list(flags), ignore=ignore)
    assert not findings, report(findings)
    # Every excluded check, and every flag, still hides a finding.
    everything = score(docs, tmp_path, "children-all")
    stale = set(ignore) - {check for _, check, _ in everything}
    assert not stale, f"{CONFIG.name}: exclusions that hide nothing: {sorted(stale)}"
    for flag in flags:
        without = score(docs, tmp_path, "children-no-flag", flags=[f for f in flags if f != flag], ignore=ignore)
        assert without, f"{CONFIG.name}: {flag} hides nothing"


def test_chart_triton_policy_covers_the_operator_pods(tmp_path: Path) -> None:
    """The Triton NetworkPolicy selects the pods the operator builds and restricts both directions."""
    kube_score()  # skip before rendering anything
    docs = children()
    namespaces = sorted({d["metadata"]["namespace"] for d in docs})
    policies = triton_policies(namespaces)
    pods = [d for d in docs if d["kind"] == "Deployment"]
    assert pods
    for pod in pods:
        labels = pod["spec"]["template"]["metadata"]["labels"]
        (policy,) = [p for p in policies if p["metadata"]["namespace"] == pod["metadata"]["namespace"]]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    findings = [f for f in score(docs + policies, tmp_path, "policies", annotations=False)
                if f[1] in ("pod-networkpolicy", "networkpolicy-targets-pod")]
    assert not findings, report(findings)
