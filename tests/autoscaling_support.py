"""Autoscaling test support: KEDA's CRDs, and prometheus-adapter serving the custom and external metrics APIs.

- :func:`ensure_keda_crds` installs KEDA's CRDs (``hack/fetch-keda-crds.sh``, or ``$TRITONOPS_KEDA_CRDS``) into a test
  cluster that lacks them, so the API server validates ScaledObjects against the real schema.
- :func:`running_prometheus_adapter` runs prometheus-adapter (``hack/build-prometheus-adapter.sh``, or
  ``$TRITONOPS_PROMETHEUS_ADAPTER``) as a process on this machine against a Prometheus URL with a rules config. It
  serves ``custom.metrics.k8s.io`` and ``external.metrics.k8s.io`` over TLS with a certificate of its own CA, and
  authenticates to the API server with the test cluster's kubeconfig (lister, TokenReview, SubjectAccessReview; the
  front-proxy CA comes from ``kube-system/extension-apiserver-authentication``).
- :func:`registered_metrics_apis` registers it as an aggregated API: the APIServices
  ``v1beta1.custom.metrics.k8s.io`` and ``v1beta1.external.metrics.k8s.io`` (``caBundle``: the adapter's CA) point at
  a Service in a namespace of its own (``tritonops-metrics-<random>``), and waits until both are Available. The
  kube-apiserver of the local control plane runs on this machine, so the Service leads to the adapter's host
  address, in one of two ways (``routing``):

  ``"endpoints"``: a Service without selector and a hand-written EndpointSlice at the adapter's address and port.
  The aggregator dials the endpoint only when kube-apiserver runs with ``--enable-aggregator-routing=true``;
  without it, it dials the Service's ClusterIP, which nothing routes on this machine. EndpointSlice validation
  refuses loopback addresses, so the adapter listens on a non-loopback address of this machine
  (``$TRITONOPS_METRICS_ADAPTER_HOST``, else the real node's bridge address while this machine has it, else the
  test skips). Asked for on a control plane without aggregator routing, it fails at once instead of letting
  kube-apiserver dial a ClusterIP (which would leave the machine by the default route).

  ``"externalname"``: a Service of type ExternalName whose ``externalName`` is the adapter's address (an IP such as
  127.0.0.1 passes the DNS-1123 check). Without aggregator routing the aggregator dials
  ``externalName:port`` directly, so this works with the flags the local control plane has today, on loopback.
  With aggregator routing on, ExternalName Services are refused ("unsupported service type").

  ``"auto"`` (the default) takes ``$TRITONOPS_METRICS_ROUTING`` when set, else reads the local kube-apiserver's
  command line and picks ``endpoints`` when it has ``--enable-aggregator-routing=true``, else ``externalname``.

Either way the aggregator verifies the adapter's certificate for ``<service>.<namespace>.svc``, so that name is in
the certificate, next to the adapter's IP. A ``$KUBECONFIG`` cluster (kind) cannot reach a process on this machine
at 127.0.0.1: there, set ``$TRITONOPS_METRICS_ADAPTER_HOST`` to an address its API server reaches, or the tests skip.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import kubernetes
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.gateway import ensure_crds
from tests.integration.support import Api, kubectl
from tritonops.devcluster.launcher import spawn, tail, terminate
from tritonops.devcluster.pki import issue

ROOT = Path(__file__).resolve().parents[1]
KEDA_FETCH_SCRIPT = ROOT / "hack" / "fetch-keda-crds.sh"
ADAPTER_BUILD_SCRIPT = ROOT / "hack" / "build-prometheus-adapter.sh"
KEDA_CRDS_ENV = "TRITONOPS_KEDA_CRDS"
ADAPTER_ENV = "TRITONOPS_PROMETHEUS_ADAPTER"
ADAPTER_HOST_ENV = "TRITONOPS_METRICS_ADAPTER_HOST"
ROUTING_ENV = "TRITONOPS_METRICS_ROUTING"  # endpoints | externalname: overrides "auto"
SCALEDOBJECT_CRD = "scaledobjects.keda.sh"

ADAPTER_NAMESPACE_PREFIX = "tritonops-metrics-"
ADAPTER_SERVICE = "prometheus-adapter"
SERVICE_PORT = 443
PORT_NAME = "https"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tritonops-tests"}
METRICS_API_GROUPS = ("custom.metrics.k8s.io", "external.metrics.k8s.io")
METRICS_API_VERSION = "v1beta1"
REAL_NODE_GATEWAY = "10.250.0.1"  # tritonops.devcluster.nodeconf.GATEWAY: the host's address on that bridge
AGGREGATOR_ROUTING_FLAG = "--enable-aggregator-routing=true"

Routing = Literal["auto", "endpoints", "externalname"]


def apiservice_name(group: str) -> str:
    return f"{METRICS_API_VERSION}.{group}"


def _script_path(script: Path, timeout: float) -> Path:
    """Run an idempotent hack/ script and return the path it prints as its last stdout line."""
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise AssertionError(f"{script} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return Path(lines[-1])


# -- KEDA CRDs -----------------------------------------------------------------------------------------------------


def keda_crds_dir() -> Path:
    """The directory of KEDA's CRD files: ``$TRITONOPS_KEDA_CRDS``, else the fetch script's cache."""
    given = os.environ.get(KEDA_CRDS_ENV, "")
    path = Path(given) if given else _script_path(KEDA_FETCH_SCRIPT, 300)
    if not (path / "keda.sh_scaledobjects.yaml").is_file():
        raise AssertionError(f"{path} has no keda.sh_scaledobjects.yaml (set {KEDA_CRDS_ENV} to KEDA's "
                             "config/crd/bases)")
    return path


def ensure_keda_crds(cluster: Any, timeout: float = 120.0) -> list[str]:
    """Make the cluster serve KEDA's kinds (see :func:`tests.integration.gateway.ensure_crds`)."""
    return ensure_crds(cluster, SCALEDOBJECT_CRD, keda_crds_dir, timeout)


