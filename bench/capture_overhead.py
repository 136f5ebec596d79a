"""What drift capture costs the served model: throughput and latency at 0 %, 1 %, 10 % and 100 % sampling.

Method:

- **Same model, same load.** The example model (``examples/model/make_model.py``: trained here, TorchScript)
  is fetched into one model repository with the Triton settings of ``examples/cpu-classifier.yaml`` (the
  Python-backend wrapper, one CPU instance, dynamic batching) and served by four real ``tritonserver``\\ s
  started side by side: one without any tracing flag (0 %) and three with
  ``drift.capture.trace_args(prefix, p, LOG_FREQUENCY)`` for p = 1, 10, 100 (``LOG_FREQUENCY`` is the
  operator's, so files rotate as in a pod). The load is a closed loop of ``clients`` concurrent HTTP
  clients (one keep-alive connection each) sending KServe v2 JSON requests ``[8, 4]`` FP32 with a unique
  ``id`` (the sampled traces carry it), for ``round_s`` seconds per round.
- **Interleaved rounds.** Round r runs every configuration once, in the order rotated by r (ABCD, BCDA, ...),
  so slow drift of the shared machine (other jobs, thermal) hits all configurations alike; only one server
  has load at a time. Throughput and latency percentiles are over all rounds; the per-round paired ratio
  (configuration / 0 % of the same round) is reported too (median, min, max): it is the robust number.
- **The sidecar's work is included.** Each traced server has the real :class:`TraceCollector` reading and
  deleting its files every second, as the drift-monitor sidecar does, in a thread of this process (same
  machine, same CPUs). It polls only during its own configuration's rounds, and one last poll right after
  the round (the files Triton completed by then) is counted in the round's time: throughput is requests /
  (load time + that drain). Its CPU time per sampled request is reported separately (it shares the GIL with
  the load generator's threads, but at well under 0.1 ms per sampled request that costs the clients little).
- **Server CPU per request**: utime + stime of tritonserver and its Python-backend stub (from ``/proc``) over
  each round, divided by the requests served: less noisy than throughput on a shared machine.
- **Checks** (a bench that measures nothing fails): every request answered 200; each traced server wrote
  records, all carrying the ids sent; after shutdown (Triton flushes what it still holds) the records read
  plus ``LOG_FREQUENCY`` per file the collector dropped (at most 32 files wait: at 100 % and some 2000
  req/s, most are dropped, by design) equal ``floor(requests / rate)`` exactly. Bytes of trace per sampled
  request = bytes read / records.
- **Server failures.** tritonserver 2.51 (the pytriton 0.7 wheel) was seen to die (SIGSEGV in
  ``TRITONBACKEND_RequestInput`` under the Python backend's execute or in tritonserver itself, once SIGILL)
  after some 10^4 to 10^5 requests from 4 concurrent clients with tracing on (10 % and 100 %; with level
  TIMESTAMPS alone too), and, alive, to leave a request unanswered (client timeout) or to answer a valid one
  400 "unknown request input name INPUT0"; never at 0 % (370k requests in one run) nor with one client.
  A failure is not hidden: it is printed, counted per configuration and kept in the JSON (error, exit
  status, log tail); the server is replaced by a new, warmed-up one and the round run again (at most
  ``MAX_FAILURES`` per configuration, then the bench fails). The exact record count is then not checked
  for that configuration (a dead server loses the traces it held).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from bench.common import ROOT, BenchError, emit, parse_args, ratio, table, write_result
from tritonops.builders.monitor import LOG_FREQUENCY
from tritonops_runtime import fetch
from tritonops_runtime.drift.capture import TraceCollector, sample_rate, trace_args
from tritonops_runtime.localtriton import TritonServer, find_tritonserver, start_tritonserver
from tritonops_runtime.pbtxt import render_config

NAME = "capture_overhead"
MODEL = "clf"
PERCENTS = (0.0, 1.0, 10.0, 100.0)
MAX_FAILURES = 5  # server failures per configuration; then the bench gives up
CLIENT_TIMEOUT_S = 10.0  # a request unanswered for this long is a server failure (they take ms)
POLL_S = 1.0  # the sidecar's poll interval (monitor.Config.poll_seconds, at most 1 s)
ROWS = 8  # rows per request: [8, 4] FP32
Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Sizes:
    clients: int
    rounds: int
    round_s: float
    warmup_s: float


DEFAULT = Sizes(clients=4, rounds=12, round_s=2.0, warmup_s=2.0)
SMOKE = Sizes(clients=2, rounds=1, round_s=0.5, warmup_s=0.3)


@dataclass
class Config:
    """One capture setting, its server and collector, and what was measured against it."""

    percent: float
    server: TritonServer
    prefix: Path | None
    collector: TraceCollector | None
    restart: Callable[[int], TritonServer]  # a fresh server (the n-th), replacing one that failed
    sent: int = 0  # every request, warm-up included (Triton's sampling counts them all)
    latencies: list[float] = field(default_factory=list)
    round_rps: list[float] = field(default_factory=list)
    round_requests: list[int] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    collector_cpu_s: float = 0.0
    records: int = 0
    records_with_our_id: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.percent:g}%"


# --- setup -----------------------------------------------------------------------------------------------

def example_module() -> Any:
    """``examples/model/make_model.py`` as a module."""
    spec = importlib.util.spec_from_file_location("make_model", ROOT / "examples" / "model" / "make_model.py")
    if spec is None or spec.loader is None:
        raise BenchError("cannot load examples/model/make_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_repository(tmp: Path) -> tuple[Path, Array]:
    """Train the example model, fetch it into ``tmp/repo`` as the init container would; returns the
    repository and the training inputs (the request data)."""
    import torch  # only here: the bench's other parts must not pay torch's import

    make_model = example_module()
    x, y = make_model.synthetic_data(2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; Triton's wrapper still loads it
        torch.jit.script(make_model.train(x, y)).save(str(tmp / "model.pt"))
    spec = yaml.safe_load((ROOT / "examples" / "cpu-classifier.yaml").read_text())["spec"]
    model = {**{k: v for k, v in spec["model"].items() if k != "storageUri"}, "name": MODEL}
    triton = spec["runtime"]["triton"]
    (tmp / "config.pbtxt").write_text(render_config(model, triton))
    argv = ["--uri", (tmp / "model.pt").as_uri(), "--name", MODEL, "--format", model["format"], "--version",
            str(model["version"]), "--backend", triton["backend"], "--repository", str(tmp / "repo"),
            "--config-file", str(tmp / "config.pbtxt"), "--termination-log", str(tmp / "term"),
            "--scratch-dir", str(tmp / "scratch")]
    fetch.fetch(fetch.parse_args(argv, os.environ)[0])
    return tmp / "repo", x


def start_config(repo: Path, tmp: Path, percent: float) -> Config:
    """A server (and a collector when tracing) for one sampling percentage."""
    work = tmp / f"p{percent:g}"
    prefix = work / "capture" / "trace.json" if percent else None
    args: list[str] = []
    if prefix is not None:
        prefix.parent.mkdir(parents=True)
        args = trace_args(prefix, percent, LOG_FREQUENCY)

    def start(n: int) -> TritonServer:
        return start_tritonserver(repo, work / f"triton-{n}", args, timeout=180)

    return Config(percent, start(0), prefix, TraceCollector(prefix) if prefix else None, start)


def start_all(repo: Path, tmp: Path) -> list[Config]:
    """Every configuration's server, started in parallel (each loads torch in its stub)."""
    with ThreadPoolExecutor(len(PERCENTS)) as pool:
        futures = [pool.submit(start_config, repo, tmp, p) for p in PERCENTS]
        configs = []
        for future in futures:
            try:
                configs.append(future.result())
            except Exception:
                for done in futures:
                    if done.done() and done.exception() is None:
                        done.result().server.stop()
                raise
    return configs


