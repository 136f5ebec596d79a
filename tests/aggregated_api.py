"""A process on this machine registered as a Kubernetes aggregated API (prometheus-adapter, metrics-server).

The process serves its API over TLS with a certificate of its own CA (:func:`make_serving_cert`), for the name
``<service>.<namespace>.svc`` and its IP: the aggregator verifies that name whatever address it dials. The test
cluster learns of it through two objects:

- a Service ``<service>`` in a namespace of the process's own, leading to the process's address (``routing``);
- an APIService ``<version>.<group>`` per group served (:func:`apiservice`), pointing at that Service, with the
  process's CA as ``caBundle``. The aggregator checks the API's discovery through the Service and sets the
  APIService's ``Available`` condition; :func:`wait_available` waits for it to be True.

The kube-apiserver of the local control plane runs on this machine, so the Service leads to a host address, in one
of two ways (``routing``):

``"externalname"``: a Service of type ExternalName whose ``externalName`` is the process's address (an IP such as
127.0.0.1 passes the DNS-1123 check). Without aggregator routing the aggregator dials ``externalName:port``
directly (the APIService's port is then the process's own), so this works with the flags the local control plane
has today, on loopback. With aggregator routing on, ExternalName Services are refused ("unsupported service type").

``"endpoints"``: a Service without selector and a hand-written EndpointSlice at the process's address and port.
The aggregator dials the endpoint only when kube-apiserver runs with ``--enable-aggregator-routing=true``; without
it, it dials the Service's ClusterIP, which nothing routes on this machine. EndpointSlice validation refuses
loopback addresses, so the process listens on a non-loopback address of this machine
(``$TRITONOPS_METRICS_ADAPTER_HOST``, else the real node's bridge address while this machine has it, else the test
skips). Asked for on a control plane without aggregator routing, :func:`routing_and_host` fails at once instead of
letting kube-apiserver dial a ClusterIP (which would leave the machine by the default route).

``"auto"`` (the default) takes ``$TRITONOPS_METRICS_ROUTING`` when set, else reads the local kube-apiserver's
command line and picks ``endpoints`` when it has ``--enable-aggregator-routing=true``, else ``externalname``.

A ``$KUBECONFIG`` cluster (kind) cannot reach a process on this machine at 127.0.0.1: there, set
``$TRITONOPS_METRICS_ADAPTER_HOST`` to an address its API server reaches, or the tests skip. Everything created is
labelled :data:`MANAGED_BY`; an APIService of the same name without that label (a real adapter) makes the test skip
(:func:`claim_apiservices`).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import kubernetes
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.support import Api
from tritonops.devcluster.launcher import tail, terminate
from tritonops.devcluster.pki import issue

HOST_ENV = "TRITONOPS_METRICS_ADAPTER_HOST"
ROUTING_ENV = "TRITONOPS_METRICS_ROUTING"  # endpoints | externalname: overrides "auto"
SERVICE_PORT = 443
PORT_NAME = "https"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tritonops-tests"}
REAL_NODE_GATEWAY = "10.250.0.1"  # tritonops.devcluster.nodeconf.GATEWAY: the host's address on that bridge
AGGREGATOR_ROUTING_FLAG = "--enable-aggregator-routing=true"
APISERVICES = ("apiregistration.k8s.io", "v1", "apiservices")

Routing = Literal["auto", "endpoints", "externalname"]
Resolved = Literal["endpoints", "externalname"]


def script_path(script: Path, timeout: float) -> Path:
    """Run an idempotent hack/ script and return the path it prints as its last stdout line."""
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise AssertionError(f"{script} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return Path(lines[-1])


def process_binary(env: str, script: Path, what: str, timeout: float) -> Path:
    """``$env``, else the path ``script`` (a cached build) prints; must be an executable ``what``."""
    given = os.environ.get(env, "")
    path = Path(given) if given else script_path(script, timeout)
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is not an executable {what} (set {env})")
    return path


# -- the serving certificate -----------------------------------------------------------------------------------------


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


def service_cert(workdir: Path, service: str, namespace: str, host: str) -> ServingCert:
    """The certificate for ``<service>.<namespace>.svc`` and ``host``, under ``workdir/pki``."""
    return make_serving_cert(workdir / "pki", [f"{service}.{namespace}.svc"], [host])


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


def resolve_routing(cluster: Any, routing: Routing) -> Resolved:
    """``routing`` unless "auto"; then ``$TRITONOPS_METRICS_ROUTING``, else what kube-apiserver's flags allow."""
    if routing != "auto":
        return routing
    given = os.environ.get(ROUTING_ENV, "")
    if given in ("endpoints", "externalname"):
        return "endpoints" if given == "endpoints" else "externalname"
    if given:
        raise AssertionError(f"{ROUTING_ENV}={given!r}: expected endpoints or externalname")
    return "endpoints" if aggregator_routing(cluster) else "externalname"


