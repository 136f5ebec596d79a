"""The chart and the GitOps examples against a real API server.

Every rendered manifest is accepted by a server-side dry run (schema, CEL, admission, Pod Security
warnings), ``helm install`` works in a restricted namespace, and a ModelDeployment applied the way a
GitOps tool applies it shows no drift once the operator reconciled it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.test_gitops import ARGOCD, GITOPS, run_lua
from tests.chart.tools import CHART, VALUES_DIR, documents, helm_template
from tests.integration.support import Api, OperatorProcess, helm, kubectl, ready
from tests.integration.test_canary import kubectl_tritonops
from tests.integration.waiting import wait_for
from tritonops.devcluster.session import create_namespace, delete_namespace

pytestmark = pytest.mark.cluster
# Stubs of the Prometheus Operator CRDs the chart's optional monitors use, by CRD name.
HERE = Path(__file__).resolve().parent
MONITORING_CRDS = {"servicemonitors.monitoring.coreos.com": HERE / "servicemonitor-crd-stub.yaml",
                   "podmonitors.monitoring.coreos.com": HERE / "podmonitor-crd-stub.yaml"}


@pytest.fixture
def extra_namespaces(cluster: Any) -> Iterator[list[str]]:
    names = [f"t-chart-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        create_namespace(cluster.kubeconfig, name)
    yield names
    for name in names:
        delete_namespace(cluster.kubeconfig, name)


def ensure_monitoring_crds(cluster: Any) -> None:
    """The Prometheus Operator's ServiceMonitor and PodMonitor CRDs: stubs with the fields the chart uses
    (unless present)."""
    for name, stub in MONITORING_CRDS.items():
        found = kubectl(cluster, "get", "crd", name, check=False)
        if found.returncode != 0:
            kubectl(cluster, "apply", "--server-side", "-f", str(stub))
            kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


@pytest.mark.parametrize("variant", ["default", "namespaced-full", "clusterwide"])
def test_every_rendered_manifest_is_accepted_by_the_api_server(
        variant: str, cluster: Any, api: Api, namespace: str, extra_namespaces: list[str]) -> None:
    ensure_monitoring_crds(cluster)
    files = [] if variant == "default" else [VALUES_DIR / f"{variant}.yaml"]
    sets = [f"watchNamespaces={{{','.join(extra_namespaces)}}}"] if variant == "namespaced-full" else []
    text = helm_template(files, sets, namespace=namespace, release=f"dry-{variant}")
    kinds = sorted({d["kind"] for d in documents(text)})
    out = kubectl(cluster, "apply", "--dry-run=server", "--server-side", "--force-conflicts",
                  "--field-manager=chart-test", "-f", "-", stdin=text)
    assert "PodSecurity" not in out.stderr, out.stderr  # restricted: no "would violate" warnings
    applied = [line for line in out.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(documents(text)), (kinds, out.stdout)


def test_gitops_overlays_are_accepted_by_the_api_server(cluster: Any, api: Api) -> None:
    for env in ("staging", "prod"):
        text = kubectl(cluster, "kustomize", str(GITOPS / "kustomize" / "overlays" / env)).stdout
        # The namespace does not exist, so the dry run validates the ModelDeployment in a scratch one.
        docs = [d for d in documents(text) if d["kind"] != "Namespace"]
        ns = f"t-gitops-{uuid.uuid4().hex[:8]}"
        create_namespace(cluster.kubeconfig, ns)
        try:
            for d in docs:
                d["metadata"]["namespace"] = ns
            out = kubectl(cluster, "apply", "--dry-run=server", "--server-side", "-f", "-",
                          stdin=yaml.safe_dump_all(docs))
            assert "modeldeployment.tritonops.io/classifier serverside-applied (server dry run)" in out.stdout
        finally:
            delete_namespace(cluster.kubeconfig, ns)


def test_helm_install_upgrade_uninstall(cluster: Any, api: Api, namespace: str) -> None:
    release = f"t{uuid.uuid4().hex[:8]}"
    # The CRD is shared by the whole test session: let this release adopt it (possible on our own
    # cluster only), so that install, upgrade and uninstall exercise crds.install and crds.keep.
    adopt = bool(cluster.owned)
    if adopt:
        kubectl(cluster, "annotate", "--overwrite", "crd/modeldeployments.tritonops.io",
                f"meta.helm.sh/release-name={release}", f"meta.helm.sh/release-namespace={namespace}")
        kubectl(cluster, "label", "--overwrite", "crd/modeldeployments.tritonops.io",
                "app.kubernetes.io/managed-by=Helm")
    common = ["--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}",
              "--set", f"crds.install={str(adopt).lower()}", "--wait", "--timeout", "120s"]
    out = helm(cluster, "install", release, str(CHART), *common).stdout
    assert f"It serves ModelDeployments in: {namespace} (one Role each)." in out
    dep = api.apps.read_namespaced_deployment(f"{release}-tritonops", namespace)
    assert dep.status.ready_replicas == 1  # Pod Security "restricted" admitted the pod
    pods = api.core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={release}").items
    assert len(pods) == 1
    # An upgrade with a changed value rolls the operator with Recreate; the release stays deployed.
    helm(cluster, "upgrade", release, str(CHART), *common, "--set", "operator.logLevel=debug")
    status = json.loads(helm(cluster, "status", release, "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed" and status["version"] == 2
    helm(cluster, "uninstall", release, "-n", namespace, "--wait")
    if adopt:
        crd = json.loads(kubectl(cluster, "get", "crd", "modeldeployments.tritonops.io", "-o", "json").stdout)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # kept by crds.keep
    assert kubectl(cluster, "get", "clusterrole", f"{release}-tritonops-scanning", check=False).returncode != 0


def test_applied_manifest_shows_no_drift_after_reconcile(cluster: Any, api: Api, namespace: str,
                                                         operator: OperatorProcess, tmp_path: Path) -> None:
    manifest = yaml.safe_load((GITOPS / "kustomize" / "base" / "classifier.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    ssa_file = tmp_path / "classifier.yaml"
    ssa_file.write_text(yaml.safe_dump(manifest))
    csa = dict(manifest, metadata={"name": "classifier-csa", "namespace": namespace})
    csa_file = tmp_path / "classifier-csa.yaml"
    csa_file.write_text(yaml.safe_dump(csa))
    # As Argo CD (ServerSideApply=true) and Flux apply it, and as `kubectl apply` (client-side) does.
    kubectl(cluster, "apply", "--server-side", "--field-manager=argocd-controller", "-f", str(ssa_file))
    kubectl(cluster, "apply", "-f", str(csa_file))
    for name in ("classifier", "classifier-csa"):
        wait_for(partial(ready, api, namespace, name), timeout=90, what=f"{name} Ready")
    diff = kubectl(cluster, "diff", "--server-side", "--field-manager=argocd-controller", "-f", str(ssa_file),
                   check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    diff = kubectl(cluster, "diff", "-f", str(csa_file), check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    # Re-applying is a no-op for the object: no new generation, so nothing for the operator to do.
    before = api.md(namespace, "classifier")
    kubectl(cluster, "apply", "--server-side", "--field-manager=argocd-controller", "-f", str(ssa_file))
    after = api.md(namespace, "classifier")
    assert before and after and after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"].get("annotations") is None and "finalizers" not in after["metadata"]
    # The Argo CD health check reads the live status as Healthy.
    health = run_lua(ARGOCD / "health.lua", after, tmp_path)["result"]
    assert health["status"] == "Healthy", health
    # A new version committed with a canary, in flight and held by a user's pause: still no drift.
    manifest["spec"]["model"]["version"] = 2
    manifest["spec"]["rollout"] = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    ssa_file.write_text(yaml.safe_dump(manifest))
    kubectl(cluster, "apply", "--server-side", "--field-manager=argocd-controller", "-f", str(ssa_file))

    def paused() -> bool:
        rollout = ((api.md(namespace, "classifier") or {}).get("status") or {}).get("rollout") or {}
        return rollout.get("decision") == "Paused"

    wait_for(paused, timeout=90, what="canary paused at its pause step")
    kubectl_tritonops(cluster, "pause", "classifier", "-n", namespace)
    diff = kubectl(cluster, "diff", "--server-side", "--field-manager=argocd-controller", "-f", str(ssa_file),
                   check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    md = api.md(namespace, "classifier") or {}
    assert md["status"].get("canaryRevision") and md["metadata"]["annotations"]["tritonops.io/pause"]