# -- the adapter's certificate ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingCert:
    """A CA and a serving certificate it signed (PEM files)."""

    ca_cert: Path
    cert: Path
    key: Path

    @property
    def ca_bundle(self) -> str:
        """The CA as an APIService ``caBundle`` (base64 of the PEM)."""
        return base64.b64encode(self.ca_cert.read_bytes()).decode()


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_serving_cert(directory: Path, dns: list[str], ips: list[str]) -> ServingCert:
    """Write a fresh CA (``ca.crt``) and a serving certificate for ``dns`` and ``ips`` (``tls.crt``/``tls.key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tritonops-test-metrics-adapter-ca")])
    ca = issue(ca_name, ca_key, is_ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if dns else ips[0])]), key,
                 issuer=ca_name, issuer_key=ca_key, usages=[ExtendedKeyUsageOID.SERVER_AUTH], dns=dns, ips=ips)
    out = ServingCert(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    out.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out.key, key)
    return out


# -- how the aggregator reaches this machine ------------------------------------------------------------------------


def apiserver_args(cluster: Any) -> list[str] | None:
    """The command line of the local control plane's kube-apiserver; None for a ``$KUBECONFIG`` cluster."""
    cp = getattr(cluster, "control_plane", None)
    pid = cp.pids.get("kube-apiserver") if cp is not None else None
    if pid is None:
        return None
    try:
        return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return None


def aggregator_routing(cluster: Any) -> bool | None:
    """Whether kube-apiserver routes aggregated APIs to endpoints (None: unknown, not our control plane)."""
    args = apiserver_args(cluster)
    if args is None:
        return None
    values = [a.split("=", 1)[1] if "=" in a else "true" for a in args
              if a.split("=", 1)[0] == "--enable-aggregator-routing"]
    return bool(values) and values[-1].lower() == "true"


