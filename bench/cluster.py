"""What a bench needs from Kubernetes: a private control plane with KWOK nodes, the CRD, operators, watches.

API (for any bench that measures the operator on the real API server):

- ``with bench_cluster(pool, gateway_api=False) as bc:`` starts etcd, kube-apiserver, controller-manager,
  scheduler and kwok (``tritonops.devcluster``; cached binaries, about 30 s here), creates ``pool``'s nodes,
  installs the ModelDeployment CRD (and the Gateway API CRDs when asked) and stops everything on exit.
  It refuses to run when ``$KUBECONFIG`` is set (:class:`~bench.common.BenchError`): a bench's numbers
  must come from a known cluster, and it never writes to someone else's. ``TRITONOPS_BENCH_KEEP=1`` keeps
  the state directory (component and operator logs) and prints where it is.
- ``bc.api`` (:class:`tests.integration.support.Api`), ``bc.kubeconfig``, ``bc.start_seconds``,
  ``bc.namespace(prefix)`` (a fresh namespace), ``bc.operator(namespace, resync_seconds=300)`` (``tritonops
  run`` as a subprocess watching that namespace with the admin kubeconfig, stopped on exit; its log is
  ``bc.workdir / f"operator-{namespace}.log"``), ``bc.log_tails()``.
- :class:`Watcher`: watches of some resources of one namespace in daemon threads, each event timestamped on
  receipt (``time.monotonic()`` and ``time.time()``). :meth:`Watcher.expect` registers a predicate on the
  current objects *before* the action to time; :meth:`Expectation.wait` returns the receipt time of the
  event that first made it true (predicates are evaluated in the watch thread, after every event, so no
  later event can hide the first one). ``watcher.until(pred)`` just waits (no polling either way).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

from bench.common import BenchError
from tests.integration.gateway import ensure_gateway_api_crds
from tests.integration.support import Api, OperatorProcess, install_crd
from tritonops.devcluster.nodes import NodePool
from tritonops.devcluster.session import ClusterHandle, create_namespace, open_cluster

log = logging.getLogger(__name__)
ENV_KEEP = "TRITONOPS_BENCH_KEEP"
DEFAULT_POOL = NodePool(cpu_nodes=2, gpu_nodes=0)
Resource = tuple[str, str, str]  # (group, version, plural); a custom-objects path serves apps/v1 too
MODELDEPLOYMENTS: Resource = ("tritonops.io", "v1alpha1", "modeldeployments")
DEPLOYMENTS: Resource = ("apps", "v1", "deployments")
HTTPROUTES: Resource = ("gateway.networking.k8s.io", "v1", "httproutes")
State = Mapping[tuple[str, str], dict[str, Any]]  # (plural, name) -> the object as last seen
Predicate = Callable[[State], bool]


@dataclass
class BenchCluster:
    """A started control plane; see the module docstring."""

    handle: ClusterHandle
    api: Api
    workdir: Path
    operators: list[OperatorProcess] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.handle.kubeconfig

    @property
    def start_seconds(self) -> float:
        return self.handle.start_seconds

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{os.urandom(3).hex()}"
        create_namespace(self.kubeconfig, name)
        return name

    def operator(self, namespace: str, resync_seconds: float = 300.0, args: Sequence[str] = ()) -> OperatorProcess:
        """``tritonops run --namespace NAMESPACE`` (admin credentials: RBAC costs nothing per request)."""
        proc = OperatorProcess(str(self.kubeconfig), namespace, self.workdir / f"operator-{namespace}.log",
                               resync_seconds=resync_seconds, extra_args=list(args))
        self.operators.append(proc)
        return proc.start()

    def log_tails(self, lines: int = 40) -> str:
        ops = "".join(f"\n== {p.log_path.name}\n" + "\n".join(p.log_path.read_text().splitlines()[-lines:])
                      for p in self.operators if p.log_path.exists())
        return self.handle.log_tails(lines) + ops


@contextlib.contextmanager
def bench_cluster(pool: NodePool = DEFAULT_POOL, *, gateway_api: bool = False) -> Iterator[BenchCluster]:
    """A private control plane with ``pool``'s KWOK nodes and the CRDs; everything stopped on exit."""
    if os.environ.get("KUBECONFIG"):
        raise BenchError("KUBECONFIG is set: this bench starts its own control plane with KWOK nodes and never "
                         "uses another cluster; unset KUBECONFIG to run it")
    keep = os.environ.get(ENV_KEEP) == "1"
    workdir = Path(tempfile.mkdtemp(prefix="tritonops-bench-"))
    handle = open_cluster(workdir / "cluster", pool, env={})
    bc = BenchCluster(handle, Api.from_kubeconfig(str(handle.kubeconfig)), workdir)
    try:
        install_crd(handle)
        if gateway_api:
            ensure_gateway_api_crds(handle)
        yield bc
    except BaseException:
        print(f"--- logs (last lines)\n{bc.log_tails()}", flush=True)
        raise
    finally:
        for proc in bc.operators:
            proc.stop()
        bc.api.client.close()
        handle.close()
        if keep:
            print(f"bench state and logs kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Seen:
    """When an event was received: monotonic (for intervals) and wall clock (against status times)."""

    mono: float
    wall: float


class Expectation:
    """A predicate registered with a :class:`Watcher`; :meth:`wait` gives when it first held."""

    def __init__(self, what: str, predicate: Predicate) -> None:
        self.what, self.predicate = what, predicate
        self.seen: Seen | None = None
        self.done = threading.Event()

    def wait(self, timeout: float) -> Seen:
        if not self.done.wait(timeout):
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {self.what}")
        assert self.seen is not None
        return self.seen


class Watcher:
    """Watches ``resources`` in ``namespace`` (one thread each); keeps the objects and their event times."""

    def __init__(self, kubeconfig: Path, namespace: str, resources: Sequence[Resource]) -> None:
        self.kubeconfig, self.namespace, self.resources = kubeconfig, namespace, list(resources)
        self.state: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[tuple[Seen, str, dict[str, Any]]] = []  # (when, event type, object) of every event
        self._lock = threading.Lock()
        self._pending: list[Expectation] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(r,), daemon=True, name=f"watch-{r[2]}")
                         for r in self.resources]

    def __enter__(self) -> Watcher:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def expect(self, what: str, predicate: Predicate) -> Expectation:
        """Start watching for ``predicate``; already true now: it holds from now."""
        exp = Expectation(what, predicate)
        with self._lock:
            if predicate(self.state):
                exp.seen = Seen(time.monotonic(), time.time())
                exp.done.set()
            else:
                self._pending.append(exp)
        return exp

    def until(self, what: str, predicate: Predicate, timeout: float = 120.0) -> Seen:
        return self.expect(what, predicate).wait(timeout)

    def _apply(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        seen = Seen(time.monotonic(), time.time())
        key = (plural, obj["metadata"]["name"])
        with self._lock:
            if kind == "DELETED":
                self.state.pop(key, None)
            else:
                self.state[key] = obj
            self.history.append((seen, kind, obj))
            for exp in [e for e in self._pending if e.predicate(self.state)]:
                exp.seen = seen
                exp.done.set()
                self._pending.remove(exp)

    def _run(self, resource: Resource) -> None:
        client = Api.from_kubeconfig(str(self.kubeconfig)).client
        custom = kubernetes.client.CustomObjectsApi(client)
        rv: str | None = None
        while not self._stop.is_set():
            try:
                rv = self._stream(custom, resource, rv)
            except kubernetes.client.ApiException as err:
                rv = None if err.status == 410 else rv  # too old: list again
                self._stop.wait(0.2)
            except Exception as err:  # the control plane going away at the end, or a blip
                if not self._stop.is_set():
                    log.warning("watch of %s failed (%s); watching again", resource[2], err)
                self._stop.wait(0.2)
        client.close()

    def _stream(self, custom: Any, resource: Resource, rv: str | None) -> str | None:
        """One watch request (30 s at most) from ``rv`` (None: list first); returns the last version seen."""
        kwargs: dict[str, Any] = {"timeout_seconds": 30, "deserialize": False}
        if rv:
            kwargs["resource_version"] = rv
        watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        group, version, plural = resource
        for event in watch.stream(  # type: ignore[no-untyped-call]
                custom.list_namespaced_custom_object, group, version, self.namespace, plural,
                **kwargs):
            obj = event["object"]
            rv = obj["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(plural, event["type"], obj)
            if self._stop.is_set():
                break
        return rv
