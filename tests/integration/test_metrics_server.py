"""metrics-server (built from its Go module) registers as the resource metrics API on the real API server.

Without a real node (this tier has only KWOK nodes, which metrics-server does not scrape) the API is Available
and serves empty lists: the aggregator reaches metrics-server, metrics-server authenticates and authorizes the
forwarded request with its ServiceAccount's RBAC, and everything it created is gone afterwards. Real node and pod
metrics are checked in tests/e2e/test_metrics_server.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.autoscaling_support import get_raw
from tests.integration.support import Api
from tests.metrics_server import APISERVICE, GROUP, VERSION, running_metrics_server

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def exists(read: Any, *args: str) -> bool:
    try:
        read(*args)
    except kubernetes.client.ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def test_resource_metrics_api_registers_serves_and_goes_away(cluster: Any, api: Api, namespace: str,
                                                             tmp_path: Path) -> None:
    rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api.client)
    with running_metrics_server(cluster, tmp_path / "metrics-server") as server:
        discovery = get_raw(cluster, f"/apis/{GROUP}/{VERSION}") or {}
        assert sorted(r["name"] for r in discovery.get("resources", [])) == ["nodes", "pods"], discovery
        nodes = api.custom.list_cluster_custom_object(GROUP, VERSION, "nodes")
        assert nodes["kind"] == "NodeMetricsList" and nodes["items"] == [], server.log_tail()
        pods = api.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "pods")
        assert pods["kind"] == "PodMetricsList" and pods["items"] == [], server.log_tail()
        assert exists(rbac.read_cluster_role, server.namespace)
        ns = server.namespace
    # Unregistered, stopped, RBAC deleted, namespace on its way out.
    assert not exists(api.custom.get_cluster_custom_object, "apiregistration.k8s.io", "v1", "apiservices", APISERVICE)
    assert server.proc.poll() is not None
    assert not exists(rbac.read_cluster_role, ns)
    assert not exists(rbac.read_cluster_role_binding, f"{ns}:system:auth-delegator")
    assert not exists(rbac.read_namespaced_role_binding, f"{ns}-auth-reader", "kube-system")
    phase = api.core.read_namespace(ns).status.phase if exists(api.core.read_namespace, ns) else "gone"
    assert phase in ("Terminating", "gone"), phase
