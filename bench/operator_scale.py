"""The operator at scale: 1,000 ModelDeployments in 20 namespaces on 500 simulated GPU nodes (4 GPUs each).

Method (one run, one cluster, the population grown through the sizes so each size is measured the same way):

- **Cluster.** Our own control plane built from Go modules (etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler) with KWOK GPU nodes: the scheduler places every pod on a simulated node by its
  ``nvidia.com/gpu`` capacity and KWOK marks it Running and Ready, so the operator sees a cluster of this size
  doing what a real one does, without the model servers. A ``$KUBECONFIG`` cluster is refused: the bench
  creates 500 nodes.
- **Operator.** ``tritonops run`` over all namespaces as a process of its own, with its defaults (client-side
  QPS 20, burst 40, 4 workers) except ``--resync-seconds`` (60 s instead of 300 s, so three resyncs fit in the
  run), an admin kubeconfig, logs at ``info``.
- **For each size** (100, 300, 1,000): create the ModelDeployments still missing (1 replica, 1 GPU each,
  round-robin over the namespaces) and time until every child Deployment exists and until every
  ModelDeployment is Ready (pods Running on KWOK; that second time is mostly the controller-manager's, whose
  client is limited to 20 QPS). Then **20 spec changes per second** for 30 s, each toggling one
  ModelDeployment's ``spec.replicas`` between 1 and 2 (ModelDeployments taken in turn): the latency of a
  change is from just before the patch is sent to the moment a watch on our Deployments delivers that
  Deployment with the new ``spec.replicas``. p50 / p99 / max over all changes; a change never seen within
  120 s fails the bench.
- **Resources.** The operator's RSS and CPU from ``/proc`` every second, peak and median per phase. API
  requests per reconcile by verb, from the operator's own counters (``tritonops_api_requests_total``,
  ``tritonops_reconciles_total``) per phase.
- **Idle** (at the largest size): three resync periods with nothing changing: the operator's writes must stay
  0 while it reconciles every object at least three times.
- **Restart**: SIGKILL the operator, change 50 ModelDeployments while it is down, start it again: the time
  until all 50 changes reached their Deployments and every object was reconciled once, with the 429 and 409
  answers the operator got and the 429s the API server gave anyone (``apiserver_request_total``).

``--smoke``: 8 nodes, 2 namespaces, 10 ModelDeployments, 3 s of changes, 5 s resync (checks the bench works).
For a before/after comparison, ``TRITONOPS_BENCH_OPERATOR_SRC`` runs the operator package of another checkout
(its ``operator/`` directory; it must export ``tritonops_reconciles_total``), ``TRITONOPS_BENCH_SIZES`` (e.g.
``100,300``) replaces the sizes, ``TRITONOPS_BENCH_SKIP=idle,restart`` leaves those phases out and
``TRITONOPS_BENCH_OPERATOR_ARGS`` adds arguments to ``tritonops run`` (e.g. ``--qps 20 --burst 40``).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import kubernetes

from bench.common import ROOT, BenchError, emit, parse_args, table, write_result
from bench.scale_support import (
    WRITE_VERBS,
    DeploymentWatch,
    OperatorRun,
    Sampler,
    apiserver_requests,
    by_label,
    paced,
    percentile,
    total,
)
from tritonops.api import GROUP, PLURAL, VERSION
from tritonops.devcluster.binaries import resolve_bin_dir
from tritonops.devcluster.launcher import ControlPlane
from tritonops.devcluster.nodes import NodePool, create_nodes
from tritonops.devcluster.session import create_namespace

VERBS = ("get", "list", "apply", "patch", "create", "delete")
CRD = Path(__file__).resolve().parents[1] / "crds" / "modeldeployments.tritonops.io.yaml"


@dataclass(frozen=True)
class Params:
    nodes: int
    gpus_per_node: int
    namespaces: int
    sizes: tuple[int, ...]
    change_rate: float
    change_seconds: float
    resync_seconds: float
    restart_changes: int


FULL = Params(nodes=500, gpus_per_node=4, namespaces=20, sizes=(100, 300, 1000), change_rate=20.0,
              change_seconds=30.0, resync_seconds=60.0, restart_changes=50)
SMOKE = Params(nodes=8, gpus_per_node=4, namespaces=2, sizes=(10,), change_rate=5.0, change_seconds=3.0,
               resync_seconds=5.0, restart_changes=3)


def md_body(name: str) -> dict[str, Any]:
    """A small valid ModelDeployment: one GPU replica of a TorchScript model (never fetched on KWOK)."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": name.replace("-", "_"), "storageUri": f"s3://models/{name}/model.pt",
                               "format": "torchscript",
                               "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
                               "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [3]}]},
                     "runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_GPU", "count": 1}]}},
                     "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "1Gi"}, "requests": {"cpu": "100m"}},
                     "replicas": 1}}


