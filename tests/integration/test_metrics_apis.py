"""The custom and external metrics APIs work end to end through the real API server: the HPA controller's path.

A tiny HTTP server exposes a known metric, a real Prometheus (Debian's) scrapes it, prometheus-adapter (built from
its Go module) serves it as ``external.metrics.k8s.io`` and ``custom.metrics.k8s.io``, registered as aggregated
APIs, and ``kubectl get --raw`` reads the value through kube-apiserver (see tests/autoscaling_support.py for how the
aggregator reaches the adapter on this machine). Also: KEDA's CRDs install and validate a ScaledObject.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.autoscaling_support import (
    METRICS_API_GROUPS,
    METRICS_API_VERSION,
    SCALEDOBJECT_CRD,
    ensure_keda_crds,
    get_raw,
    metrics_apis,
)
from tests.integration.support import kubectl, wait_until
from tests.prometheus import running_prometheus

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

METRIC = "tritonops_test_queue_us"
POD = "p"
POD_LABELS = {"app": "queue-test"}
SUM_QUERY = "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"


class MetricsTarget:
    """An HTTP server on a loopback port answering ``/metrics`` with ``self.text`` (changeable while it runs)."""

    def __init__(self, text: str) -> None:
        self.text = text
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = target.text.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:  # one line per scrape is noise
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> MetricsTarget:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def exposition(namespace: str, value: int) -> str:
    return (f"# HELP {METRIC} Test queue time.\n# TYPE {METRIC} gauge\n"
            f'{METRIC}{{namespace="{namespace}",pod="{POD}"}} {value}\n')


def adapter_rules() -> dict[str, Any]:
    """One custom (per-pod) and one external rule for the test metric."""
    return {
        "rules": [{"seriesQuery": f'{METRIC}{{namespace!="",pod!=""}}',
                   "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
                   "metricsQuery": SUM_QUERY}],
        "externalRules": [{"seriesQuery": f'{METRIC}{{namespace!=""}}',
                           "resources": {"overrides": {"namespace": {"resource": "namespace"}}},
                           "metricsQuery": SUM_QUERY}],
    }


def prometheus_config(target: str) -> dict[str, Any]:
    # honor_labels: the exposition's namespace/pod labels are the ones the adapter maps to objects
    return {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "queue", "scrape_interval": "1s", "honor_labels": True,
                                "static_configs": [{"targets": [target]}]}]}


def prometheus_has(url: str, query: str) -> bool:
    q = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as resp:
        return b'"result":[]' not in resp.read()


def values(doc: dict[str, Any] | None) -> list[str]:
    return [item["value"] for item in (doc or {}).get("items", [])]


@pytest.fixture
def queue_pod(cluster: Any, namespace: str) -> Iterator[str]:
    """A pod named ``p`` (never scheduled anywhere that matters): what a Pods metric's label selector lists."""
    manifest = f"""
apiVersion: v1
kind: Pod
metadata: {{name: {POD}, namespace: {namespace}, labels: {POD_LABELS}}}
spec:
  securityContext: {{runAsNonRoot: true, runAsUser: 10001, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: c
    image: registry.invalid/none:1
    securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"""
    kubectl(cluster, "apply", "-f", "-", stdin=manifest)
    yield POD


