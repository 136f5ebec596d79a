"""Autoscaling test support: KEDA's CRDs, and prometheus-adapter serving the custom and external metrics APIs.

- :func:`ensure_keda_crds` installs KEDA's CRDs (``hack/fetch-keda-crds.sh``, or ``$TRITONOPS_KEDA_CRDS``) into a test
  cluster that lacks them, so the API server validates ScaledObjects against the real schema.
- :func:`running_prometheus_adapter` runs prometheus-adapter (``hack/build-prometheus-adapter.sh``, or
  ``$TRITONOPS_PROMETHEUS_ADAPTER``) as a process on this machine against a Prometheus URL with a rules config. It
  serves ``custom.metrics.k8s.io`` and ``external.metrics.k8s.io`` over TLS with a certificate of its own CA, and
  authenticates to the API server with the test cluster's kubeconfig (lister, TokenReview, SubjectAccessReview; the
  front-proxy CA comes from ``kube-system/extension-apiserver-authentication``).
- :func:`registered_metrics_apis` registers it as an aggregated API (:mod:`tests.aggregated_api`: how, and the
  two ``routing`` ways a Service leads to a process on this machine): the APIServices
  ``v1beta1.custom.metrics.k8s.io`` and ``v1beta1.external.metrics.k8s.io`` (``caBundle``: the adapter's CA) point at
  the Service ``prometheus-adapter`` in a namespace of its own (``tritonops-metrics-<random>``), and it waits until
  both are Available.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from tests import aggregated_api as agg
from tests.aggregated_api import MANAGED_BY, LocalServer, Routing
from tests.integration.gateway import ensure_crds
from tests.integration.support import Api, kubectl
from tritonops.devcluster.launcher import spawn

ROOT = Path(__file__).resolve().parents[1]
KEDA_FETCH_SCRIPT = ROOT / "hack" / "fetch-keda-crds.sh"
ADAPTER_BUILD_SCRIPT = ROOT / "hack" / "build-prometheus-adapter.sh"
KEDA_CRDS_ENV = "TRITONOPS_KEDA_CRDS"
ADAPTER_ENV = "TRITONOPS_PROMETHEUS_ADAPTER"
SCALEDOBJECT_CRD = "scaledobjects.keda.sh"

ADAPTER_NAMESPACE_PREFIX = "tritonops-metrics-"
ADAPTER_SERVICE = "prometheus-adapter"
METRICS_API_GROUPS = ("custom.metrics.k8s.io", "external.metrics.k8s.io")
METRICS_API_VERSION = "v1beta1"


# -- KEDA CRDs -----------------------------------------------------------------------------------------------------


def keda_crds_dir() -> Path:
    """The directory of KEDA's CRD files: ``$TRITONOPS_KEDA_CRDS``, else the fetch script's cache."""
    given = os.environ.get(KEDA_CRDS_ENV, "")
    path = Path(given) if given else agg.script_path(KEDA_FETCH_SCRIPT, 300)
    if not (path / "keda.sh_scaledobjects.yaml").is_file():
        raise AssertionError(f"{path} has no keda.sh_scaledobjects.yaml (set {KEDA_CRDS_ENV} to KEDA's "
                             "config/crd/bases)")
    return path


def ensure_keda_crds(cluster: Any, timeout: float = 120.0) -> list[str]:
    """Make the cluster serve KEDA's kinds (see :func:`tests.integration.gateway.ensure_crds`)."""
    return ensure_crds(cluster, SCALEDOBJECT_CRD, keda_crds_dir, timeout)


# -- the adapter process --------------------------------------------------------------------------------------------


def prometheus_adapter_binary() -> Path:
    """``$TRITONOPS_PROMETHEUS_ADAPTER``, else the cached build of ``hack/build-prometheus-adapter.sh``."""
    return agg.process_binary(ADAPTER_ENV, ADAPTER_BUILD_SCRIPT, "prometheus-adapter", 1800)


