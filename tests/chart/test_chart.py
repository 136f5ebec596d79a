"""The Helm chart without a cluster: lint, values documentation and schema, golden renders, RBAC shape.

Golden files are the full ``helm template`` output; ``pytest --update-golden`` rewrites them after an
intended change (review the diff like code).
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest
import yaml

from tests.chart.tools import (
    CHART,
    FREE_FORM,
    GOLDEN_DIR,
    ROOT,
    VALUES_DIR,
    by_kind,
    documents,
    helm_template,
    one,
    run,
    tool,
    value_paths,
)
from tests.conftest import Golden
from tritonops.api.chart import render_chart_crd

CRD_FILE = ROOT / "crds" / "modeldeployments.tritonops.io.yaml"
VARIANTS = {"default": [], "namespaced-full": [VALUES_DIR / "namespaced-full.yaml"],
            "clusterwide": [VALUES_DIR / "clusterwide.yaml"]}
RBAC_KINDS = ("Role", "ClusterRole")
# (apiGroup, resource) -> verbs: what kube.py, controller.py, handlers.py and kopf use (see _rbac.tpl).
EXPECTED_RULES = {
    ("tritonops.io", "modeldeployments"): {"get", "list", "watch"},
    ("tritonops.io", "modeldeployments/finalizers"): {"update"},
    ("tritonops.io", "modeldeployments/status"): {"patch"},
    ("apps", "deployments"): {"list", "watch", "create", "patch", "delete"},
    ("", "services"): {"list", "watch", "create", "patch"},
    ("", "configmaps"): {"list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"create"},
}


def rule_table(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for r in rules:
        for group in r["apiGroups"]:
            for res in r["resources"]:
                table.setdefault((group, res), set()).update(r["verbs"])
    return table


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {name: helm_template(files) for name, files in VARIANTS.items()}


def test_helm_lint_strict() -> None:
    for files in VARIANTS.values():
        args = [a for f in files for a in ("--values", str(f))]
        out = run([tool("helm"), "lint", "--strict", str(CHART), "--kube-version", "v1.36.3", *args]).stdout
        assert "0 chart(s) failed" in out


def without_crd(text: str) -> str:
    """The render minus the CRD document, which follows crds/ (checked on its own below)."""
    parts = text.split("---\n")
    return "---\n".join(p for p in parts if "# Source: tritonops/templates/crds/" not in p)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_golden_render(variant: str, rendered: dict[str, str], golden: Golden) -> None:
    golden(GOLDEN_DIR / f"{variant}.yaml", without_crd(rendered[variant]))


def test_chart_crd_equals_crds_file_and_honours_install_and_keep() -> None:
    source = yaml.safe_load(CRD_FILE.read_text())
    crd = one(documents(helm_template()), "CustomResourceDefinition")
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    no_keep = one(documents(helm_template(sets=["crds.keep=false"])), "CustomResourceDefinition")
    assert "annotations" not in no_keep["metadata"]
    assert not by_kind(documents(helm_template(sets=["crds.install=false"])), "CustomResourceDefinition")


def test_template_escapes_helm_actions_in_the_crd() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "literal {{ .Values }} here"
    text = render_chart_crd(yaml.safe_dump(crd))
    assert '{{ "{{" }} .Values {{ "}}" }}' in text


def _documented_keys(text: str) -> tuple[set[str], set[str]]:
    """(all dotted keys, keys with a comment on the line(s) right above them) of values.yaml."""
    keys: set[str] = set()
    documented: set[str] = set()
    stack: list[tuple[int, str]] = []
    previous_comment = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            previous_comment = False
            continue
        if stripped.startswith("#"):
            previous_comment = True
            continue
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):", line)
        if m and not stripped.startswith("-"):
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([p for _, p in stack] + [m.group(2)])
            stack.append((indent, m.group(2)))
            if not any(path.startswith(f + ".") for f in FREE_FORM) and not _under_list(path):
                keys.add(path)
                if previous_comment:
                    documented.add(path)
        previous_comment = False
    return keys, documented


def _under_list(path: str) -> bool:
    return path.startswith(("networkPolicy.inferenceFrom.", "networkPolicy.metricsFrom."))


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    keys, documented = _documented_keys(text)
    assert keys == set(value_paths(yaml.safe_load(text)))
    # A group heading (a mapping of settings) may rely on the comments of its children.
    groups = {k for k in keys if any(o.startswith(k + ".") for o in keys)}
    assert sorted(keys - documented - groups) == []


def test_schema_covers_every_value_and_rejects_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def schema_paths(s: dict[str, Any], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for key, sub in s.get("properties", {}).items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            out |= schema_paths(sub, path)
        return out

    assert set(value_paths(values)) == schema_paths(schema)
    bad = run([tool("helm"), "template", "x", str(CHART), "--kube-version", "v1.36.3", "--set", "replicas=2"],
              check=False)
    assert bad.returncode != 0 and "replicas" in bad.stderr
    bad = run([tool("helm"), "template", "x", str(CHART), "--kube-version", "v1.36.3",
               "--set", "image.digest=sha256:short"], check=False)
    assert bad.returncode != 0 and "digest" in bad.stderr


def test_rbac_is_least_privilege(rendered: dict[str, str]) -> None:
    for variant, text in rendered.items():
        for doc in documents(text):
            if doc["kind"] not in RBAC_KINDS:
                continue
            for rule in doc["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], f"{variant}: wildcard in {doc['metadata']['name']}"
                assert "secrets" not in rule["resources"], variant
                assert "resourceNames" not in rule
    docs = documents(rendered["default"])
    (role,) = by_kind(docs, "Role")
    assert rule_table(role["rules"]) == EXPECTED_RULES
    crds = ("apiextensions.k8s.io", "customresourcedefinitions")
    scanning = one(docs, "ClusterRole", "tritonops-scanning")
    assert rule_table(scanning["rules"]) == {crds: {"list", "watch"}, ("", "namespaces"): {"list", "watch"}}
    scanning_cw = one(documents(helm_template(sets=["clusterWide=true"])), "ClusterRole", "tritonops-scanning")
    assert rule_table(scanning_cw["rules"]) == {crds: {"list", "watch"}}
    cluster = documents(rendered["clusterwide"])
    assert not by_kind(cluster, "Role") and not by_kind(cluster, "RoleBinding")
    (cluster_role,) = by_kind(cluster, "ClusterRole")
    assert rule_table(cluster_role["rules"]) == EXPECTED_RULES
    binding = one(cluster, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tritonops-controller",
                                    "namespace": "tritonops-system"}]


def test_one_role_per_watched_namespace(rendered: dict[str, str]) -> None:
    docs = documents(rendered["namespaced-full"])
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["team-a", "team-b"]
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tritonops",
                                        "namespace": "tritonops-system"}]
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    policies = by_kind(docs, "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]


def test_operator_deployment(rendered: dict[str, str]) -> None:
    dep = one(documents(rendered["default"]), "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/tritonops/tritonops:0.1.0"
    assert c["args"][:2] == ["run", "--namespace=tritonops-system"]
    assert "--health-port=8081" in c["args"] and "--metrics-port=8080" in c["args"]
    assert {"name": "TRITONOPS_RUNTIME_IMAGE", "value": "ghcr.io/tritonops/tritonops-runtime:0.1.0"} in c["env"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in c["ports"]
    # Pod Security "restricted".
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    full = one(documents(rendered["namespaced-full"]), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert full["image"] == ("ghcr.io/tritonops/tritonops:0.1.0@sha256:"
                             "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    assert {"name": "TRITONOPS_RUNTIME_IMAGE", "value": "registry.example.com/tritonops/tritonops-runtime@sha256:"
            "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"} in full["env"]
    cluster = one(documents(rendered["clusterwide"]), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in cluster["args"] if a.startswith("--namespace")]


def test_defaults_match_the_operator_and_the_dockerfiles(monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonops.cli import _parser

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    runtime_version = tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version == runtime_version
    monkeypatch.delenv("TRITONOPS_RUNTIME_IMAGE", raising=False)
    args = _parser().parse_args(["run"])
    assert args.runtime_image == f"{values['runtimeImage']['repository']}:{chart['appVersion']}"
    assert (args.metrics_port, args.health_port) == (values["operator"]["metricsPort"],
                                                     values["operator"]["healthPort"])
    for dockerfile, image in (("operator/Dockerfile", values["image"]["repository"]),
                              ("runtime/Dockerfile", values["runtimeImage"]["repository"])):
        text = (ROOT / dockerfile).read_text()
        assert f"-t {image}:{version} ." in text, dockerfile
        assert f'org.opencontainers.image.version="{version}"' in text, dockerfile


def test_dashboard_queries_the_documented_metrics(rendered: dict[str, str]) -> None:
    cm = one(documents(rendered["namespaced-full"]), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["tritonops.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in ("nv_inference_request_success", "nv_inference_request_failure",
                   "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                   "tritonops_canary_weight", "tritonops_drift_score"):
        assert metric in exprs
    assert "by (model, version)" in exprs


def test_network_policy_ports(rendered: dict[str, str]) -> None:
    policy = by_kind(documents(rendered["namespaced-full"]), "NetworkPolicy")[0]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "triton",
                                                             "app.kubernetes.io/managed-by": "tritonops"}}
    ports = [sorted(p["port"] for p in rule["ports"]) for rule in policy["spec"]["ingress"]]
    assert ports == [[8000, 8001], [8002]]
    assert policy["spec"]["policyTypes"] == ["Ingress"]

