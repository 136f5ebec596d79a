"""The objects the operator reads every cycle, kept from watch streams (informer-style).

A reconcile cycle reads its ModelDeployment and the children it owns (Deployments, Services, ConfigMaps,
Pods, Jobs). Asking the API server for them each cycle made every cycle cost four to six requests, so 1,000
objects could not even be resynced within the client's 20 requests per second, and a spec change waited
behind the requests of the pod and status events it caused (``bench/operator_scale.py`` measured it). Watches
deliver every version of these objects anyway: the cache keeps the latest one, and a cycle reads from it and
makes no request unless it has something to write.

- **Fed before any cycle runs.** ModelDeployments come from kopf's watch (each version is put before its
  cycle is queued); children from :mod:`tritonops.informer`, whose first listing replaces the scope, and the
  workers wait for those listings.
- **Newer wins.** A watch event and the answer to our own write can arrive in either order; an object's
  ``resourceVersion`` decides (it is etcd's revision; opaque by contract, so a value that is not a number is
  simply taken as newer). Answers to our writes only refresh objects already known, so a late answer can
  never bring back an object whose deletion the watch has delivered.
- **Small.** ``managedFields`` (often half an object's size) is dropped: nothing in a cycle reads it.
- **Thread-safe.** Watches feed it from their threads and the event loop; the workers read it from theirs.
  Readers get the stored dicts: cycles treat observed objects as read-only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _newer(new: dict[str, Any], old: dict[str, Any]) -> bool:
    a, b = new["metadata"].get("resourceVersion", ""), old["metadata"].get("resourceVersion", "")
    if a.isdigit() and b.isdigit():
        return int(a) >= int(b)
    return True


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def parse_selector(selector: str) -> dict[str, str]:
    """``a=b,c=d`` (equality terms only, which is all the operator uses) as a dict."""
    terms = [t.strip() for t in selector.split(",") if t.strip()]
    out = {}
    for term in terms:
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!"):
            raise ValueError(f"unsupported selector term {term!r}: only key=value")
        out[key.strip()] = value.strip().lstrip("=")
    return out


class Cache:
    """The latest version of each watched object, by kind and (namespace, name)."""

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, dict[str, dict[str, Any]]]] = {kind: {} for kind in kinds}  # ns, name

    def holds(self, kind: str) -> bool:
        """Whether ``kind`` is fed by a watch (otherwise read it from the API server)."""
        return kind in self.kinds

    def put(self, kind: str, obj: dict[str, Any]) -> None:
        """A version from the watch (the initial listing included)."""
        meta = obj["metadata"]
        with self._lock:
            objects = self._objects[kind].setdefault(meta.get("namespace", ""), {})
            old = objects.get(meta["name"])
            if old is None or _newer(obj, old):
                objects[meta["name"]] = _slim(obj)

    def refresh(self, kind: str, obj: dict[str, Any]) -> None:
        """The answer to our own write: taken only for an object already known, and only when newer."""
        meta = obj.get("metadata") or {}
        with self._lock:
            objects = self._objects.get(kind, {}).get(meta.get("namespace", ""), {})
            old = objects.get(meta.get("name", ""))
            if old is not None and _newer(obj, old):
                objects[meta["name"]] = _slim(obj)

    def replace(self, kind: str, namespace: str | None, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A fresh listing of ``kind`` in ``namespace`` (None: every namespace) replaces what was held there;
        returns the objects that changed, appeared or disappeared (so their owners can be looked at)."""
        fresh: dict[str, dict[str, dict[str, Any]]] = {}
        for obj in objects:
            meta = obj["metadata"]
            fresh.setdefault(meta.get("namespace", ""), {})[meta["name"]] = _slim(obj)
        with self._lock:
            held = self._objects[kind]
            spaces = list(held) if namespace is None else [namespace]
            old = {(ns, name): o for ns in spaces for name, o in held.get(ns, {}).items()}
            for ns in spaces:
                held.pop(ns, None)
            for ns, by_name in fresh.items():
                held[ns] = by_name
        new = {(ns, name): o for ns, by_name in fresh.items() for name, o in by_name.items()}
        changed = [o for key, o in new.items() if key not in old or
                   old[key]["metadata"].get("resourceVersion") != o["metadata"].get("resourceVersion")]
        return changed + [o for key, o in old.items() if key not in new]

    def remove(self, kind: str, namespace: str, name: str) -> None:
        """The watch delivered the object's deletion."""
        with self._lock:
            self._objects[kind].get(namespace, {}).pop(name, None)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects[kind].get(namespace, {}).get(name)

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` in ``namespace`` whose labels match an equality selector."""
        wanted = parse_selector(selector)
        with self._lock:
            return [o for o in self._objects[kind].get(namespace, {}).values()
                    if _matches(o["metadata"].get("labels") or {}, wanted)]

    def size(self) -> dict[str, int]:
        """Objects held, by kind."""
        with self._lock:
            return {kind: sum(map(len, spaces.values())) for kind, spaces in self._objects.items()}