class MetricsAdapter(LocalServer):
    """A running prometheus-adapter: where it listens, the CA of its certificate, its log."""

    NAME = "prometheus-adapter"


@contextmanager
def running_prometheus_adapter(cluster: Any, prometheus_url: str, rules: dict[str, Any], workdir: Path, *,
                               routing: Routing = "auto", host: str | None = None, relist_interval: str = "2s",
                               max_age: str = "1m", timeout: float = 60.0) -> Iterator[MetricsAdapter]:
    """prometheus-adapter for ``cluster`` querying ``prometheus_url`` with ``rules`` (its ``--config``, as a dict).

    Series are re-listed every ``relist_interval`` (a new metric shows in discovery that much after its first
    scrape). Yields once ``/healthz`` answers; stops the process on exit. Not registered yet: see
    :func:`registered_metrics_apis`, or :func:`metrics_apis` for both.
    """
    how, host = agg.routing_and_host(cluster, routing, host)
    executable = prometheus_adapter_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    namespace = f"{ADAPTER_NAMESPACE_PREFIX}{uuid.uuid4().hex[:6]}"
    cert = agg.service_cert(workdir, ADAPTER_SERVICE, namespace, host)
    config = workdir / "rules.yaml"
    config.write_text(yaml.safe_dump(rules, sort_keys=False))
    port = agg.free_port(host)
    kubeconfig = str(cluster.kubeconfig)
    argv = [str(executable), f"--prometheus-url={prometheus_url}", f"--config={config}",
            f"--metrics-relist-interval={relist_interval}", f"--metrics-max-age={max_age}",
            f"--lister-kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={host}", f"--secure-port={port}", f"--cert-dir={workdir / 'certs'}",
            f"--tls-cert-file={cert.cert}", f"--tls-private-key-file={cert.key}", "--v=2"]
    log = workdir / "prometheus-adapter.log"
    proc = spawn(argv, log, workdir, detach=False)
    adapter = MetricsAdapter(proc, host, port, cert, how, namespace, log)
    try:
        adapter.wait_healthy(timeout)
        yield adapter
    finally:
        agg.stop(proc)


# -- registration as an aggregated API ------------------------------------------------------------------------------


@contextmanager
def registered_metrics_apis(cluster: Any, adapter: MetricsAdapter, timeout: float = 120.0) -> Iterator[None]:
    """Register ``adapter`` as ``v1beta1.custom.metrics.k8s.io`` and ``v1beta1.external.metrics.k8s.io``.

    Creates ``adapter.namespace`` with the Service (and EndpointSlice) of ``adapter.routing``, then the two
    APIServices, and waits until both are Available (the aggregator's own discovery check through the Service).
    An APIService of those names that these helpers did not create (a real metrics adapter) makes the test skip.
    On exit the APIServices and the namespace are deleted.
    """
    api = Api.from_kubeconfig(str(cluster.kubeconfig))
    names = [agg.apiservice_name(g, METRICS_API_VERSION) for g in METRICS_API_GROUPS]
    ours: list[str] = []  # only these are deleted on exit
    try:
        agg.claim_apiservices(api.custom, names)
        ours = names
        api.core.create_namespace({"metadata": {"name": adapter.namespace, "labels": MANAGED_BY}})
        agg.register(api, ADAPTER_SERVICE, adapter.namespace, adapter.routing, adapter.host, adapter.port,
                     [agg.apiservice(group, METRICS_API_VERSION, ADAPTER_SERVICE, adapter.namespace,
                                     adapter.routing, adapter.port, adapter.cert.ca_bundle)
                      for group in METRICS_API_GROUPS])
        agg.wait_available(api.custom, names, adapter, timeout)
        yield
    finally:
        agg.delete_apiservices(api.custom, ours)
        with contextlib.suppress(kubernetes.client.ApiException):
            api.core.delete_namespace(adapter.namespace)
        api.client.close()


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