class Bench:
    """The cluster, the operator and the readings of one run."""

    def __init__(self, params: Params, work: Path) -> None:
        self.p = params
        self.work = work
        self.cp = ControlPlane(work / "cluster", resolve_bin_dir(), name="scale", detach=False)
        self.source = Path(os.environ.get("TRITONOPS_BENCH_OPERATOR_SRC") or ROOT / "operator")
        self.args = os.environ.get("TRITONOPS_BENCH_OPERATOR_ARGS", "").split()
        self.keys: list[tuple[str, str]] = []  # (namespace, name) of every ModelDeployment created
        self.replicas: dict[tuple[str, str], int] = {}
        self.api: Any = None
        self.operator: OperatorRun | None = None
        self.sampler: Sampler | None = None
        self.watch: DeploymentWatch | None = None

    @property
    def custom(self) -> Any:
        return kubernetes.client.CustomObjectsApi(self.api)

    def start(self) -> dict[str, float]:
        t0 = time.monotonic()
        self.cp.start()
        started = time.monotonic() - t0
        create_nodes(self.cp.kubeconfig, NodePool(cpu_nodes=0, gpu_nodes=self.p.nodes,
                                                  gpus_per_node=self.p.gpus_per_node, prefix="scale"), timeout=600)
        nodes = time.monotonic() - t0 - started
        self.api = kubernetes.config.new_client_from_config(config_file=str(self.cp.kubeconfig))
        kubernetes.utils.create_from_yaml(self.api, str(CRD))
        _wait("the CRD", self._crd_established, 60)
        for i in range(self.p.namespaces):
            create_namespace(self.cp.kubeconfig, f"scale-{i:02d}")
        self.operator = OperatorRun(self.cp.kubeconfig, self.work / "operator.log", self.p.resync_seconds,
                                    source=self.source, args=self.args)
        self.operator.start()
        self.sampler = Sampler(self.operator)
        self.sampler.start()
        self.watch = DeploymentWatch(self.api)
        self.watch.start()
        return {"controlPlaneSeconds": started, "nodesSeconds": nodes}

    def _crd_established(self) -> bool:
        ext = kubernetes.client.ApiextensionsV1Api(self.api)
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    def close(self) -> None:
        for part in (self.watch, self.sampler, self.operator):
            if part is not None:
                part.stop()
        if self.api is not None:
            self.api.close()
        self.cp.stop()

    # --- phases -----------------------------------------------------------------------------------------

    def phase(self, name: str) -> dict[str, float]:
        """Mark the start of a phase; returns the counters to diff at its end."""
        assert self.sampler and self.operator
        self.sampler.phase = name
        return self.counters()

    def counters(self) -> dict[str, float]:
        assert self.operator
        samples = self.operator.metrics()
        out = {f"verb:{k}": v for k, v in by_label(samples, "tritonops_api_requests_total", "verb").items()}
        out |= {f"code:{k}": v for k, v in by_label(samples, "tritonops_api_requests_total", "code").items()}
        out["reconciles"] = total(samples, "tritonops_reconciles_total")
        out["writes"] = total(samples, "tritonops_api_requests_total", lambda lb: lb.get("verb") in WRITE_VERBS)
        return out

    def grow(self, size: int) -> dict[str, Any]:
        """Create ModelDeployments up to ``size``; time until their Deployments exist and until all are Ready."""
        new = [(f"scale-{i % self.p.namespaces:02d}", f"m{i:04d}") for i in range(len(self.keys), size)]
        before = self.phase(f"create-{size}")
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda key: self.custom.create_namespaced_custom_object(
                GROUP, VERSION, key[0], PLURAL, md_body(key[1])), new))
        created = time.monotonic() - t0
        self.keys += new
        self.replicas.update(dict.fromkeys(new, 1))
        assert self.watch
        _wait("every new Deployment", lambda: all(k in self.watch.seen for k in new), 900)  # type: ignore[union-attr]
        children = time.monotonic() - t0
        _wait("every ModelDeployment Ready", lambda: self.not_ready() == 0, 1200)
        return {"new": len(new), "createSeconds": created, "childrenSeconds": children,
                "readySeconds": time.monotonic() - t0, "requests": diff(before, self.counters())}

    def not_ready(self) -> int:
        items = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        return sum(1 for md in items if not ready(md)) + len(self.keys) - len(items)

    def changes(self, size: int) -> dict[str, Any]:
        """``change_rate`` spec changes per second for ``change_seconds``; latency to the child Deployment.

        A ModelDeployment is changed again only once its previous change reached the Deployment (two changes
        in flight on one object would be coalesced by any level-based controller, and the first never seen):
        the next ModelDeployment in turn is taken instead; ``waitedForFree`` counts the ticks that found every
        one still in flight (then the rate is not kept, and ``achievedRate`` says so).
        """
        count = int(self.p.change_rate * self.p.change_seconds)
        turn = itertools.cycle(self.keys)
        sent: list[tuple[tuple[str, str], int, float]] = []
        pending: dict[tuple[str, str], tuple[int, float]] = {}
        lock = threading.Lock()
        stalled = 0
        before = self.phase(f"changes-{size}")

        def free() -> tuple[str, str] | None:
            """The next ModelDeployment in turn with no change in flight, marked as having one now."""
            assert self.watch
            for _ in range(len(self.keys)):
                key = next(turn)
                with lock:
                    if key in pending and self.watch.first(key, *pending[key]) is None:
                        continue
                    self.replicas[key] = 3 - self.replicas[key]  # 1 <-> 2
                    pending[key] = (self.replicas[key], time.monotonic())
                    return key
            return None

        def change(key: tuple[str, str]) -> None:
            at = time.monotonic()  # before sending: the change can reach its Deployment before the answer
            with lock:
                replicas = self.replicas[key]
                pending[key] = (replicas, at)
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, key[0], PLURAL, key[1],
                                                       {"spec": {"replicas": replicas}})
            sent.append((key, replicas, at))

        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:  # the API server's answers slow down under load: keep the pace
            for _ in paced(self.p.change_rate, count):
                while (key := free()) is None:
                    stalled += 1
                    time.sleep(0.05)
                pool.submit(change, key).add_done_callback(_raise)
        achieved = count / (time.monotonic() - t0)
        latencies = self.latencies(sent, 120)
        result = {"changes": count, "achievedRate": achieved, "waitedForFree": stalled,
                  "p50Seconds": percentile(latencies, 50), "p99Seconds": percentile(latencies, 99),
                  "maxSeconds": max(latencies), "requests": diff(before, self.counters())}
        _wait("every ModelDeployment Ready again", lambda: self.not_ready() == 0, 600)
        return result

    def latencies(self, sent: Sequence[tuple[tuple[str, str], int, float]], timeout: float) -> list[float]:
        """For each change, seconds until the watch saw its Deployment with the new replicas."""
        assert self.watch
        watch = self.watch

        def seen() -> list[float | None]:
            return [(t - at) if (t := watch.first(key, r, at)) is not None else None for key, r, at in sent]

        try:
            _wait("every change in its Deployment", lambda: None not in seen(), timeout)
        except BenchError as err:
            missing = [(key, r, round(at, 2), watch.seen.get(key, [])[-3:])
                       for (key, r, at), x in zip(sent, seen(), strict=True) if x is None]
            raise BenchError(f"{err}: {len(missing)} of {len(sent)} never seen, e.g. {missing[:5]}") from None
        return [x for x in seen() if x is not None]

    def idle(self) -> dict[str, Any]:
        """Three resync periods with no change: writes must stay 0 while every object is reconciled thrice."""
        self.phase("settle")
        _wait("the operator to settle", lambda: self._quiet(10), 300)
        before = self.phase("idle")
        t0 = time.monotonic()
        need = before["reconciles"] + 3 * len(self.keys)
        _wait("three resyncs", lambda: time.monotonic() - t0 >= 3 * self.p.resync_seconds
              and self.counters()["reconciles"] >= need, 3 * self.p.resync_seconds + 600)
        return {"seconds": time.monotonic() - t0, "requests": diff(before, self.counters())}

    def _quiet(self, seconds: float) -> bool:
        """No write by the operator for ``seconds``."""
        start = self.counters()["writes"]
        time.sleep(seconds)
        return self.counters()["writes"] == start

    def restart(self) -> dict[str, Any]:
        """Crash the operator, change some specs while it is down, start it: time until all converged."""
        assert self.operator and self.watch
        server_before = apiserver_requests(self.api)
        self.operator.kill()
        sent = []
        for key in self.keys[: self.p.restart_changes]:
            replicas = 3 - self.replicas[key]
            self.replicas[key] = replicas
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, key[0], PLURAL, key[1],
                                                       {"spec": {"replicas": replicas}})
            sent.append((key, replicas, time.monotonic()))
        self.phase("restart")
        t0 = time.monotonic()
        self.operator.start()
        changed = [lat - (t0 - at) for lat, (_, _, at) in zip(self.latencies(sent, 600), sent, strict=True)]
        _wait("every object reconciled once", lambda: self.counters()["reconciles"] >= len(self.keys), 600)
        converged = time.monotonic() - t0
        _wait("every ModelDeployment Ready", lambda: self.not_ready() == 0, 600)
        after = self.counters()
        server = apiserver_requests(self.api)
        return {"convergedSeconds": converged, "changesSeenSeconds": max(changed) if changed else None,
                "operator429": after.get("code:429", 0.0), "operator409": after.get("code:409", 0.0),
                "apiserver429": server.get("429", 0.0) - server_before.get("429", 0.0),
                "requests": {k: v for k, v in after.items() if k.startswith("verb:") or k == "reconciles"}}


