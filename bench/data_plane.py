"""What the data plane costs: the same model and load on tritonserver direct, in a pod, through the Service, and
through the Service with drift capture at 1 % and 10 %.

Method:

- **Same model, same settings.** The example model (``examples/model/make_model.py``, exported to ONNX: the
  real node's Triton image has onnxruntime, not torch) goes to an S3 store (versitygw) with its reference
  profile. Three ModelDeployments of ``examples/cpu-classifier.yaml`` (Python-backend wrapper, one CPU
  instance, dynamic batching, one replica; :func:`bench.realnode_setup.real_node_md`) run on the real node
  under the operator: without drift, and with ``spec.drift`` at ``samplePercent`` 1 and 10 (the operator adds
  Triton's trace flags and the drift-monitor sidecar, which reads the trace files as in production). The
  *direct* server is the same tritonserver 2.51 (pytriton 0.7 wheel, the image's too) started on the host
  (``localtriton``) on a model repository made by running the plain pod's own fetch here (its environment, the
  operator's rendered config.pbtxt) with the pod's Triton flags, ports and paths aside.
- **Configurations.** ``direct``: the host server on loopback. ``pod``: the plain pod's IP (the bridge; a
  container's network namespace, veth and cgroup). ``service``: the plain Deployment's ClusterIP (kube-proxy's
  NAT on top). ``service+1%`` and ``service+10%``: the ClusterIPs of the drift ModelDeployments. Ratios are to
  ``direct`` and to ``service`` (capture's own cost, everything else equal).
- **Load** as in :mod:`bench.capture_overhead` (its request bodies, model name and timeouts): ``clients``
  closed-loop HTTP clients, one keep-alive connection each, KServe v2 JSON ``[8, 4]`` FP32 with a unique
  ``id``; every configuration is warmed up first. **Interleaved rounds**: round r runs every configuration
  once, order rotated by r, only one under load at a time; the pooled throughput and percentiles are
  reported with the per-round paired ratios (median, min, max), the robust number on a shared machine.
- **Server CPU per request**: for ``direct`` tritonserver and its stub (``/proc``); for the pods their cgroup's
  usage, so the drift-monitor sidecar counts (and the pause process). Clients, server, kubelet, control plane
  and operator share this machine's CPUs; the pods are in the ``kubepods`` cgroup (CPU shares from their
  requests), the direct server beside the clients.
- **Checks**: every request answered 200 (else a server failure, below); every pod ran on the real node; each
  drift pod's Triton samples at its rate with tensors (``/v2/trace/setting``); its sidecar read records (from
  two files' worth sampled: a smoke run at 1 % samples fewer), and, unless its Triton restarted, records +
  dropped files x ``LOG_FREQUENCY`` lie between ``floor(requests / rate)`` less two files' worth (one Triton
  still holds, one the sidecar has not read yet) and ``floor(requests / rate)``.
- **Server failures** (tritonserver 2.51 may crash under traced load: see :mod:`bench.capture_overhead`) are
  printed, counted per configuration and kept in the JSON: the direct server is replaced by a new one, a pod's
  container is restarted by the kubelet (its restart count, last exit and log tail are recorded); the round is
  run again after a warm-up, at most ``MAX_FAILURES`` times per configuration.

``main`` starts its own control plane and real node (:func:`bench.realnode_setup.own_env`); :func:`measure`
takes a :class:`~bench.realnode_setup.RealNodeEnv`, so the e2e tier runs the smoke size on its session's node.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import realnode_setup as rn
from bench.capture_overhead import (
    MAX_FAILURES,
    MODEL,
    Load,
    ServerFailure,
    Sizes,
    client_at,
    example_module,
    process_cpu_s,
    request_bodies,
)
from bench.common import BenchError, Run, emit, parse_args, ratio, table, write_result
from tests.integration.support import wait_until
from tritonops.builders.monitor import LOG_FREQUENCY, sample_rate
from tritonops_runtime import contract as c
from tritonops_runtime.localtriton import TritonServer, find_tritonserver, start_tritonserver

NAME = "data_plane"
DEFAULT = Sizes(clients=4, rounds=12, round_s=4.0, warmup_s=3.0)
SMOKE = Sizes(clients=2, rounds=1, round_s=0.5, warmup_s=0.5)
DEPLOYMENTS = {"dp-plain": 0.0, "dp-drift1": 1.0, "dp-drift10": 10.0}  # name: samplePercent (0: no spec.drift)


@dataclass
class Target:
    """One configuration: where its requests go, how to read its server's CPU, how to bring it back."""

    label: str
    percent: float
    host: str
    port: int
    cpu_s: Callable[[], float | None]
    revive: Callable[[Target], dict[str, Any]]  # after failed requests: details, and the server serving again
    monitor: str | None = None  # the drift-monitor's status URL
    sent: int = 0  # requests answered since this server (process) started: Triton's sampling counts them
    latencies: list[float] = field(default_factory=list)
    round_rps: list[float] = field(default_factory=list)
    round_requests: list[int] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    round_cpu_s: list[float] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    capture: dict[str, int] | None = None


