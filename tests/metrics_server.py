"""metrics-server serving the resource metrics API (``metrics.k8s.io``) to a test cluster.

The resource metrics API is what the HPA controller reads for ``Resource`` metrics (the operator's CPU and Memory
presets) and what ``kubectl top`` prints: node and pod CPU/memory, scraped by metrics-server from each kubelet's
``/metrics/resource``. :func:`running_metrics_server` runs metrics-server (``hack/build-metrics-server.sh``, or
``$TRITONOPS_METRICS_SERVER``) as a process on this machine and registers it the way
:mod:`tests.autoscaling_support` registers prometheus-adapter, with :mod:`tests.aggregated_api`: a Service in a
namespace of its own (``tritonops-metrics-server-<random>``) leading to the process, ExternalName at 127.0.0.1 or a
hand-written EndpointSlice (``routing``, see :func:`tests.aggregated_api.resolve_routing`), and the APIService
``v1beta1.metrics.k8s.io`` with the CA of the process's own serving certificate as ``caBundle``.

Identity: metrics-server runs as a ServiceAccount of that namespace, with exactly the RBAC of upstream's
``manifests/base/rbac.yaml`` (v0.8.0): ``nodes/metrics`` get and nodes/pods get/list/watch, ``system:auth-delegator``
(TokenReview/SubjectAccessReview for the requests the aggregator forwards) and ``extension-apiserver-authentication-
reader`` in ``kube-system`` (the front-proxy CA and request-header names). Its kubeconfig carries a token of that
ServiceAccount from the TokenRequest API, and metrics-server presents the same token to the kubelets. The real
node's kubelet (:mod:`tritonops.devcluster.nodeconf`) has anonymous access off, webhook authentication on (it
asks the API server to review the token) and ``Webhook`` authorization (it asks the API server whether that
user may ``get nodes/metrics``), so a scrape succeeds only because of the ClusterRole: the path a production
install takes. The cluster admin's client certificate would work too (the kubelet trusts the cluster CA for
x509 clients and the admin is in ``system:masters``) but would prove nothing about the RBAC.

Only real nodes are scraped (``--node-selector``, by default the real node's label): KWOK nodes have no kubelet
to answer ``/metrics/resource``, and scraping them would only fill the log with errors. Without a real node the
API is still registered and Available; it then lists no nodes and no pods.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.utils import parse_quantity

from tests import aggregated_api as agg
from tests.aggregated_api import MANAGED_BY, LocalServer, Routing, ServingCert
from tests.integration.rbac import service_account_token, token_kubeconfig
from tests.integration.support import Api
from tests.integration.waiting import wait_for
from tritonops.devcluster.launcher import spawn
from tritonops.devcluster.nodeconf import REAL_NODE_LABEL

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "hack" / "build-metrics-server.sh"
BINARY_ENV = "TRITONOPS_METRICS_SERVER"

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
APISERVICE = f"{VERSION}.{GROUP}"
NAMESPACE_PREFIX = "tritonops-metrics-server-"
SERVICE = "metrics-server"
SERVICE_ACCOUNT = "metrics-server"
REAL_NODES = f"{REAL_NODE_LABEL}=true"
RBAC = "rbac.authorization.k8s.io"


def metrics_server_binary(timeout: float = 1800.0) -> Path:
    """``$TRITONOPS_METRICS_SERVER``, else the cached build of ``hack/build-metrics-server.sh`` (built if missing)."""
    return agg.process_binary(BINARY_ENV, BUILD_SCRIPT, "metrics-server", timeout)


class MetricsServer(LocalServer):
    """A running metrics-server: where it listens, its certificate, its namespace (and identity), its log.

    :meth:`healthy` answers True only once its informers synced.
    """

    NAME = "metrics-server"

    @property
    def user(self) -> str:
        """The user name metrics-server authenticates as (to the API server and the kubelets)."""
        return f"system:serviceaccount:{self.namespace}:{SERVICE_ACCOUNT}"


# -- objects --------------------------------------------------------------------------------------------------------


def _rbac(namespace: str, owner: dict[str, Any]) -> list[dict[str, Any]]:
    """Upstream's RBAC (manifests/base/rbac.yaml, v0.8.0) for the ServiceAccount of ``namespace``.

    Cluster-scoped objects and the RoleBinding in kube-system are named after the namespace and owned by it, so
    that deleting the namespace garbage-collects them even when a run is killed before its own cleanup.
    """
    meta = {"labels": MANAGED_BY, "ownerReferences": [owner]}
    subject = [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]

    def ref(kind: str, name: str) -> dict[str, str]:
        return {"apiGroup": RBAC, "kind": kind, "name": name}

    return [
        {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": namespace, **meta},
         "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": namespace, **meta},
         "roleRef": ref("ClusterRole", namespace), "subjects": subject},
        {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{namespace}:system:auth-delegator", **meta},
         "roleRef": ref("ClusterRole", "system:auth-delegator"), "subjects": subject},
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding",
         "metadata": {"name": f"{namespace}-auth-reader", "namespace": "kube-system", **meta},
         "roleRef": ref("Role", "extension-apiserver-authentication-reader"), "subjects": subject},
    ]


# -- the context manager --------------------------------------------------------------------------------------------


def _create(api: Api, obj: dict[str, Any]) -> None:
    rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api.client)
    kind, meta = obj["kind"], obj["metadata"]
    if kind == "ClusterRole":
        rbac.create_cluster_role(obj)
    elif kind == "ClusterRoleBinding":
        rbac.create_cluster_role_binding(obj)
    elif kind == "RoleBinding":
        rbac.create_namespaced_role_binding(meta["namespace"], obj)
    else:
        raise ValueError(f"unexpected kind {kind}")


def _delete(api: Api, obj: dict[str, Any]) -> None:
    rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api.client)
    kind, meta = obj["kind"], obj["metadata"]
    try:
        if kind == "ClusterRole":
            rbac.delete_cluster_role(meta["name"])
        elif kind == "ClusterRoleBinding":
            rbac.delete_cluster_role_binding(meta["name"])
        elif kind == "RoleBinding":
            rbac.delete_namespaced_role_binding(meta["name"], meta["namespace"])
    except kubernetes.client.ApiException as err:
        if err.status != 404:
            raise


def _argv(binary: Path, kubeconfig: Path, host: str, port: int, cert: ServingCert, workdir: Path,
          resolution: str, node_selector: str | None) -> list[str]:
    """metrics-server's command line: the kubeconfig for everything, TLS for the aggregator, how to scrape."""
    argv = [str(binary), f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={host}", f"--secure-port={port}", f"--cert-dir={workdir / 'certs'}",
            f"--tls-cert-file={cert.cert}", f"--tls-private-key-file={cert.key}",
            f"--metric-resolution={resolution}",
            # A scrape must end within 90 % of the resolution (metrics-server refuses to start otherwise): the
            # default 10s leaves no room below a 12s resolution, and a kubelet on this machine answers in ms.
            "--kubelet-request-timeout=5s",
            # The node's InternalIP (the bridge address the kubelet binds), at the port its status gives. The
            # other address, Hostname ("real-0"), resolves nowhere here: kube-apiserver dials kubelets the same way.
            "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port",
            # Not verifying the kubelet's serving certificate: the kubelet has none from the cluster CA (no
            # tlsCertFile, no serverTLSBootstrap), so at start it made a self-signed one, issued by a throw-away CA
            # of its own, for DNS:<node name> only. Dialled at the InternalIP, no CA file can make that check pass
            # (metrics-server has no server-name override), so the choice is this or no scraping at all; upstream's
            # flag help: "for testing purposes only". Client authentication is unaffected: the kubelet still
            # reviews the token and authorizes nodes/metrics with the API server.
            "--kubelet-insecure-tls",
            "--v=1"]
    if node_selector:
        argv.append(f"--node-selector={node_selector}")
    return argv