def resolve_routing(cluster: Any, routing: Routing) -> Literal["endpoints", "externalname"]:
    """``routing`` unless "auto"; then ``$TRITONOPS_METRICS_ROUTING``, else what kube-apiserver's flags allow."""
    if routing != "auto":
        return routing
    given = os.environ.get(ROUTING_ENV, "")
    if given in ("endpoints", "externalname"):
        return "endpoints" if given == "endpoints" else "externalname"
    if given:
        raise AssertionError(f"{ROUTING_ENV}={given!r}: expected endpoints or externalname")
    return "endpoints" if aggregator_routing(cluster) else "externalname"


def adapter_host(cluster: Any, routing: Literal["endpoints", "externalname"]) -> str:
    """The address the adapter listens on, which the aggregator dials.

    ``$TRITONOPS_METRICS_ADAPTER_HOST`` when set. Otherwise, for ``externalname`` on our control plane: 127.0.0.1.
    For ``endpoints`` (no loopback allowed in an EndpointSlice): the real node's bridge address while this machine
    has it. Skips the test when there is no usable address.
    """
    given = os.environ.get(ADAPTER_HOST_ENV, "")
    if given:
        return given
    if not getattr(cluster, "owned", False):
        pytest.skip(f"the API server of a $KUBECONFIG cluster cannot reach 127.0.0.1 here: set {ADAPTER_HOST_ENV}")
    if routing == "externalname":
        return "127.0.0.1"
    if _is_local(REAL_NODE_GATEWAY):
        return REAL_NODE_GATEWAY
    pytest.skip(f"aggregator routing needs a non-loopback address of this machine for the EndpointSlice: set "
                f"{ADAPTER_HOST_ENV} (or start the real node, whose bridge has {REAL_NODE_GATEWAY})")


def _is_local(host: str) -> bool:
    """Whether ``host`` is an address of this machine (a socket can bind it)."""
    try:
        _free_port(host)
    except OSError:
        return False
    return True


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# -- the adapter process --------------------------------------------------------------------------------------------


def prometheus_adapter_binary() -> Path:
    """``$TRITONOPS_PROMETHEUS_ADAPTER``, else the cached build of ``hack/build-prometheus-adapter.sh``."""
    given = os.environ.get(ADAPTER_ENV, "")
    path = Path(given) if given else _script_path(ADAPTER_BUILD_SCRIPT, 1800)
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is not an executable prometheus-adapter (set {ADAPTER_ENV})")
    return path


@dataclass
class MetricsAdapter:
    """A running prometheus-adapter: where it listens, the CA of its certificate, its log."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    cert: ServingCert
    routing: Literal["endpoints", "externalname"]
    namespace: str  # where its Service goes: the certificate names <service>.<namespace>.svc
    log: Path

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log, lines)

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200 over TLS with the adapter's certificate (no client identity needed)."""
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus-adapter exited {self.proc.returncode}:\n{self.log_tail()}")
        ctx = ssl.create_default_context(cafile=str(self.cert.ca_cert))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        try:
            with opener.open(f"{self.url}/healthz", timeout=2) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False