# --- load --------------------------------------------------------------------------------------------------

def client(target: Target, bodies: list[bytes], tag: str, deadline: float, load: Load) -> None:
    """One closed-loop client (capture_overhead's) of ``target``: a keep-alive connection until ``deadline``."""
    client_at(target.host, target.port, bodies, tag, deadline, load)


def drive(target: Target, bodies: list[bytes], clients: int, seconds: float, tag: str) -> Load:
    """``clients`` concurrent clients against ``target`` for ``seconds``; ServerFailure when a request failed."""
    load = Load()
    deadline = time.perf_counter() + seconds
    threads = [threading.Thread(target=client, args=(target, bodies, f"{target.label}-{tag}-{i}", deadline, load))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    target.sent += len(load.latencies)
    if load.failed:
        raise ServerFailure("failed requests", f"{len(load.failed)} failed, first: {load.failed[0]}", "")
    return load


def recover(target: Target, failure: ServerFailure, tag: str, bodies: list[bytes], sizes: Sizes) -> None:
    """Record the failure, bring the server back, warm it up (again if it fails again)."""
    while True:
        details = {"round": tag, "error": failure.args[1], "requestsBefore": target.sent, **target.revive(target)}
        target.failures.append(details)
        target.sent = 0
        emit(f"!! {target.label}, round {tag}: {details['kind']}: {details['error']} (server back; round again)")
        if len(target.failures) > MAX_FAILURES:
            raise BenchError(f"{target.label}: the server failed {len(target.failures)} times: {details}")
        try:
            drive(target, bodies, sizes.clients, sizes.warmup_s, f"warmup{len(target.failures)}")
            return
        except ServerFailure as again:
            failure, tag = again, f"warmup{len(target.failures)}"


def measure_round(target: Target, bodies: list[bytes], sizes: Sizes, tag: str) -> None:
    while True:
        cpu0, t0 = target.cpu_s(), time.perf_counter()
        try:
            load = drive(target, bodies, sizes.clients, sizes.round_s, tag)
            break
        except ServerFailure as failure:
            recover(target, failure, tag, bodies, sizes)
    elapsed, cpu1 = time.perf_counter() - t0, target.cpu_s()
    target.latencies += load.latencies
    target.round_requests.append(load.ok)
    target.round_seconds.append(elapsed)
    target.round_rps.append(load.ok / elapsed)
    if cpu0 is not None and cpu1 is not None:
        target.round_cpu_s.append(cpu1 - cpu0)


def run_rounds(targets: list[Target], bodies: list[bytes], sizes: Sizes) -> None:
    """Warm every configuration up, then ``rounds`` rounds, each configuration once per round, order rotated."""
    for target in targets:
        try:
            drive(target, bodies, sizes.clients, sizes.warmup_s, "warmup")
        except ServerFailure as failure:
            recover(target, failure, "warmup", bodies, sizes)
    for r in range(sizes.rounds):
        for target in targets[r % len(targets):] + targets[:r % len(targets)]:
            measure_round(target, bodies, sizes, f"r{r}")


# --- the configurations ------------------------------------------------------------------------------------

def direct_target(repo: Path, args: list[str], work: Path) -> tuple[Target, list[TritonServer]]:
    """The host tritonserver; the list holds the current server (replaced after a failure)."""
    servers = [start_tritonserver(repo, work / "triton-0", args, timeout=180)]

    def revive(target: Target) -> dict[str, Any]:
        old = servers[-1]
        crashed = old.process.poll() is not None or "Signal (" in old.log_text()
        old.stop(timeout=5)
        with contextlib.suppress(ProcessLookupError):  # its Python-backend stub outlives it (and ignores SIGTERM)
            os.killpg(old.process.pid, signal.SIGKILL)  # launched with start_new_session: pgid = pid
        details = {"kind": "crash" if crashed else "failed requests", "exitStatus": old.process.returncode,
                   "logTail": "\n".join(old.log_text().splitlines()[-20:])}
        servers.append(start_tritonserver(repo, work / f"triton-{len(servers)}", args, timeout=180))
        target.port = servers[-1].http_port
        return details

    target = Target("direct", 0.0, "127.0.0.1", servers[0].http_port,
                    lambda: process_cpu_s(servers[-1].process.pid), revive)
    return target, servers


def pod_target(bed: rn.RealNodeEnv, namespace: str, md: str, label: str, percent: float, via_service: bool) -> Target:
    """A ModelDeployment's pod, by its IP or through its Service's ClusterIP."""
    pod = rn.serving_pod(bed.api, namespace, md)
    service = bed.api.core.read_namespaced_service(md, namespace).spec.cluster_ip
    host = service if via_service else pod.status.pod_ip

    def serving() -> Any:
        with contextlib.suppress(BenchError):  # (a replaced pod: two for a moment)
            now = rn.serving_pod(bed.api, namespace, md)
            return now if rn.container_status(now).ready and rn.triton_ready(host, c.HTTP_PORT) else None
        return None

    restarts = [rn.container_status(pod).restart_count]  # as last seen

    def revive(target: Target) -> dict[str, Any]:
        now = wait_until(f"{md} serving again", serving, 180)
        status = rn.container_status(now)
        before, restarts[0] = restarts[0], status.restart_count
        last = status.last_state.terminated if status.last_state else None
        log = bed.api.core.read_namespaced_pod_log(now.metadata.name, namespace, container="triton",
                                                   previous=bool(last), tail_lines=20)
        return {"kind": "crash" if status.restart_count > before else "failed requests",
                "restarts": status.restart_count, "exitStatus": last.exit_code if last else None,
                "reason": last.reason if last else None, "logTail": log}

    wait_until(f"{label} answers", lambda: rn.triton_ready(host, c.HTTP_PORT), 60)
    monitor = f"http://{pod.status.pod_ip}:{c.DRIFT_PORT}{c.DRIFT_STATUS_PATH}" if percent else None
    return Target(label, percent, host, c.HTTP_PORT, rn.pod_cpu_s(pod.metadata.uid), revive, monitor)


@contextlib.contextmanager
def deployed(bed: rn.RealNodeEnv, tmp: Path) -> Iterator[tuple[list[Target], list[str]]]:
    """The example model in the store, the operator and the three ModelDeployments Ready, the direct server
    up: every configuration, in report order, and the pod's Triton flags the direct server got too."""
    summary = example_module().make(tmp / "model")
    if not summary["onnx"]:
        raise BenchError(f"the example model has no ONNX export: {summary['onnxError']}")
    uri = bed.put("bench-data-plane/model.onnx", Path(summary["onnx"]))
    profile = bed.put("bench-data-plane/reference_profile.json", Path(summary["referenceProfile"]))
    digest = "sha256:" + hashlib.sha256(Path(summary["onnx"]).read_bytes()).hexdigest()
    model = {"name": MODEL, "storageUri": uri, "format": "onnx", "digest": digest}
    with rn.bench_namespace(bed, "bench-dp") as ns, rn.operator(bed, ns, tmp / "operator.log"):
        for name, percent in DEPLOYMENTS.items():
            drift = {"enabled": True, "samplePercent": percent,
                     "reference": {"storageUri": profile, "digest": summary["profileDigest"]}} if percent else None
            bed.api.create_md(ns, rn.real_node_md(name, model, drift))
        t0 = time.monotonic()
        rn.wait_converged(bed.api, ns, list(DEPLOYMENTS))
        emit(f"3 ModelDeployments Ready in {time.monotonic() - t0:.0f}s")
        plain = rn.serving_pod(bed.api, ns, "dp-plain")
        repo = rn.fetch_like_pod(bed.api, plain, bed.s3, tmp / "direct")
        flags = rn.host_triton_args(plain)
        direct, servers = direct_target(repo, flags, tmp / "direct")
        try:
            targets = [direct, pod_target(bed, ns, "dp-plain", "pod", 0.0, False),
                       pod_target(bed, ns, "dp-plain", "service", 0.0, True),
                       pod_target(bed, ns, "dp-drift1", "service+1%", 1.0, True),
                       pod_target(bed, ns, "dp-drift10", "service+10%", 10.0, True)]
            nodes = {rn.serving_pod(bed.api, ns, md).spec.node_name for md in DEPLOYMENTS}
            if nodes != {bed.cluster.real_node.name if bed.cluster.real_node else "?"}:
                raise BenchError(f"pods ran on {nodes}, not on the real node")
            yield targets, flags
        finally:
            for server in servers:
                server.stop(timeout=10)


# --- checks and report -------------------------------------------------------------------------------------

def sidecar_seen(target: Target, low: int, timeout: float) -> tuple[int, dict[str, int]]:
    """The sidecar's capture counters (``/v1/status``) once it saw ``low`` records (dropped files included),
    or after ``timeout``; with the records seen."""
    assert target.monitor
    deadline = time.monotonic() + timeout
    while True:
        counters: dict[str, int] = rn.get_json(target.monitor)["capture"]
        dropped = counters["files_dropped_overload"] + counters["files_dropped_oversize"]
        seen = counters["records"] + LOG_FREQUENCY * dropped
        if seen >= low or time.monotonic() > deadline:
            return seen, counters
        time.sleep(1.0)


def check_capture(targets: list[Target], timeout: float = 15.0) -> None:
    """BenchError unless each drift pod's Triton samples at its rate and its sidecar read what Triton wrote
    (see the module docstring; fewer than two files' worth sampled, as in a smoke run, proves nothing)."""
    for target in (t for t in targets if t.monitor):
        rate = sample_rate(target.percent)
        setting = rn.get_json(f"http://{target.host}:{target.port}/v2/trace/setting")
        if setting.get("trace_rate") != str(rate) or "TENSORS" not in setting.get("trace_level", []):
            raise BenchError(f"{target.label}: Triton's trace setting is {setting}, not rate {rate} with TENSORS")
        expected = target.sent // rate
        low = (expected // LOG_FREQUENCY - 2) * LOG_FREQUENCY
        seen, counters = sidecar_seen(target, low, timeout)
        target.capture = {**counters, "traceRate": rate, "expectedAtMost": expected, "expectedAtLeast": max(low, 0),
                          "countChecked": not target.failures}  # a restarted Triton counts from 0 again
        if (low > 0 and counters["records"] == 0) or (not target.failures and not low <= seen <= expected):
            raise BenchError(f"{target.label}: the sidecar saw {seen} records (dropped files included) for "
                             f"{target.sent} requests at rate {rate}: {low}..{expected} expected: {counters}")


def stats(target: Target) -> dict[str, Any]:
    lat_ms = np.asarray(target.latencies) * 1000
    requests, seconds = sum(target.round_requests), sum(target.round_seconds)
    cpu = 1000 * sum(target.round_cpu_s) / requests if len(target.round_cpu_s) == len(target.round_rps) else None
    return {"percent": target.percent, "address": f"{target.host}:{target.port}", "requests": requests,
            "seconds": round(seconds, 3), "throughputRps": requests / seconds,
            "p50Ms": float(np.percentile(lat_ms, 50)), "p99Ms": float(np.percentile(lat_ms, 99)),
            "meanMs": float(lat_ms.mean()), "roundRps": [round(x, 2) for x in target.round_rps],
            "serverCpuMsPerRequest": cpu, "capture": target.capture, "serverFailures": len(target.failures),
            "serverFailureDetails": target.failures}


def ratios(s: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``s`` / ``b``: pooled, and throughput paired per round."""
    paired = [x / y for x, y in zip(s["roundRps"], b["roundRps"], strict=True)]
    return {"throughput": ratio(s["throughputRps"], b["throughputRps"]), "p50": ratio(s["p50Ms"], b["p50Ms"]),
            "p99": ratio(s["p99Ms"], b["p99Ms"]),
            "serverCpuPerRequest": ratio(s["serverCpuMsPerRequest"], b["serverCpuMsPerRequest"]),
            "throughputPerRound": {"median": statistics.median(paired), "min": min(paired), "max": max(paired)}}


def results_of(targets: list[Target]) -> dict[str, dict[str, Any]]:
    out = {t.label: stats(t) for t in targets}
    for s in out.values():
        s["ratios"] = {"vsDirect": ratios(s, out["direct"]), "vsService": ratios(s, out["service"])}
    return out


def spread(ratios: dict[str, Any]) -> str:
    per = ratios["throughputPerRound"]
    return f"{per['median']:.3f} ({per['min']:.2f}..{per['max']:.2f})"


def report(results: dict[str, dict[str, Any]], sizes: Sizes) -> None:
    headers = ["config", "req/s", "xdirect", "xdirect rounds (min..max)", "xservice", "p50 ms", "xdirect", "xservice",
               "p99 ms", "xdirect", "xservice", "CPU ms/req", "xdirect"]
    rows = []
    for label, s in results.items():
        d, v = s["ratios"]["vsDirect"], s["ratios"]["vsService"]
        rows.append([label, s["throughputRps"], d["throughput"], spread(d), v["throughput"], s["p50Ms"], d["p50"],
                     v["p50"], s["p99Ms"], d["p99"], v["p99"], s["serverCpuMsPerRequest"], d["serverCpuPerRequest"]])
    emit(table(f"data plane: {sizes.clients} clients, [8,4] FP32 over HTTP/JSON, {sizes.rounds} interleaved rounds x "
               f"{sizes.round_s:g} s per configuration", headers, rows))
    headers = ["config", "xservice rounds (min..max)", "sampled records", "files dropped", "server failures"]
    rows = []
    for label, s in results.items():
        cap = s["capture"] or {}
        rows.append([label, spread(s["ratios"]["vsService"]), cap.get("records"),
                     None if not cap else cap["files_dropped_overload"] + cap["files_dropped_oversize"],
                     s["serverFailures"]])
    emit(table("capture and failures (CPU: the pod's cgroup, sidecar included; direct: tritonserver + stub)",
               headers, rows))
    if failed := {label: s["serverFailures"] for label, s in results.items() if s["serverFailures"]}:
        emit(f"!! tritonserver FAILED under this load: {failed}; those rounds were run again (serverFailureDetails "
             "in the JSON: error, exit status, log)")


def measure(run: Run, bed: rn.RealNodeEnv) -> Path:
    """Deploy, measure, check, report on ``bed``; the JSON result's path."""
    sizes = SMOKE if run.smoke else DEFAULT
    with tempfile.TemporaryDirectory(prefix="bench-data-plane-") as tmp, deployed(bed, Path(tmp)) as (targets, flags):
        bodies = request_bodies(example_module().synthetic_data(2000)[0])
        run_rounds(targets, bodies, sizes)
        check_capture(targets)
        results = results_of(targets)
    report(results, sizes)
    params = {**sizes.__dict__, "deployments": DEPLOYMENTS, "logFrequency": LOG_FREQUENCY,
              "configs": list(results), "directServerFlags": flags,
              "model": "examples/model exported to ONNX via the PythonWrapper, examples/cpu-classifier.yaml's settings",
              "node": "the local control plane's real node (containerd, kubelet, kube-proxy) on this machine"}
    return write_result(run, params, {"configs": results, "baseline": "direct", "serviceBaseline": "service"})


def main(argv: Sequence[str] | None = None) -> int:
    run = parse_args(NAME, __doc__.splitlines()[0] if __doc__ else NAME, argv)
    if find_tritonserver() is None:
        raise BenchError("tritonserver not found: pip install nvidia-pytriton (or set TRITONOPS_TRITONSERVER)")
    with rn.own_env() as bed:
        path = measure(run, bed)
    emit(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