def _identity(cluster: Any, api: Api, namespace: str, workdir: Path, rbac: list[dict[str, Any]]) -> Path:
    """Create ``namespace`` with the ServiceAccount and its RBAC (appended to ``rbac`` as created, for cleanup);
    return a kubeconfig with a token of the ServiceAccount."""
    ns = api.core.create_namespace({"metadata": {"name": namespace, "labels": MANAGED_BY}})
    api.core.create_namespaced_service_account(namespace, {"metadata": {"name": SERVICE_ACCOUNT,
                                                                         "labels": MANAGED_BY}})
    owner = {"apiVersion": "v1", "kind": "Namespace", "name": namespace, "uid": ns.metadata.uid}
    for obj in _rbac(namespace, owner):
        _create(api, obj)
        rbac.append(obj)
    token = service_account_token(cluster, namespace, SERVICE_ACCOUNT)
    return token_kubeconfig(Path(cluster.kubeconfig), token, workdir / "metrics-server.kubeconfig",
                            user=SERVICE_ACCOUNT)


@contextmanager
def running_metrics_server(cluster: Any, workdir: Path, *, routing: Routing = "auto", host: str | None = None,
                           resolution: str = "10s", node_selector: str | None = REAL_NODES,
                           timeout: float = 120.0) -> Iterator[MetricsServer]:
    """metrics-server for ``cluster``, registered as ``v1beta1.metrics.k8s.io`` and Available.

    Scrapes the nodes matching ``node_selector`` (None: every node) every ``resolution`` (at least 10s). A
    node's or pod's metrics appear two scrapes after metrics-server first sees it (CPU is a rate between two
    samples): see :func:`nodes_have_metrics`, :func:`node_metrics` and :func:`pod_metrics`. On exit the
    APIService, the process, the RBAC and the namespace are removed, in that order (the API is unregistered
    before its server stops, so discovery never sees it unavailable).
    """
    how, host = agg.routing_and_host(cluster, routing, host)
    executable = metrics_server_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    api = Api.from_kubeconfig(str(cluster.kubeconfig))
    namespace = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:6]}"
    rbac: list[dict[str, Any]] = []
    registered = False
    proc: subprocess.Popen[bytes] | None = None
    try:
        agg.claim_apiservices(api.custom, [APISERVICE])
        kubeconfig = _identity(cluster, api, namespace, workdir, rbac)
        cert = agg.service_cert(workdir, SERVICE, namespace, host)
        port = agg.free_port(host)
        log = workdir / "metrics-server.log"
        proc = spawn(_argv(executable, kubeconfig, host, port, cert, workdir, resolution, node_selector), log,
                     workdir, detach=False)
        server = MetricsServer(proc, host, port, cert, how, namespace, log)
        deadline = server.wait_healthy(timeout)
        registered = True
        agg.register(api, SERVICE, namespace, how, host, port,
                     [agg.apiservice(GROUP, VERSION, SERVICE, namespace, how, port, cert.ca_bundle)])
        agg.wait_available(api.custom, [APISERVICE], server, max(1.0, deadline - time.monotonic()))
        yield server
    finally:
        if registered:
            with contextlib.suppress(kubernetes.client.ApiException):
                agg.delete_apiservices(api.custom, [APISERVICE])
        if proc is not None:
            agg.stop(proc)
        for obj in reversed(rbac):
            _delete(api, obj)
        with contextlib.suppress(kubernetes.client.ApiException):
            api.core.delete_namespace(namespace)
        api.client.close()


