"""List-then-watch of the operator's children into :mod:`tritonops.cache` (client-go's informer, reduced).

One thread per kind (and per watched namespace, or one for the whole cluster) lists the objects carrying our
``managed-by`` label, replaces what the cache held for that scope with the listing, then watches from the
listing's ``resourceVersion``: every ADDED/MODIFIED version is put, every DELETED one removed, bookmarks
move the version on. A watch that ends (the server's timeout) is opened again from the last version; one
the server refuses as too old (410 Gone) or any failure leads to a new listing after a capped backoff, and
a listing replaces the scope, so nothing deleted meanwhile stays behind.

Every object that changed calls ``notify(namespace, owner)`` with the ModelDeployment it belongs to (our
``modeldeployment`` label, or ``retraining-of`` for a retraining Job's pod): level-based, the owner's next
cycle reads whatever is current.

Why not kopf's watches: kopf processes each object of each watched kind through its own machinery (a worker
task, body views, loggers, and, for cache readiness, index toggles whose every change wakes every waiting
worker), which at 1,000 ModelDeployments and their ~5,000 children took over 100 s of CPU at start-up and
380 MiB (``bench/operator_scale.py``). kopf still watches the ModelDeployments themselves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tritonops.cache import Cache
from tritonops.kube import ApiError, Kube

log = logging.getLogger(__name__)
Notify = Callable[[str, str], None]  # (namespace, ModelDeployment name)
WATCH_SECONDS = 290  # the server ends a watch after this; it is opened again from the last version
PAGE = "500"


class Informer:
    """Keeps ``cache``'s objects of ``kind`` in ``namespace`` (None: all) that match ``selector`` current."""

    def __init__(self, kube: Kube, cache: Cache, kind: str, namespace: str | None, selector: str,
                 owner_labels: tuple[str, ...], notify: Notify) -> None:
        self.kube, self.cache, self.kind, self.namespace = kube, cache, kind, namespace
        self.selector, self.owner_labels, self.notify = selector, owner_labels, notify
        self.synced = threading.Event()  # set once the first listing is in the cache
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer-{kind}-{namespace or 'all'}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                version = self._list()
                self.synced.set()
                delay = 1.0
                while not self._stop.is_set() and version:
                    version = self._watch(version)
            except Exception as err:  # the API server away, a refused request: list again after a while
                log.warning("watch of %s in %s failed (listing again in %.0fs): %s", self.kind,
                            self.namespace or "all namespaces", delay, err)
                if isinstance(err, ApiError) and err.status == 403:
                    self.synced.set()  # a permission missing for one kind (its cache stays empty) must not
                    # stop the cycles of every model: what needs that kind says why in its status
                self._stop.wait(delay)
                delay = min(30.0, delay * 2)

    def _list(self) -> str:
        """List the scope (in pages) into the cache; the listing's resourceVersion."""
        items: list[dict[str, Any]] = []
        query = {"labelSelector": self.selector, "limit": PAGE}
        while True:
            page = self.kube.collection(self.kind, self.namespace, query)
            items += page.get("items", [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
            query = {**query, "continue": token}
        for item in items:  # list items come without apiVersion/kind
            item.setdefault("apiVersion", page.get("apiVersion", ""))
            item.setdefault("kind", self.kind)
        for obj in self.cache.replace(self.kind, self.namespace, items):
            self._tell(obj)
        version: str = (page.get("metadata") or {}).get("resourceVersion", "")
        return version

    def _watch(self, version: str) -> str:
        """Follow the watch from ``version``; the version to go on from, "" to list again."""
        query = {"labelSelector": self.selector, "resourceVersion": version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(WATCH_SECONDS)}
        resp = self.kube.watch(self.kind, self.namespace, query, timeout=WATCH_SECONDS + 30)
        try:
            for event in _events(resp):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return ""  # too old: list again
                    raise ApiError(int(obj.get("code") or 500), obj.get("reason", ""), json.dumps(obj))
                version = (obj.get("metadata") or {}).get("resourceVersion", version)
                if kind in ("ADDED", "MODIFIED"):
                    self.cache.put(self.kind, obj)
                elif kind == "DELETED":
                    self.cache.remove(self.kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                if kind != "BOOKMARK":
                    self._tell(obj)
                if self._stop.is_set():
                    break
        finally:
            resp.close()
        return version

    def _tell(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        owner = next((labels[k] for k in self.owner_labels if labels.get(k)), None)
        if owner and meta.get("namespace"):
            self.notify(meta["namespace"], owner)


def _events(resp: Any) -> Iterator[dict[str, Any]]:
    """The JSON events of a watch response (one per line; lines may span chunks)."""
    pending = b""
    for chunk in resp.stream(65536, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)


class Informers:
    """The informers of every child kind, over the watched namespaces (none named: the whole cluster)."""

    def __init__(self, kube: Kube, cache: Cache, kinds: tuple[str, ...], namespaces: frozenset[str],
                 selector: str, owner_labels: tuple[str, ...], notify: Notify) -> None:
        scopes: list[str | None] = [ns for ns in sorted(namespaces)] if namespaces else [None]
        self.informers = [Informer(kube, cache, kind, ns, selector, owner_labels, notify)
                          for kind in kinds for ns in scopes]

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until every informer has its first listing in the cache."""
        return all(i.synced.wait(timeout) for i in self.informers)