# --- load ------------------------------------------------------------------------------------------------

def request_bodies(x: Array, count: int = 64) -> list[bytes]:
    """The JSON bodies after ``{"id":"<id>``: ``count`` different [8, 4] batches of the training inputs."""
    bodies = []
    for k in range(count):
        rows = x[(k * ROWS) % (len(x) - ROWS):][:ROWS]
        tensor = {"name": "INPUT0", "shape": [ROWS, 4], "datatype": "FP32", "data": rows.ravel().tolist()}
        bodies.append(('",' + json.dumps({"inputs": [tensor]})[1:]).encode())
    return bodies


@dataclass
class Load:
    """What one round's clients measured."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(server: TritonServer, bodies: list[bytes], tag: str, deadline: float, load: Load) -> None:
    """One closed-loop client of a local server (see :func:`client_at`)."""
    client_at("127.0.0.1", server.http_port, bodies, tag, deadline, load)


def client_at(host: str, port: int, bodies: list[bytes], tag: str, deadline: float, load: Load) -> None:
    """One closed-loop client: a keep-alive connection to ``host:port``, requests until ``deadline``."""
    conn = http.client.HTTPConnection(host, port, timeout=CLIENT_TIMEOUT_S)
    headers = {"Content-Type": "application/json"}
    latencies, failed, k = [], [], 0
    try:
        while time.perf_counter() < deadline:
            body = b'{"id":"' + f"{tag}-{k}".encode() + bodies[k % len(bodies)]
            t0 = time.perf_counter()
            conn.request("POST", f"/v2/models/{MODEL}/infer", body, headers)
            resp = conn.getresponse()
            answer = resp.read()
            latencies.append(time.perf_counter() - t0)
            if resp.status != 200:
                failed.append(f"{resp.status} {answer[:200]!r}")
            k += 1
    except (OSError, http.client.HTTPException) as err:
        failed.append(f"{type(err).__name__}: {err}")
    finally:
        conn.close()
    with load.lock:
        load.latencies += latencies
        load.ok += len(latencies) - len(failed)
        load.failed += failed


class ServerFailure(Exception):
    """Requests failed: tritonserver died (or is dying: ``Signal (N) received.`` in its log), did not answer
    in time, or answered with an error. Arguments: kind, first error, log tail."""


def drive(cfg: Config, bodies: list[bytes], clients: int, seconds: float, tag: str) -> Load:
    """``clients`` concurrent clients against ``cfg``'s server for ``seconds``; ServerFailure when a request
    failed."""
    load = Load()
    deadline = time.perf_counter() + seconds
    threads = [threading.Thread(target=client, args=(cfg.server, bodies, f"{cfg.label}-{tag}-{i}", deadline, load))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cfg.sent += len(load.latencies)
    if load.failed:
        tail = cfg.server.log_text().splitlines()[-20:]
        status = cfg.server.process.poll()
        crashed = status is not None or any(line.startswith("Signal (") for line in tail)
        raise ServerFailure("crash" if crashed else "failed requests",
                            f"{len(load.failed)} failed, first: {load.failed[0]}", "\n".join(tail))
    return load


def retire(cfg: Config, failure: ServerFailure, tag: str) -> None:
    """Record the failure, stop the server (and its stub), read the trace files it left."""
    cfg.server.stop(timeout=5)
    with contextlib.suppress(ProcessLookupError):  # its Python-backend stub outlives it (and ignores SIGTERM)
        os.killpg(cfg.server.process.pid, signal.SIGKILL)  # launched with start_new_session: pgid = pid
    kind, error, log = failure.args
    cfg.failures.append({"round": tag, "kind": kind, "error": error, "exitStatus": cfg.server.process.returncode,
                         "logTail": log, "requestsBefore": cfg.sent})
    emit(f"!! tritonserver with capture {cfg.label}, round {tag}: {kind}: {error}; exit status "
         f"{cfg.server.process.returncode} (replacing it)")
    if len(cfg.failures) > MAX_FAILURES:
        raise BenchError(f"{cfg.label}: tritonserver failed {len(cfg.failures)} times; the last log:\n{log}")
    consume(cfg)


def recover(cfg: Config, failure: ServerFailure, tag: str, bodies: list[bytes], sizes: Sizes) -> None:
    """Replace the failed server by a new one and warm that up (again if that one fails too)."""
    while True:
        retire(cfg, failure, tag)
        cfg.server = cfg.restart(len(cfg.failures))
        try:
            with sidecar(cfg):
                drive(cfg, bodies, sizes.clients, sizes.warmup_s, f"warmup{len(cfg.failures)}")
            return
        except ServerFailure as again:
            failure, tag = again, f"warmup{len(cfg.failures)}"


# --- the sidecar's side and CPU accounting ---------------------------------------------------------------

def process_cpu_s(pid: int) -> float:
    """utime + stime (s) of ``pid`` and its children (tritonserver's Python-backend stubs)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: ppid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def consume(cfg: Config) -> None:
    """One pass of the collector (as the sidecar's loop): read and delete complete files, count records."""
    if cfg.collector is None:
        return
    t0 = time.thread_time()
    records = cfg.collector.poll()
    cfg.collector_cpu_s += time.thread_time() - t0
    cfg.records += len(records)
    cfg.records_with_our_id += sum(1 for r in records if (r.request_id or "").startswith(f"{cfg.label}-"))


def collector_loop(cfg: Config, stop: threading.Event) -> None:
    """Poll every ``POLL_S`` until ``stop`` (the sidecar's ``TraceCollector.run`` with CPU accounting)."""
    while not stop.is_set():
        consume(cfg)
        stop.wait(POLL_S)


@contextlib.contextmanager
def sidecar(cfg: Config) -> Iterator[None]:
    """The collector polling in a thread while the block runs, then one last poll (the files completed
    meanwhile: their reading belongs to this block)."""
    stop = threading.Event()
    poller = threading.Thread(target=collector_loop, args=(cfg, stop), daemon=True)
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join()
        consume(cfg)


def measure_round(cfg: Config, bodies: list[bytes], sizes: Sizes, tag: str) -> None:
    """One round of load on ``cfg`` with its collector alongside; the time includes the drain poll. A round
    during which the server failed is not counted: it is run again on a new server."""
    while True:
        cpu0 = process_cpu_s(cfg.server.process.pid)
        t0 = time.perf_counter()
        try:
            with sidecar(cfg):
                load = drive(cfg, bodies, sizes.clients, sizes.round_s, tag)
            break
        except ServerFailure as failure:
            recover(cfg, failure, tag, bodies, sizes)
    elapsed = time.perf_counter() - t0
    cfg.server_cpu_s += process_cpu_s(cfg.server.process.pid) - cpu0
    cfg.latencies += load.latencies
    cfg.round_requests.append(load.ok)
    cfg.round_seconds.append(elapsed)
    cfg.round_rps.append(load.ok / elapsed)


def run_rounds(configs: list[Config], bodies: list[bytes], sizes: Sizes) -> None:
    """Warm every server up, then ``rounds`` rounds, each configuration once per round, order rotated."""
    for cfg in configs:
        try:
            with sidecar(cfg):
                drive(cfg, bodies, sizes.clients, sizes.warmup_s, "warmup")
        except ServerFailure as failure:
            recover(cfg, failure, "warmup", bodies, sizes)
    for r in range(sizes.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for cfg in order:
            measure_round(cfg, bodies, sizes, f"r{r}")


def finish(configs: list[Config]) -> dict[str, int]:
    """Stop the servers (Triton flushes the traces it still holds), read the last files; returns the
    collectors' dropped-file counts per configuration."""
    for cfg in configs:
        if cfg.server.process.poll() is None:
            cfg.server.process.terminate()  # all at once: each takes seconds to exit
    for cfg in configs:
        cfg.server.stop()
    dropped = {}
    for cfg in configs:
        consume(cfg)
        if cfg.collector is not None:
            counters = cfg.collector.counters
            dropped[cfg.label] = counters.files_dropped_overload + counters.files_dropped_oversize
    return dropped


def check(configs: list[Config], dropped: dict[str, int]) -> None:
    """BenchError unless capture happened exactly as configured (see the module docstring)."""
    for cfg in configs:
        if not cfg.latencies:
            raise BenchError(f"{cfg.label}: no request was measured")
        if cfg.collector is None:
            continue
        expected = cfg.sent // sample_rate(cfg.percent)
        if cfg.records == 0 or cfg.records_with_our_id != cfg.records:
            raise BenchError(f"{cfg.label}: {cfg.records} records read, {cfg.records_with_our_id} with our ids "
                             f"({expected} expected): capture did not happen as configured")
        lost = dropped[cfg.label] * LOG_FREQUENCY  # dropped files are full ones (the oldest waiting)
        if not cfg.failures and cfg.records + lost != expected:  # a replaced server lost what it held
            raise BenchError(f"{cfg.label}: {cfg.records} records read + {lost} in dropped files, {expected} "
                             f"expected ({cfg.sent} requests, rate {sample_rate(cfg.percent)})")
        if cfg.prefix is not None and list(cfg.prefix.parent.iterdir()):
            raise BenchError(f"{cfg.label}: trace files left unread in {cfg.prefix.parent}")


# --- report ----------------------------------------------------------------------------------------------

def stats(cfg: Config) -> dict[str, Any]:
    """One configuration's absolute numbers."""
    lat_ms = np.asarray(cfg.latencies) * 1000
    requests, seconds = sum(cfg.round_requests), sum(cfg.round_seconds)
    counters = cfg.collector.counters if cfg.collector else None
    records = cfg.records if counters else None
    return {"percent": cfg.percent, "rate": sample_rate(cfg.percent), "requests": requests, "sent": cfg.sent,
            "seconds": round(seconds, 3), "throughputRps": requests / seconds,
            "p50Ms": float(np.percentile(lat_ms, 50)), "p99Ms": float(np.percentile(lat_ms, 99)),
            "meanMs": float(lat_ms.mean()), "roundRps": [round(x, 2) for x in cfg.round_rps],
            "serverCpuMsPerRequest": 1000 * cfg.server_cpu_s / requests, "sampledRecords": records,
            "traceBytesPerSampled": counters.bytes_read / cfg.records if counters and cfg.records else None,
            "collectorCpuMsPerSampled": 1000 * cfg.collector_cpu_s / cfg.records if counters and cfg.records
            else None, "collectorCounters": counters.as_dict() if counters else None,
            "serverFailures": len(cfg.failures), "serverFailureDetails": cfg.failures}


def with_ratios(configs: list[Config]) -> dict[str, dict[str, Any]]:
    """Every configuration's numbers and their ratios to 0 % (pooled, and paired per round)."""
    base = configs[0]
    out: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        s = stats(cfg)
        b = out.get(base.label, s)
        paired = [x / y for x, y in zip(cfg.round_rps, base.round_rps, strict=True)]
        s["ratios"] = {"throughput": ratio(s["throughputRps"], b["throughputRps"]),
                       "p50": ratio(s["p50Ms"], b["p50Ms"]), "p99": ratio(s["p99Ms"], b["p99Ms"]),
                       "serverCpuPerRequest": ratio(s["serverCpuMsPerRequest"], b["serverCpuMsPerRequest"]),
                       "throughputPerRound": {"median": statistics.median(paired), "min": min(paired),
                                              "max": max(paired)}}
        out[cfg.label] = s
    return out


def report(results: dict[str, dict[str, Any]], sizes: Sizes) -> None:
    headers = ["capture", "req/s", "x0%", "x0% rounds (min..max)", "p50 ms", "x0%", "p99 ms", "x0%",
               "srv CPU ms/req", "x0%"]
    rows = []
    for label, s in results.items():
        r, per = s["ratios"], s["ratios"]["throughputPerRound"]
        rows.append([label, s["throughputRps"], r["throughput"], f"{per['median']:.3f} ({per['min']:.2f}.."
                     f"{per['max']:.2f})", s["p50Ms"], r["p50"], s["p99Ms"], r["p99"], s["serverCpuMsPerRequest"],
                     r["serverCpuPerRequest"]])
    emit(table(f"capture overhead: {sizes.clients} clients, [8,4] FP32 over HTTP/JSON, {sizes.rounds} interleaved "
               f"rounds x {sizes.round_s:g} s per configuration", headers, rows))
    headers = ["capture", "rate", "requests", "sampled", "trace B/sampled", "collector CPU ms/sampled",
               "files read", "files dropped", "server failures"]
    rows = []
    for label, s in results.items():
        counters = s["collectorCounters"] or {}
        rows.append([label, s["rate"], s["sent"], s["sampledRecords"], s["traceBytesPerSampled"],
                     s["collectorCpuMsPerSampled"], counters.get("files_read"),
                     None if not counters else counters["files_dropped_overload"] + counters["files_dropped_oversize"],
                     s["serverFailures"]])
    emit(table(f"capture itself (log-frequency {LOG_FREQUENCY}; requests include warm-up)", headers, rows))
    failed = {label: s["serverFailures"] for label, s in results.items() if s["serverFailures"]}
    if failed:
        emit(f"!! tritonserver FAILED under this load (crashed, or lost or refused requests): {failed}; those rounds "
             "were run again on a new server (serverFailureDetails in the JSON: error, exit status, log)")


def main(argv: Sequence[str] | None = None) -> int:
    run = parse_args(NAME, __doc__.splitlines()[0] if __doc__ else NAME, argv)
    sizes = SMOKE if run.smoke else DEFAULT
    if find_tritonserver() is None:
        raise BenchError("tritonserver not found: pip install nvidia-pytriton (or set TRITONOPS_TRITONSERVER)")
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp_dir:
        tmp = Path(tmp_dir)
        repo, x = build_repository(tmp)
        configs = start_all(repo, tmp)
        try:
            run_rounds(configs, request_bodies(x), sizes)
        finally:
            dropped = finish(configs)
        check(configs, dropped)
        results = with_ratios(configs)
    report(results, sizes)
    params = {**sizes.__dict__, "percents": list(PERCENTS), "logFrequency": LOG_FREQUENCY, "pollSeconds": POLL_S,
              "rowsPerRequest": ROWS, "model": "examples/model (TorchScript) via the PythonWrapper, "
              "examples/cpu-classifier.yaml's Triton settings"}
    emit(f"wrote {write_result(run, params, {'configs': results, 'baseline': configs[0].label})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
