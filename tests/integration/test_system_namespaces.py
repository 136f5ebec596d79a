"""A cluster-wide operator writes nothing into system namespaces it was not told to serve.

``clusterWide: true`` grants Deployment, Service and ConfigMap writes in every namespace, kube-system
included; a ModelDeployment there must not turn that into a Deployment in kube-system. The reconcile cycle
runs in-process against the real API server with cluster-admin credentials (the worst case), once as a
cluster-wide operator (nothing listed) and once with kube-public listed explicitly.
"""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest

from tests.integration.support import Api, md_body
from tritonops.controller import ControllerConfig, reconcile_once
from tritonops.kube import Kube

pytestmark = pytest.mark.cluster
NS = "kube-public"


@pytest.fixture
def in_system_namespace(api: Api, cluster: Any) -> Any:
    if not cluster.owned:
        pytest.skip("creates a ModelDeployment in kube-public; only on the suite's own control plane")
    try:
        api.core.read_namespace(NS)
    except kubernetes.client.ApiException:
        api.core.create_namespace({"metadata": {"name": NS}})
    api.create_md(NS, md_body("sys"))
    yield
    api.delete_md(NS, "sys")


def test_a_model_in_a_system_namespace_is_refused_unless_listed(api: Api, cluster: Any,
                                                                in_system_namespace: Any) -> None:
    kube = Kube(Api.from_kubeconfig(str(cluster.kubeconfig)).client)
    assert reconcile_once(kube, (NS, "sys"), ControllerConfig()) is None
    cond = api.condition(NS, "sys", "InvalidSpec") or {}
    assert cond.get("status") == "True" and cond.get("reason") == "SystemNamespace", cond
    assert "listed explicitly" in cond["message"]
    assert api.deployments(NS, "sys") == []
    assert [s.metadata.name for s in api.core.list_namespaced_service(NS).items if s.metadata.name == "sys"] == []
    reconcile_once(kube, (NS, "sys"), ControllerConfig(listed=frozenset({NS})))
    assert len(api.deployments(NS, "sys")) == 1  # listed: served like any namespace