def ready(md: dict[str, Any]) -> bool:
    status = md.get("status") or {}
    cond = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
    return bool(cond and cond["status"] == "True" and status.get("observedGeneration") == md["metadata"]["generation"])


def diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counter increases, plus requests per reconcile by verb."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    reconciles = delta.get("reconciles", 0.0)
    per = {f"perReconcile:{k[5:]}": v / reconciles for k, v in delta.items() if k.startswith("verb:") and reconciles}
    return {k: v for k, v in delta.items() if v} | per


def _wait(what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _raise(future: Any) -> None:
    if future.exception() is not None:
        raise BenchError(f"a spec change failed: {future.exception()}")


def run(params: Params, work: Path) -> dict[str, Any]:
    bench = Bench(params, work)
    skip = set(os.environ.get("TRITONOPS_BENCH_SKIP", "").split(","))
    try:
        results: dict[str, Any] = {"cluster": bench.start(), "sizes": {}, "operatorSource": str(bench.source),
                                   "operatorArgs": bench.args}
        for size in params.sizes:
            grown = bench.grow(size)
            emit(f"{size} ModelDeployments: children in {grown['childrenSeconds']:.1f}s, "
                 f"Ready in {grown['readySeconds']:.1f}s")
            changed = bench.changes(size)
            emit(f"{size}: change -> Deployment p50 {changed['p50Seconds']:.3f}s p99 {changed['p99Seconds']:.3f}s")
            results["sizes"][str(size)] = {"grow": grown, "changes": changed}
        if "idle" not in skip:
            results["idle"] = bench.idle()
        if "restart" not in skip:
            results["restart"] = bench.restart()
        assert bench.sampler
        results["resources"] = {ph: bench.sampler.summary({ph}) for ph in dict.fromkeys(
            s[1] for s in bench.sampler.samples)} | {"all": bench.sampler.summary()}
        return results
    finally:
        bench.close()


def report(params: Params, results: dict[str, Any]) -> None:
    rows = []
    for size, r in results["sizes"].items():
        res = results["resources"].get(f"changes-{size}", {})
        rows.append([size, r["grow"]["childrenSeconds"], r["grow"]["readySeconds"], r["changes"]["p50Seconds"],
                     r["changes"]["p99Seconds"], r["changes"]["maxSeconds"], r["changes"]["achievedRate"],
                     res.get("rssPeakMiB"), res.get("cpuMeanCores")])
    emit(table("Operator at scale (changes: spec.replicas toggled, latency to the child Deployment)",
               ["MDs", "children s", "Ready s", "p50 s", "p99 s", "max s", "changes/s", "RSS MiB", "CPU cores"], rows))
    per = [[size] + [r["changes"]["requests"].get(f"perReconcile:{v}", 0.0) for v in VERBS]
           + [r["changes"]["requests"].get("reconciles", 0.0)] for size, r in results["sizes"].items()]
    emit(table("API requests per reconcile during the changes, by verb", ["MDs", *VERBS, "reconciles"], per))
    res = results["resources"]["all"]
    rows = [["RSS peak / median MiB", f"{res['rssPeakMiB']:.0f} / {res['rssMedianMiB']:.0f}"],
            ["CPU peak cores", res["cpuPeakCores"]]]
    if idle := results.get("idle"):
        rows += [["writes over 3 resyncs", idle["requests"].get("writes", 0.0)],
                 ["reconciles over 3 resyncs", idle["requests"].get("reconciles", 0.0)]]
    if restart := results.get("restart"):
        rows += [["restart -> converged s", restart["convergedSeconds"]],
                 ["429 (operator / API server)", f"{restart['operator429']:.0f} / {restart['apiserver429']:.0f}"],
                 ["409 (operator)", restart["operator409"]]]
    emit(table("Idle, restart, resources", ["what", "value"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    run_ = parse_args("operator_scale", __doc__.splitlines()[0], argv)
    params = SMOKE if run_.smoke else FULL
    if sizes := os.environ.get("TRITONOPS_BENCH_SIZES"):
        params = replace(params, sizes=tuple(int(x) for x in sizes.split(",")))
    with tempfile.TemporaryDirectory(prefix="tritonops-scale-") as tmp:
        try:
            results = run(params, Path(tmp))
        finally:  # the operator's log (its last 4 MB) next to the result, kept when the bench fails too
            keep = run_.out.with_suffix(".operator.log")
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.write_bytes((Path(tmp) / "operator.log").read_bytes()[-4_000_000:])
    report(params, results)
    write_result(run_, vars(params), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