@contextmanager
def running_prometheus_adapter(cluster: Any, prometheus_url: str, rules: dict[str, Any], workdir: Path, *,
                               routing: Routing = "auto", host: str | None = None, relist_interval: str = "2s",
                               max_age: str = "1m", timeout: float = 60.0) -> Iterator[MetricsAdapter]:
    """prometheus-adapter for ``cluster`` querying ``prometheus_url`` with ``rules`` (its ``--config``, as a dict).

    Series are re-listed every ``relist_interval`` (a new metric shows in discovery that much after its first
    scrape). Yields once ``/healthz`` answers; stops the process on exit. Not registered yet: see
    :func:`registered_metrics_apis`, or :func:`metrics_apis` for both.
    """
    how = resolve_routing(cluster, routing)
    if how == "endpoints" and aggregator_routing(cluster) is False:
        # Without aggregator routing kube-apiserver would dial the Service's ClusterIP (10.96.x.x), which nothing
        # routes here: it would leave the machine by the default route instead of reaching the adapter.
        raise AssertionError(f"routing 'endpoints' needs kube-apiserver {AGGREGATOR_ROUTING_FLAG}; this control "
                             "plane has not got it (use routing 'externalname' or 'auto')")
    host = host or adapter_host(cluster, how)
    binary = prometheus_adapter_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    namespace = f"{ADAPTER_NAMESPACE_PREFIX}{uuid.uuid4().hex[:6]}"
    cert = make_serving_cert(workdir / "pki", [f"{ADAPTER_SERVICE}.{namespace}.svc"], [host])
    config = workdir / "rules.yaml"
    config.write_text(yaml.safe_dump(rules, sort_keys=False))
    port = _free_port(host)
    kubeconfig = str(cluster.kubeconfig)
    argv = [str(binary), f"--prometheus-url={prometheus_url}", f"--config={config}",
            f"--metrics-relist-interval={relist_interval}", f"--metrics-max-age={max_age}",
            f"--lister-kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={host}", f"--secure-port={port}", f"--cert-dir={workdir / 'certs'}",
            f"--tls-cert-file={cert.cert}", f"--tls-private-key-file={cert.key}", "--v=2"]
    log = workdir / "prometheus-adapter.log"
    proc = spawn(argv, log, workdir, detach=False)
    adapter = MetricsAdapter(proc, host, port, cert, how, namespace, log)
    try:
        deadline = time.monotonic() + timeout
        while not adapter.healthy():
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus-adapter not healthy at {adapter.url} after {timeout:.0f}s:\n"
                                     f"{adapter.log_tail()}")
            time.sleep(0.2)
        yield adapter
    finally:
        terminate([proc.pid], 10.0)
        proc.wait(5)


# -- registration as an aggregated API ------------------------------------------------------------------------------


def _service(adapter: MetricsAdapter) -> dict[str, Any]:
    meta = {"name": ADAPTER_SERVICE, "namespace": adapter.namespace, "labels": MANAGED_BY}
    if adapter.routing == "externalname":
        # ExternalName Services have no ports of their own: the aggregator dials externalName:<APIService port>.
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"type": "ExternalName", "externalName": adapter.host}}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": "ClusterIP", "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP",
                                                     "targetPort": adapter.port}]}}


def _endpoint_slice(adapter: MetricsAdapter) -> dict[str, Any]:
    family = "IPv6" if ipaddress.ip_address(adapter.host).version == 6 else "IPv4"
    labels = {**MANAGED_BY, "kubernetes.io/service-name": ADAPTER_SERVICE,
              "endpointslice.kubernetes.io/managed-by": "tritonops-tests"}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{ADAPTER_SERVICE}-manual", "namespace": adapter.namespace, "labels": labels},
            "addressType": family,
            "endpoints": [{"addresses": [adapter.host], "conditions": {"ready": True}}],
            "ports": [{"name": PORT_NAME, "port": adapter.port, "protocol": "TCP"}]}


def _apiservice(group: str, adapter: MetricsAdapter) -> dict[str, Any]:
    # With an ExternalName Service the aggregator dials this port on the external name: the adapter's port.
    port = adapter.port if adapter.routing == "externalname" else SERVICE_PORT
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": apiservice_name(group), "labels": MANAGED_BY},
            "spec": {"group": group, "version": METRICS_API_VERSION, "groupPriorityMinimum": 100,
                     "versionPriority": 100, "caBundle": adapter.cert.ca_bundle,
                     "service": {"name": ADAPTER_SERVICE, "namespace": adapter.namespace, "port": port}}}