def listen_host(cluster: Any, routing: Resolved) -> str:
    """The address the process listens on, which the aggregator dials.

    ``$TRITONOPS_METRICS_ADAPTER_HOST`` when set. Otherwise, for ``externalname`` on our control plane: 127.0.0.1.
    For ``endpoints`` (no loopback allowed in an EndpointSlice): the real node's bridge address while this machine
    has it. Skips the test when there is no usable address.
    """
    given = os.environ.get(HOST_ENV, "")
    if given:
        return given
    if not getattr(cluster, "owned", False):
        pytest.skip(f"the API server of a $KUBECONFIG cluster cannot reach 127.0.0.1 here: set {HOST_ENV}")
    if routing == "externalname":
        return "127.0.0.1"
    if _is_local(REAL_NODE_GATEWAY):
        return REAL_NODE_GATEWAY
    pytest.skip(f"aggregator routing needs a non-loopback address of this machine for the EndpointSlice: set "
                f"{HOST_ENV} (or start the real node, whose bridge has {REAL_NODE_GATEWAY})")


def routing_and_host(cluster: Any, routing: Routing, host: str | None) -> tuple[Resolved, str]:
    """The routing :func:`resolve_routing` picks and the address to listen on (``host``, else :func:`listen_host`).

    ``endpoints`` on a control plane without aggregator routing fails at once: kube-apiserver would dial the
    Service's ClusterIP (10.96.x.x), which nothing routes here, so it would leave the machine by the default route.
    """
    how = resolve_routing(cluster, routing)
    if how == "endpoints" and aggregator_routing(cluster) is False:
        raise AssertionError(f"routing 'endpoints' needs kube-apiserver {AGGREGATOR_ROUTING_FLAG}; this control "
                             "plane has not got it (use routing 'externalname' or 'auto')")
    return how, host or listen_host(cluster, how)


def _is_local(host: str) -> bool:
    """Whether ``host`` is an address of this machine (a socket can bind it)."""
    try:
        free_port(host)
    except OSError:
        return False
    return True


def free_port(host: str) -> int:
    """A TCP port free on ``host`` a moment ago."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# -- the process ----------------------------------------------------------------------------------------------------


@dataclass
class LocalServer:
    """A running server process: where it listens, its certificate, how it is reached, its namespace, its log."""

    NAME: ClassVar[str] = "server"  # in messages

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    cert: ServingCert
    routing: Resolved
    namespace: str  # where its Service goes: the certificate names <service>.<namespace>.svc
    log: Path

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log, lines)

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200 over TLS with its certificate (no client identity needed)."""
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.NAME} exited {self.proc.returncode}:\n{self.log_tail()}")
        ctx = ssl.create_default_context(cafile=str(self.cert.ca_cert))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        try:
            with opener.open(f"{self.url}/healthz", timeout=2) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def wait_healthy(self, timeout: float) -> float:
        """Wait until :meth:`healthy`, at most ``timeout`` seconds; return the deadline (``time.monotonic``)."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.NAME} not healthy at {self.url} after {timeout:.0f}s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.2)
        return deadline


def stop(proc: subprocess.Popen[bytes]) -> None:
    terminate([proc.pid], 10.0)
    proc.wait(5)


# -- the objects ----------------------------------------------------------------------------------------------------


def service(name: str, namespace: str, routing: Resolved, host: str, port: int,
            labels: dict[str, str] = MANAGED_BY) -> dict[str, Any]:
    """Service ``name`` leading to ``host:port``: ExternalName, or ClusterIP :data:`SERVICE_PORT` (no selector)."""
    meta = {"name": name, "namespace": namespace, "labels": labels}
    if routing == "externalname":
        # ExternalName Services have no ports of their own: the aggregator dials externalName:<APIService port>.
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"type": "ExternalName", "externalName": host}}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": "ClusterIP", "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP",
                                                     "targetPort": port}]}}


def endpoint_slice(service_name: str, namespace: str, host: str, port: int,
                   labels: dict[str, str] = MANAGED_BY) -> dict[str, Any]:
    """The EndpointSlice ``<service>-manual`` of Service ``service_name``: one ready endpoint, ``host:port``."""
    family = "IPv6" if ipaddress.ip_address(host).version == 6 else "IPv4"
    all_labels = {**labels, "kubernetes.io/service-name": service_name,
                  "endpointslice.kubernetes.io/managed-by": "tritonops-tests"}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service_name}-manual", "namespace": namespace, "labels": all_labels},
            "addressType": family,
            "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
            "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}]}


def apiservice_name(group: str, version: str) -> str:
    return f"{version}.{group}"


def apiservice(group: str, version: str, service_name: str, namespace: str, routing: Resolved, port: int,
               ca_bundle: str, labels: dict[str, str] = MANAGED_BY) -> dict[str, Any]:
    """APIService ``<version>.<group>`` served through Service ``service_name`` (``port``: the process's)."""
    # With an ExternalName Service the aggregator dials this port on the external name: the process's port.
    service_port = port if routing == "externalname" else SERVICE_PORT
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": apiservice_name(group, version), "labels": labels},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 100,
                     "caBundle": ca_bundle,
                     "service": {"name": service_name, "namespace": namespace, "port": service_port}}}