# -- reading the API ------------------------------------------------------------------------------------------------


def _get(probe: Any, *args: Any) -> dict[str, Any] | None:
    """``probe(*args)``, or None while the API answers 404 (no metrics yet) or 503 (not reachable yet)."""
    try:
        obj: dict[str, Any] = probe(*args)
        return obj
    except kubernetes.client.ApiException as err:
        if err.status in (404, 503):
            return None
        raise


def quantity(value: str) -> Decimal:
    """A usage value as a number: cores for CPU (``"12345678n"``), bytes for memory (``"61440Ki"``)."""
    number: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    return number


def node_metrics(api: Api, name: str) -> dict[str, Any] | None:
    """The NodeMetrics of node ``name`` (``usage.cpu``/``usage.memory``), or None while metrics-server has none."""
    return _get(api.custom.get_cluster_custom_object, GROUP, VERSION, "nodes", name)


def pod_metrics(api: Api, namespace: str, name: str) -> dict[str, Any] | None:
    """The PodMetrics of a pod (``containers[].usage``), or None while metrics-server has none."""
    return _get(api.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "pods", name)


def listed_nodes(api: Api) -> list[str]:
    """The names in ``GET /apis/metrics.k8s.io/v1beta1/nodes`` (empty while the API has none or is not served)."""
    doc = _get(api.custom.list_cluster_custom_object, GROUP, VERSION, "nodes") or {}
    return sorted(item["metadata"]["name"] for item in doc.get("items", []))


def nodes_have_metrics(api: Api, nodes: Sequence[str], timeout: float = 90.0) -> list[str]:
    """Wait until ``GET /apis/metrics.k8s.io/v1beta1/nodes`` lists every node of ``nodes``; return what it lists.

    Metrics-server needs two scrapes of a node (CPU is a rate), so allow two resolutions plus the kubelet's
    first resource-stats housekeeping after start.
    """
    def all_listed() -> list[str] | None:
        names = listed_nodes(api)
        return names if set(nodes) <= set(names) else None

    return wait_for(all_listed, timeout, f"node metrics of {list(nodes)} in {GROUP}/{VERSION}", interval=1.0)
