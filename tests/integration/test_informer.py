"""The informer against the real API server: list, then watch; labelled objects only; owners notified.

A ConfigMap informer on the test's namespace (our managed-by selector) must hold exactly the labelled
ConfigMaps: those listed before it started, then each creation, update and deletion as the watch delivers
it, and tell the owner named by the ModelDeployment label. An unlabelled ConfigMap never enters.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.integration.support import Api, wait_until
from tritonops.builders.meta import LABEL_MANAGED_BY, LABEL_MD, MANAGED_BY
from tritonops.cache import Cache
from tritonops.informer import Informers
from tritonops.kube import Kube

pytestmark = pytest.mark.cluster
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def config_map(name: str, owner: str | None, data: str = "1") -> dict[str, Any]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_MD: owner} if owner else {}
    return {"metadata": {"name": name, "labels": labels}, "data": {"v": data}}


def test_the_cache_follows_labelled_objects_and_owners_are_told(api: Api, cluster: Any, namespace: str) -> None:
    api.core.create_namespaced_config_map(namespace, config_map("before", "m1"))
    kube, cache = Kube(Api.from_kubeconfig(str(cluster.kubeconfig)).client), Cache(frozenset({"ConfigMap"}))
    told: list[tuple[str, str]] = []
    lock = threading.Lock()

    def notify(ns: str, owner: str) -> None:
        with lock:
            told.append((ns, owner))

    informers = Informers(kube, cache, ("ConfigMap",), frozenset({namespace}), SELECTOR, (LABEL_MD,), notify)
    informers.start()
    try:
        assert informers.wait_synced(30)
        assert cache.get("ConfigMap", namespace, "before") is not None  # from the listing
        assert (namespace, "m1") in told

        def data(name: str) -> str | None:
            obj = cache.get("ConfigMap", namespace, name)
            return obj["data"]["v"] if obj else None

        api.core.create_namespaced_config_map(namespace, config_map("after", "m2"))
        api.core.create_namespaced_config_map(namespace, config_map("foreign", None))
        wait_until("the created ConfigMap", lambda: data("after") == "1", timeout=30)
        api.core.patch_namespaced_config_map("after", namespace, {"data": {"v": "2"}})
        wait_until("its new version", lambda: data("after") == "2", timeout=30)
        api.core.delete_namespaced_config_map("before", namespace)
        wait_until("the deletion", lambda: cache.get("ConfigMap", namespace, "before") is None, timeout=30)
        assert cache.get("ConfigMap", namespace, "foreign") is None
        assert {o["metadata"]["name"] for o in cache.list("ConfigMap", namespace, SELECTOR)} == {"after"}
        assert {owner for _, owner in told} == {"m1", "m2"}
        assert "managedFields" not in cache.get("ConfigMap", namespace, "after")["metadata"]  # type: ignore[index]
    finally:
        informers.stop()