def apiservice_condition(custom: Any, name: str) -> dict[str, Any] | None:
    """The ``Available`` condition of APIService ``name`` (None when it has none yet)."""
    obj = custom.get_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices", name)
    conds = obj.get("status", {}).get("conditions", [])
    return next((c for c in conds if c.get("type") == "Available"), None)


@contextmanager
def registered_metrics_apis(cluster: Any, adapter: MetricsAdapter, timeout: float = 120.0) -> Iterator[None]:
    """Register ``adapter`` as ``v1beta1.custom.metrics.k8s.io`` and ``v1beta1.external.metrics.k8s.io``.

    Creates ``adapter.namespace`` with the Service (and EndpointSlice) of ``adapter.routing``, then the two
    APIServices, and waits until both are Available (the aggregator's own discovery check through the Service).
    An APIService of those names that these helpers did not create (a real metrics adapter) makes the test skip.
    On exit the APIServices and the namespace are deleted.
    """
    api = Api.from_kubeconfig(str(cluster.kubeconfig))
    core, custom = api.core, api.custom
    discovery: Any = kubernetes.client.DiscoveryV1Api(api.client)
    names = [apiservice_name(g) for g in METRICS_API_GROUPS]
    ours: list[str] = []  # only these are deleted on exit
    try:
        for name in names:
            try:
                found = custom.get_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices", name)
            except kubernetes.client.ApiException as err:
                if err.status != 404:
                    raise
                continue
            if not MANAGED_BY.items() <= (found["metadata"].get("labels") or {}).items():
                pytest.skip(f"the cluster already has APIService {name}, not created by these tests")
            # Left by an earlier, interrupted registration: replaced.
            custom.delete_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices", name)
        ours = names
        core.create_namespace({"metadata": {"name": adapter.namespace, "labels": MANAGED_BY}})
        core.create_namespaced_service(adapter.namespace, _service(adapter))
        if adapter.routing == "endpoints":
            discovery.create_namespaced_endpoint_slice(adapter.namespace, _endpoint_slice(adapter))
        for group in METRICS_API_GROUPS:
            custom.create_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices",
                                                _apiservice(group, adapter))
        _wait_available(custom, names, adapter, timeout)
        yield
    finally:
        for name in ours:
            try:
                custom.delete_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices", name)
            except kubernetes.client.ApiException as err:
                if err.status != 404:
                    raise
        with contextlib.suppress(kubernetes.client.ApiException):
            core.delete_namespace(adapter.namespace)
        api.client.close()


def _wait_available(custom: Any, names: list[str], adapter: MetricsAdapter, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        conds = {name: apiservice_condition(custom, name) for name in names}
        if all(c and c.get("status") == "True" for c in conds.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"APIServices not Available after {timeout:.0f}s (routing {adapter.routing}, "
                                 f"adapter at {adapter.url}): {json.dumps(conds, indent=1)}\n"
                                 f"prometheus-adapter log:\n{adapter.log_tail()}")
        time.sleep(0.5)


@contextmanager
def metrics_apis(cluster: Any, prometheus_url: str, rules: dict[str, Any], workdir: Path, *,
                 routing: Routing = "auto", host: str | None = None, relist_interval: str = "2s",
                 timeout: float = 120.0) -> Iterator[MetricsAdapter]:
    """:func:`running_prometheus_adapter` registered with :func:`registered_metrics_apis`: the metrics APIs served."""
    with (running_prometheus_adapter(cluster, prometheus_url, rules, workdir, routing=routing, host=host,
                                     relist_interval=relist_interval) as adapter,
          registered_metrics_apis(cluster, adapter, timeout)):
        yield adapter


def get_raw(cluster: Any, path: str) -> dict[str, Any] | None:
    """``kubectl get --raw path`` as JSON; None on an error answer (for example a metric not discovered yet)."""
    out = kubectl(cluster, "get", "--raw", path, check=False)
    if out.returncode != 0:
        return None
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc
