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
from tritonops.builders.meta import LABEL_MD, LABEL_REVISION

CRD_FILE = ROOT / "crds" / "modeldeployments.tritonops.io.yaml"
VARIANTS = {"default": [], "namespaced-full": [VALUES_DIR / "namespaced-full.yaml"],
            "clusterwide": [VALUES_DIR / "clusterwide.yaml"]}
RBAC_KINDS = ("Role", "ClusterRole")
# (apiGroup, resource) -> verbs: what kube.py, controller.py, handlers.py and kopf use (see _rbac.tpl).
EXPECTED_RULES = {
    ("tritonops.io", "modeldeployments"): {"list", "watch"},
    ("tritonops.io", "modeldeployments/finalizers"): {"update"},
    ("tritonops.io", "modeldeployments/status"): {"patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"create"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "patch"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "create", "patch", "delete"},
    ("keda.sh", "scaledobjects"): {"get", "list", "create", "patch", "delete"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
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
    return path.startswith(("networkPolicy.inferenceFrom.", "networkPolicy.metricsFrom.", "networkPolicy.dnsTo.",
                            "networkPolicy.modelStore.extraEgress.", "networkPolicy.operator.metricsFrom.",
                            "networkPolicy.operator.extraEgress."))


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
    assert rule_table(role["rules"]) == {**EXPECTED_RULES, ("", "pods"): {"watch"}}  # listed by the ClusterRole
    crds = ("apiextensions.k8s.io", "customresourcedefinitions")
    scanning = one(docs, "ClusterRole", "tritonops-scanning")
    nodes, pods = ("", "nodes"), ("", "pods")
    assert rule_table(scanning["rules"]) == {crds: {"list", "watch"}, ("", "namespaces"): {"list", "watch"},
                                             nodes: {"list"}, pods: {"list"}}
    scanning_cw = one(documents(helm_template(sets=["clusterWide=true"])), "ClusterRole", "tritonops-scanning")
    assert rule_table(scanning_cw["rules"]) == {crds: {"list", "watch"}, nodes: {"list"}}  # the main one lists pods
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
    policies = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "tritonops-triton"]
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
    # Liveness on kopf's /healthz; readiness on the metrics endpoint, the only Service's backend.
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in c["ports"]
    # Pod Security "restricted".
    assert pod["securityContext"]["runAsNonRoot"] is True
    # A UID/GID of at least 10000 can never be a user of the node.
    assert pod["securityContext"]["runAsUser"] >= 10000 and pod["securityContext"]["runAsGroup"] >= 10000
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
    assert dashboard == json.loads((CHART / "dashboards" / "tritonops.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in ("nv_inference_request_success", "nv_inference_request_failure",
                   "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                   "tritonops_canary_weight_percent", "tritonops_api_requests_total"):
        assert metric in exprs
    assert "by (model, version)" in exprs  # (tests/chart/test_dashboard.py checks the dashboard in depth)


def _policy(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The first NetworkPolicy of that name (the Triton one repeats in each namespace)."""
    return next(p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == name)


def _ports(rules: list[dict[str, Any]]) -> list[list[int]]:
    return [sorted(p["port"] for p in rule["ports"]) for rule in rules]


DNS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
KUBE_DNS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
             "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]


def test_network_policy_ports(rendered: dict[str, str]) -> None:
    docs = documents(rendered["namespaced-full"])
    policy = _policy(docs, "tritonops-triton")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "triton",
                                                             "app.kubernetes.io/managed-by": "tritonops"}}
    assert _ports(policy["spec"]["ingress"]) == [[8000, 8001, 8010], [8002, 8010]]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # Egress: DNS, the model store's CIDRs and ports, then the extra rules (namespaced-full narrows all).
    dns, store, minio = policy["spec"]["egress"]
    assert dns == {"ports": DNS, "to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}]}
    assert store == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 9000, "protocol": "TCP"}]}
    assert minio["ports"] == [{"port": 9000, "protocol": "TCP"}]
    # Defaults: cluster DNS, and https/http to any address (the fetcher's model stores are not known).
    default = documents(helm_template(sets=["networkPolicy.enabled=true"]))
    triton = _policy(default, "tritonops-triton")
    assert triton["spec"]["egress"] == [
        {"ports": DNS, "to": KUBE_DNS},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
         "ports": [{"port": 443, "protocol": "TCP"}, {"port": 80, "protocol": "TCP"}]}]
    closed = documents(helm_template(sets=["networkPolicy.enabled=true", "networkPolicy.modelStore.cidrs=null"]))
    triton = _policy(closed, "tritonops-triton")
    assert triton["spec"]["egress"] == [{"ports": DNS, "to": KUBE_DNS}]


def test_operator_network_policy(rendered: dict[str, str]) -> None:
    assert not by_kind(documents(rendered["default"]), "NetworkPolicy")  # opt-in
    docs = documents(helm_template(sets=["networkPolicy.enabled=true"]))
    policy = _policy(docs, "tritonops-operator")
    dep = one(docs, "Deployment")
    assert policy["metadata"]["namespace"] == dep["metadata"]["namespace"]
    assert policy["spec"]["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # Ingress: metrics from Prometheus, health from anywhere (kubelet probes); nothing else.
    metrics, health = policy["spec"]["ingress"]
    assert metrics["ports"] == [{"port": 8080, "protocol": "TCP"}] and metrics["from"]
    assert health == {"ports": [{"port": 8081, "protocol": "TCP"}]}
    # Egress: DNS and the API server only.
    assert policy["spec"]["egress"] == [
        {"ports": DNS, "to": KUBE_DNS},
        {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}]
    full = _policy(documents(rendered["namespaced-full"]), "tritonops-operator")
    dns, api, prometheus = full["spec"]["egress"]
    assert dns == {"ports": DNS, "to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}]}
    assert api == {"ports": [{"port": 6443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}]}
    assert _ports([prometheus]) == [[9090]]
    # Canary analysis queries Prometheus: the chart refuses a policy that would cut it off.
    bad = run([tool("helm"), "template", "x", str(CHART), "--kube-version", "v1.36.3",
               "--set", "networkPolicy.enabled=true", "--set", "analysis.prometheus.url=http://prom:9090"],
              check=False)
    assert bad.returncode != 0 and "networkPolicy.operator.extraEgress" in bad.stderr



# The labels every Triton series gets from its pod: a contract with the operator's canary analysis
# (namespace, revision) and the dashboard (namespace, modeldeployment, revision).
SCRAPE_LABELS = {"namespace": "namespace", "pod": "pod", "revision": LABEL_REVISION,
                 "modeldeployment": LABEL_MD}


def _meta_label(label: str) -> str:
    """Prometheus's Kubernetes SD meta label of a pod label (invalid characters become underscores)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", label)


def _relabel(meta: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus's relabeling (keep and replace with the defaults the chart relies on); None if dropped.

    Takes the Prometheus Operator's camelCase fields as well as prometheus.yml's snake_case ones.
    """
    labels = dict(meta)
    for rule in rules:
        sources = rule.get("sourceLabels", rule.get("source_labels", []))
        value = ";".join(labels.get(s, "") for s in sources)
        action = rule.get("action", "replace").lower()
        regex = rule.get("regex", "(.*)")
        if action == "keep":
            if not re.fullmatch(regex, value):
                return None
        elif action == "replace":
            match = re.fullmatch(regex, value)
            assert regex == "(.*)" and rule.get("replacement", "$1") == "$1", "only default replace rules"
            if match:
                labels[rule.get("targetLabel", rule.get("target_label"))] = match.group(1)
        else:
            raise AssertionError(f"unexpected relabel action {action}")
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def _triton_pods() -> list[dict[str, Any]]:
    """Pod templates of the Triton Deployments the operator builds (its golden renders), as pods."""
    pods = []
    for path in sorted((ROOT / "tests" / "golden").glob("*.yaml")):
        for doc in documents(path.read_text()):
            if doc.get("kind") == "Deployment":
                template = doc["spec"]["template"]
                pods.append({"namespace": doc["metadata"]["namespace"], "name": f"{doc['metadata']['name']}-x1",
                             "labels": template["metadata"]["labels"],
                             "ports": [p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])]})
    assert pods, "no Deployment in tests/golden"
    return pods


def _pod_targets(pod: dict[str, Any]) -> list[dict[str, str]]:
    """The meta labels of one Kubernetes SD target per container port of the pod (role: pod)."""
    base = {"__meta_kubernetes_namespace": pod["namespace"], "__meta_kubernetes_pod_name": pod["name"]}
    base |= {_meta_label(k): v for k, v in pod["labels"].items()}
    return [base | {"__meta_kubernetes_pod_container_port_name": port} for port in pod["ports"]]


def _expected_labels(pod: dict[str, Any]) -> dict[str, str]:
    return {"namespace": pod["namespace"], "pod": pod["name"], "revision": pod["labels"][LABEL_REVISION],
            "modeldeployment": pod["labels"][LABEL_MD]}


def test_pod_monitor_scrapes_every_triton_pod_with_the_contract_labels(rendered: dict[str, str]) -> None:
    assert not by_kind(documents(rendered["default"]), "PodMonitor")  # off by default
    monitor = one(documents(rendered["namespaced-full"]), "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    selector = spec["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "triton", "app.kubernetes.io/managed-by": "tritonops"}
    endpoint, drift = spec["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "10s")
    assert drift == {**endpoint, "port": "drift"}  # the drift monitor's series carry the same labels
    assert {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]} == {
        "namespace": ["__meta_kubernetes_namespace"], "pod": ["__meta_kubernetes_pod_name"],
        "revision": ["__meta_kubernetes_pod_label_tritonops_io_revision"],
        "modeldeployment": ["__meta_kubernetes_pod_label_tritonops_io_modeldeployment"]}
    # Against the pods the operator actually builds: selected, with a metrics port, and labelled.
    for pod in _triton_pods():
        assert selector.items() <= pod["labels"].items() and "metrics" in pod["ports"]
        target = next(t for t in _pod_targets(pod) if t["__meta_kubernetes_pod_container_port_name"] == "metrics")
        labels = _relabel(target, endpoint["relabelings"])
        assert labels is not None and _expected_labels(pod).items() <= labels.items()
    assert set(SCRAPE_LABELS) == {r["targetLabel"] for r in endpoint["relabelings"]}
    assert {_meta_label(v) for k, v in SCRAPE_LABELS.items() if k in ("revision", "modeldeployment")} <= {
        r["sourceLabels"][0] for r in endpoint["relabelings"]}
    listed = one(documents(rendered["clusterwide"]), "PodMonitor")
    assert listed["metadata"]["name"] == "tritonops-operator-triton"
    assert listed["spec"]["namespaceSelector"] == {"matchNames": ["models-a", "models-b"]}


def _documented_scrape_job() -> dict[str, Any]:
    """The raw Prometheus scrape job documented (commented out) in values.yaml under metrics.podMonitor."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "#   - job_name: tritonops-triton")
    block = []
    for line in lines[start:]:
        if not line.strip().startswith("#   "):
            break
        block.append(line.strip()[len("#   "):])
    (job,) = yaml.safe_load("\n".join(block))
    return job


def test_documented_scrape_job_is_valid_and_equals_the_pod_monitor(tmp_path: Any) -> None:
    job = _documented_scrape_job()
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    # Debian's Prometheus is built without Kubernetes service discovery: check the rest of the job
    # (relabel actions, regexes, label names) with a static target in its place.
    config = tmp_path / "prometheus.yml"
    static = {k: v for k, v in job.items() if k != "kubernetes_sd_configs"} | {
        "static_configs": [{"targets": ["127.0.0.1:8002"]}]}
    config.write_text(yaml.safe_dump({"scrape_configs": [static]}))
    run([tool("promtool"), "check", "config", "--syntax-only", str(config)])
    rules = job["relabel_configs"]
    pods = _triton_pods()
    for pod in pods:
        kept = [labels for t in _pod_targets(pod) if (labels := _relabel(t, rules)) is not None]
        assert len(kept) == 1, kept  # the metrics port only
        assert _expected_labels(pod).items() <= kept[0].items()
    # Pods the operator does not manage, and Triton's other ports, are dropped.
    stranger = dict(pods[0], labels={**pods[0]["labels"], "app.kubernetes.io/managed-by": "helm"})
    assert all(_relabel(t, rules) is None for t in _pod_targets(stranger))
    monitor = one(documents(helm_template(sets=["metrics.podMonitor.enabled=true"])), "PodMonitor")
    copies = {r["targetLabel"]: r["sourceLabels"] for r in monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert {r["target_label"]: r["source_labels"] for r in rules if "target_label" in r} == copies


def _operator_container(text: str) -> dict[str, Any]:
    (c,) = one(documents(text), "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def test_prometheus_flags_volumes_and_mounts_only_when_set(rendered: dict[str, str]) -> None:
    from tritonops.cli import _parser

    default = _operator_container(rendered["default"])
    assert not [a for a in default["args"] if a.startswith("--prometheus")]
    assert [m["name"] for m in default["volumeMounts"]] == ["tmp"]
    pod = one(documents(rendered["default"]), "Deployment")["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]

    url_only = _operator_container(helm_template(sets=["analysis.prometheus.url=http://prometheus-operated.monitoring:9090"]))
    assert [a for a in url_only["args"] if a.startswith("--prometheus")] == [
        "--prometheus-url=http://prometheus-operated.monitoring:9090"]
    assert [m["name"] for m in url_only["volumeMounts"]] == ["tmp"]

    full_docs = documents(rendered["namespaced-full"])
    full = _operator_container(rendered["namespaced-full"])
    volumes = {v["name"]: v for v in one(full_docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in full["volumeMounts"]}
    assert volumes["prometheus-token"]["secret"] == {"secretName": "prometheus-reader",
                                                     "items": [{"key": "token", "path": "token"}]}
    assert volumes["prometheus-ca"]["secret"] == {"secretName": "prometheus-ca",
                                                  "items": [{"key": "bundle.pem", "path": "ca.crt"}]}
    assert all(mounts[n]["readOnly"] for n in ("prometheus-token", "prometheus-ca"))
    args = _parser().parse_args(full["args"])  # the operator accepts the flags, and they name the mounted files
    assert args.prometheus_url == "https://prometheus.monitoring.svc:9090"
    assert args.prometheus_token_file == f"{mounts['prometheus-token']['mountPath']}/token"
    assert args.prometheus_ca_file == f"{mounts['prometheus-ca']['mountPath']}/ca.crt"
    assert args.prometheus_insecure_skip_verify is False
    cluster = _parser().parse_args(_operator_container(rendered["clusterwide"])["args"])
    assert (cluster.prometheus_url, cluster.prometheus_insecure_skip_verify) == ("https://prometheus.example.com", True)
    assert (cluster.prometheus_token_file, cluster.prometheus_ca_file) == ("", "")


@pytest.mark.parametrize(("sets", "message"), [
    (["analysis.prometheus.insecureSkipVerify=yes"], "insecureSkipVerify"),
    (["analysis.prometheus.url=prometheus-operated:9090"], "url"),
    (["analysis.prometheus.url=http://p:9090", "analysis.prometheus.bearerTokenSecret=prom"], "bearerTokenSecret"),
    (["analysis.prometheus.url=http://p:9090", "analysis.prometheus.caSecret.key="], "caSecret"),
    (["analysis.prometheus.bearerTokenSecret.name=prom"], "need analysis.prometheus.url"),
    (["analysis.prometheus.insecureSkipVerify=true"], "need analysis.prometheus.url"),
    (["metrics.podMonitor.enabled=on"], "podMonitor"),
    (["metrics.podMonitor.namespaces=team-a"], "namespaces"),
    (["metrics.podMonitor.interval=15"], "interval"),
])
def test_schema_and_template_reject_bad_monitoring_values(sets: list[str], message: str) -> None:
    cmd = [tool("helm"), "template", "x", str(CHART), "--kube-version", "v1.36.3"]
    bad = run([*cmd, *(a for s in sets for a in ("--set", s))], check=False)
    assert bad.returncode != 0 and message in bad.stderr, bad.stderr


def test_prometheus_adapter_rules_render_the_hpa_presets() -> None:
    from tritonops.api.adapter import rules
    from tritonops.builders.autoscaler import HPA_METRICS

    assert not [d for d in documents(helm_template()) if d["kind"] == "ConfigMap"
                and d["metadata"]["name"].endswith("prometheus-adapter-rules")]
    docs = documents(helm_template(sets=["autoscaling.prometheusAdapterRules.enabled=true"]))
    cm = one(docs, "ConfigMap", "tritonops-prometheus-adapter-rules")
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config == rules()
    assert sorted(r["name"]["as"] for r in config["rules"]) == sorted(HPA_METRICS.values())