# -- registering --------------------------------------------------------------------------------------------------


def claim_apiservices(custom: Any, names: list[str], labels: dict[str, str] = MANAGED_BY) -> None:
    """Skip when the cluster has one of the APIServices ``names`` without ``labels`` (not created by these tests);
    delete one that an earlier, interrupted run of these helpers left."""
    for name in names:
        try:
            found = custom.get_cluster_custom_object(*APISERVICES, name)
        except kubernetes.client.ApiException as err:
            if err.status != 404:
                raise
            continue
        if not labels.items() <= (found["metadata"].get("labels") or {}).items():
            pytest.skip(f"the cluster already has APIService {name}, not created by these tests")
        custom.delete_cluster_custom_object(*APISERVICES, name)


def register(api: Api, service_name: str, namespace: str, routing: Resolved, host: str, port: int,
             apiservices: list[dict[str, Any]]) -> None:
    """Create the Service (and, for ``endpoints``, the EndpointSlice) leading to ``host:port``, then
    ``apiservices``. The namespace must exist."""
    api.core.create_namespaced_service(namespace, service(service_name, namespace, routing, host, port))
    if routing == "endpoints":
        discovery: Any = kubernetes.client.DiscoveryV1Api(api.client)
        discovery.create_namespaced_endpoint_slice(namespace, endpoint_slice(service_name, namespace, host, port))
    for obj in apiservices:
        api.custom.create_cluster_custom_object(*APISERVICES, obj)


def delete_apiservices(custom: Any, names: list[str]) -> None:
    """Delete the APIServices ``names`` (gone already: fine)."""
    for name in names:
        try:
            custom.delete_cluster_custom_object(*APISERVICES, name)
        except kubernetes.client.ApiException as err:
            if err.status != 404:
                raise


def apiservice_condition(custom: Any, name: str) -> dict[str, Any] | None:
    """The ``Available`` condition of APIService ``name`` (None when it has none yet)."""
    obj = custom.get_cluster_custom_object(*APISERVICES, name)
    conds = obj.get("status", {}).get("conditions", [])
    return next((c for c in conds if c.get("type") == "Available"), None)


def wait_available(custom: Any, names: list[str], server: LocalServer, timeout: float) -> None:
    """Wait until every APIService of ``names`` (served by ``server``) is Available, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        conds = {name: apiservice_condition(custom, name) for name in names}
        if all(c and c.get("status") == "True" for c in conds.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"APIServices {', '.join(names)} not Available after {timeout:.0f}s (routing "
                                 f"{server.routing}, {server.NAME} at {server.url}): {json.dumps(conds, indent=1)}\n"
                                 f"{server.NAME} log:\n{server.log_tail()}")
        time.sleep(0.5)
