"""The only module that talks to the Kubernetes API: typed-enough REST over the official client.

Requests are rate-limited (token bucket, QPS/burst), counted by verb for the metrics endpoint and the
zero-writes tests, and children are written with server-side apply under one field manager.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes
from prometheus_client import Counter

from tritonops import FIELD_MANAGER
from tritonops.api import GROUP, PLURAL, VERSION

REQUESTS = Counter("tritonops_api_requests_total", "Requests the operator made to the Kubernetes API",
                   ["verb", "resource", "code"])

# kind -> (API prefix, plural); the kinds the operator reads or writes.
RESOURCES = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "ModelDeployment": (f"/apis/{GROUP}/{VERSION}", PLURAL),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "Node": ("/api/v1", "nodes"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "ScaledObject": ("/apis/keda.sh/v1alpha1", "scaledobjects"),
    "Job": ("/apis/batch/v1", "jobs"),
}


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.message = message


@dataclass
class _Bucket:
    qps: float
    burst: int
    tokens: float = 0.0
    stamp: float = 0.0

    def take(self, lock: threading.Lock) -> None:
        while True:
            with lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.qps)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.qps
            time.sleep(wait)  # client-side throttling inside a worker thread, never in the event loop


def path(kind: str, namespace: str, name: str = "", sub: str = "") -> str:
    """The REST path of a namespaced object or collection."""
    prefix, plural = RESOURCES[kind]
    p = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    if name:
        p += f"/{quote(name)}"
    if sub:
        p += f"/{sub}"
    return p


class Kube:
    """A small synchronous client; the controller calls it from worker threads."""

    def __init__(self, api_client: Any, qps: float = 50.0, burst: int = 100) -> None:
        self._client = api_client
        self._bucket = _Bucket(qps, burst, tokens=float(burst), stamp=time.monotonic())
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, qps: float = 50.0, burst: int = 100) -> Kube:
        """In-cluster config, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(kubernetes.client.ApiClient(), qps, burst)

    def request(self, verb: str, method: str, url: str, *, resource: str, query: dict[str, str] | None = None,
                body: Any = None, content_type: str = "application/json") -> Any:
        """One API call; returns the decoded JSON body."""
        self._bucket.take(self._lock)
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, full_url, headers, body, _ = self._client.param_serialize(
            method, url, query_params=list((query or {}).items()), header_params=headers, body=body,
            auth_settings=["BearerToken"])
        resp = self._client.call_api(method, full_url, header_params=headers, body=body,
                                     _request_timeout=30)
        data = resp.read()
        REQUESTS.labels(verb, resource, str(resp.status)).inc()
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, resp.reason or "", data.decode(errors="replace") if data else "")
        return json.loads(data) if data else None

    def collection(self, kind: str, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        """One page of a collection (a namespace's, or the cluster's with ``namespace`` None), as returned."""
        prefix, plural = RESOURCES[kind]
        url = path(kind, namespace) if namespace else f"{prefix}/{plural}"
        result: dict[str, Any] = self.request("list", "GET", url, resource=kind, query=query)
        return result

    def watch(self, kind: str, namespace: str | None, query: dict[str, str], timeout: float) -> Any:
        """Open a watch of a collection; returns the streaming response (JSON events, one per line), which
        the caller reads and closes. ``timeout``: seconds without data before the read fails."""
        self._bucket.take(self._lock)
        prefix, plural = RESOURCES[kind]
        url = path(kind, namespace) if namespace else f"{prefix}/{plural}"
        method, full_url, headers, body, _ = self._client.param_serialize(
            "GET", url, query_params=list({**query, "watch": "1"}.items()),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        resp = self._client.call_api(method, full_url, header_params=headers, body=body, _request_timeout=(10, timeout))
        REQUESTS.labels("watch", kind, str(resp.status)).inc()
        if resp.status != 200:
            data = resp.read()
            raise ApiError(resp.status, resp.reason or "", data.decode(errors="replace") if data else "")
        return resp.response

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            result: dict[str, Any] = self.request("get", "GET", path(kind, namespace, name), resource=kind)
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        return result

    def list_cluster(self, kind: str, query: dict[str, str] | None = None) -> list[dict[str, Any]] | None:
        """Every object of ``kind`` in the cluster (all namespaces); None when the operator may not list them
        (RBAC)."""
        prefix, plural = RESOURCES[kind]
        try:
            result = self.request("list", "GET", f"{prefix}/{plural}", resource=kind, query=query)
        except ApiError as err:
            if err.status == 403:
                return None
            raise
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` matching a label selector."""
        result = self.request("list", "GET", path(kind, namespace), resource=kind,
                              query={"labelSelector": selector})
        items: list[dict[str, Any]] = result.get("items", [])
        for item in items:  # list items come without apiVersion/kind; make them whole objects
            item.setdefault("apiVersion", result.get("apiVersion", ""))
            item.setdefault("kind", kind)
        return items

    def apply(self, obj: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply with our field manager, taking ownership of the fields we set."""
        meta = obj["metadata"]
        url = path(obj["kind"], meta["namespace"], meta["name"])
        result: dict[str, Any] = self.request(
            "apply", "PATCH", url, resource=obj["kind"], body=json.dumps(obj),
            query={"fieldManager": manager, "force": "true"}, content_type="application/apply-patch+yaml")
        return result

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete (background propagation); a missing object is not an error."""
        try:
            self.request("delete", "DELETE", path(kind, namespace, name), resource=kind,
                         body={"propagationPolicy": "Background"})
        except ApiError as err:
            if err.status != 404:
                raise

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Replace the fields of ``status`` we own (merge patch on the status subresource); the object after."""
        result: dict[str, Any] = self.request("patch", "PATCH", path(kind, namespace, name, "status"), resource=kind,
                                              body={"status": status}, content_type="application/merge-patch+json")
        return result

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> None:
        """Create an object (used for Events)."""
        self.request("create", "POST", path(kind, namespace), resource=kind, body=body)
