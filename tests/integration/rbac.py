"""Run the operator under exactly the chart's RBAC: render it, apply it, mint a token, write a kubeconfig.

``operator_kubeconfig(cluster, namespace, tmp_path)`` renders ``charts/tritonops`` for one watched
namespace (``helm template --set watchNamespaces={namespace}``), applies only its ServiceAccount, Roles,
RoleBindings, ClusterRoles and ClusterRoleBindings (with the cluster's admin kubeconfig), asks the
TokenRequest API for a token of that ServiceAccount, and writes a kubeconfig that uses the token: an
operator started with it can do exactly what the chart grants, nothing more.

Names are unique per namespace (``tritonops-<namespace>``), and the cluster-scoped objects get an
ownerReference to the Namespace, so deleting the test namespace garbage-collects everything.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from tests.chart.tools import documents, helm_template
from tests.integration.support import kubectl

RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding")
TOKEN_SECONDS = 3600 * 3

RuleFilter = Callable[[dict[str, Any]], dict[str, Any]]


def _client(cluster: Any) -> kubernetes.client.ApiClient:
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig))
    return client


def release_name(namespace: str) -> str:
    """The per-namespace full name of the rendered objects (fits the chart's 63-character limit)."""
    return f"tritonops-{namespace}"[:63].rstrip("-")


def render_rbac(namespace: str, extra_sets: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The chart's RBAC objects for an operator in ``namespace`` that watches only ``namespace``."""
    sets = [f"watchNamespaces={{{namespace}}}", f"fullnameOverride={release_name(namespace)}",
            "crds.install=false", *extra_sets]
    text = helm_template(sets=sets, release="tritonops", namespace=namespace)
    return [d for d in documents(text) if d["kind"] in RBAC_KINDS]


def apply_rbac(cluster: Any, namespace: str, objects: list[dict[str, Any]]) -> None:
    """Server-side apply ``objects``; cluster-scoped ones are owned by the Namespace (garbage-collected)."""
    api = _client(cluster)
    try:
        meta = kubernetes.client.CoreV1Api(api).read_namespace(namespace).metadata
    finally:
        api.close()  # type: ignore[no-untyped-call]
    assert meta is not None
    owner = {"apiVersion": "v1", "kind": "Namespace", "name": namespace, "uid": meta.uid}
    docs = []
    for original in objects:
        obj = copy.deepcopy(original)
        if obj["kind"] in CLUSTER_SCOPED:
            obj["metadata"]["ownerReferences"] = [owner]
        docs.append(obj)
    kubectl(cluster, "apply", "--server-side", "--field-manager=tritonops-tests", "-f", "-",
            stdin=yaml.safe_dump_all(docs))


def service_account_token(cluster: Any, namespace: str, name: str) -> str:
    """A bound token for ServiceAccount ``namespace/name`` from the TokenRequest API."""
    api = _client(cluster)
    try:
        body = kubernetes.client.AuthenticationV1TokenRequest(
            spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS))
        resp = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, body)
        assert resp.status is not None and resp.status.token
        return str(resp.status.token)
    finally:
        api.close()  # type: ignore[no-untyped-call]


def token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path, user: str = "tritonops") -> Path:
    """A kubeconfig for the admin kubeconfig's current cluster that authenticates with ``token``."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context_name = admin.get("current-context") or admin["contexts"][0]["name"]
    context = next(c["context"] for c in admin["contexts"] if c["name"] == context_name)
    cluster = copy.deepcopy(next(c["cluster"] for c in admin["clusters"] if c["name"] == context["cluster"]))
    ca = cluster.get("certificate-authority")
    if ca and not Path(ca).is_absolute():
        cluster["certificate-authority"] = str((admin_kubeconfig.parent / ca).resolve())
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": user,
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "cluster", "user": user}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def operator_kubeconfig(cluster: Any, namespace: str, tmp_path: Path,
                        rules: RuleFilter | None = None) -> Path:
    """A kubeconfig with exactly the chart's permissions for an operator watching ``namespace``.

    ``rules``, when given, rewrites each rendered Role/ClusterRole before it is applied (the RBAC tests
    use it to take one permission away).
    """
    objects = render_rbac(namespace)
    if rules is not None:
        objects = [rules(o) if o["kind"] in ("Role", "ClusterRole") else o for o in objects]
    apply_rbac(cluster, namespace, objects)
    (sa,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    token = service_account_token(cluster, namespace, sa["metadata"]["name"])
    return token_kubeconfig(Path(cluster.kubeconfig), token, tmp_path / f"{namespace}.operator.kubeconfig")