def test_external_and_custom_metrics_served_through_the_api_server(
        cluster: Any, namespace: str, queue_pod: str, tmp_path: Path) -> None:
    with (MetricsTarget(exposition(namespace, 123)) as target,
          running_prometheus(prometheus_config(target.address), tmp_path / "prometheus") as prom):
        wait_until("Prometheus scraped the test metric", lambda: prometheus_has(prom, METRIC), 60)
        with metrics_apis(cluster, prom, adapter_rules(), tmp_path / "adapter") as adapter:
            for group in METRICS_API_GROUPS:  # discovery of both groups answers through the aggregator
                assert get_raw(cluster, f"/apis/{group}/{METRICS_API_VERSION}") is not None, adapter.log_tail()

            external = f"/apis/external.metrics.k8s.io/{METRICS_API_VERSION}/namespaces/{namespace}/{METRIC}"
            doc = wait_until("the external metric through the API server",
                             lambda: get_raw(cluster, external) if values(get_raw(cluster, external)) else None, 60)
            assert values(doc) == ["123"], doc
            assert doc["items"][0]["metricName"] == METRIC

            by_name = f"/apis/custom.metrics.k8s.io/{METRICS_API_VERSION}/namespaces/{namespace}/pods/{POD}/{METRIC}"
            doc = wait_until("the custom pod metric (by name) through the API server",
                             lambda: get_raw(cluster, by_name) if values(get_raw(cluster, by_name)) else None, 60)
            assert values(doc) == ["123"], doc
            assert doc["items"][0]["describedObject"]["name"] == POD

            # The HPA controller's query for a Pods metric: every pod matching the target's selector.
            selector = urllib.parse.quote(",".join(f"{k}={v}" for k, v in POD_LABELS.items()))
            by_selector = (f"/apis/custom.metrics.k8s.io/{METRICS_API_VERSION}/namespaces/{namespace}/pods/*/"
                           f"{METRIC}?labelSelector={selector}")
            assert values(get_raw(cluster, by_selector)) == ["123"], adapter.log_tail()

            # A new value reaches the API within a few scrape intervals (the adapter queries Prometheus live).
            target.text = exposition(namespace, 456)
            wait_until("the external metric to follow the new value",
                       lambda: values(get_raw(cluster, external)) == ["456"], 60)

            # kube-controller-manager's HPA controller reads it through the same path and acts on it.
            kubectl(cluster, "apply", "-f", "-", stdin=deployment_and_hpa(namespace))
            hpa = wait_until("the HPA controller to read the external metric",
                             lambda: hpa_status(cluster, namespace), 90)
            assert hpa["currentMetrics"][0]["external"]["current"]["value"] == "456", hpa
            assert hpa["desiredReplicas"] == 3, hpa  # ceil(1 x 456 / 100) = 5, capped at maxReplicas


def deployment_and_hpa(namespace: str) -> str:
    """A one-replica Deployment (pods stay Pending or run on KWOK: no matter) and an HPA on the external metric."""
    pod_spec = {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c", "image": "registry.invalid/none:1",
                                "securityContext": {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}}]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "clf", "namespace": namespace},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "clf"}},
                           "template": {"metadata": {"labels": {"app": "clf"}}, "spec": pod_spec}}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "clf", "namespace": namespace},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "clf"},
                    "minReplicas": 1, "maxReplicas": 3,
                    "metrics": [{"type": "External", "external": {
                        "metric": {"name": METRIC}, "target": {"type": "Value", "value": "100"}}}]}}
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [deployment, hpa]})


def hpa_status(cluster: Any, namespace: str) -> dict[str, Any] | None:
    """The HPA's status once the controller has recorded a current value of its metric."""
    out = kubectl(cluster, "get", "hpa", "clf", "-n", namespace, "-o", "json", check=False)
    if out.returncode != 0:
        return None
    status: dict[str, Any] = json.loads(out.stdout).get("status", {})
    current = status.get("currentMetrics") or [{}]
    return status if current[0].get("external", {}).get("current", {}).get("value") == "456" else None


def scaled_object(namespace: str, **spec: Any) -> str:
    body = {"scaleTargetRef": {"name": "clf"}, "minReplicaCount": 1, "maxReplicaCount": 4,
            "triggers": [{"type": "prometheus", "metadata": {
                "serverAddress": "http://prometheus.monitoring:9090", "threshold": "100",
                "query": f'sum({METRIC}{{namespace="{namespace}"}})'}}], **spec}
    return json.dumps({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                       "metadata": {"name": "clf", "namespace": namespace}, "spec": body})


def test_keda_crds_install_and_validate_scaled_objects(cluster: Any, namespace: str) -> None:
    ensure_keda_crds(cluster)
    assert ensure_keda_crds(cluster) == []  # a second call finds them
    kubectl(cluster, "get", f"crd/{SCALEDOBJECT_CRD}")
    kubectl(cluster, "create", "--dry-run=server", "-f", "-", stdin=scaled_object(namespace))
    bad = kubectl(cluster, "create", "--dry-run=server", "-f", "-", check=False,
                  stdin=scaled_object(namespace, scaleTargetRef={}))  # the schema requires scaleTargetRef.name
    assert bad.returncode != 0 and "scaleTargetRef.name" in bad.stderr, bad.stderr
