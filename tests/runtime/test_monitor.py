"""The drift monitor's parts without Triton: tumbling windows, the tracker's state file, feedback and quality,
the HTTP endpoint, the CLI's failures and SIGTERM. The monitor against the real tritonserver is in
``test_monitor_triton.py``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.waiting import wait_for
from tritonops_runtime.drift import monitor as mon
from tritonops_runtime.drift.buffers import WindowBuffer
from tritonops_runtime.drift.monitor import Monitor, MonitorConfig
from tritonops_runtime.drift.profile import build_profile, dump_profile
from tritonops_runtime.drift.quality import Feedback, FeedbackError, QualityWindow, parse_feedback
from tritonops_runtime.drift.server import MAX_BODY, MonitorHTTPServer
from tritonops_runtime.drift.tracefile import Array, TraceRecord
from tritonops_runtime.localtriton import free_port
from tritonops_runtime.retrain import metrics

FEATURES, CLASSES = 4, 3
WEIGHTS = np.random.default_rng(0).normal(size=(FEATURES, CLASSES))


def sample(n: int, seed: int, shift: float = 0.0) -> tuple[Array, Array]:
    """Inputs (n, 4) and the class probabilities a fixed linear-softmax 'model' gives them."""
    x = np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32) + np.float32(shift)
    logits = x @ WEIGHTS
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return x, (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    x, probs = sample(3000, seed=1)
    path = tmp_path_factory.mktemp("profile") / "profile.json"
    return path, dump_profile(build_profile(x, probs, input_names=["INPUT0"], output_names=["OUTPUT0"]), path)


def config(profile_file: tuple[Path, str], **overrides: Any) -> MonitorConfig:
    settings: dict[str, Any] = {
        "reference": profile_file[0].as_uri(), "model": "clf", "input": "INPUT0", "output": "OUTPUT0",
        "window_size": 200, "interval_seconds": 0.2, "method": "psi", "threshold": 0.2, "consecutive_windows": 2,
        "state_file": None, **overrides}
    return MonitorConfig(**settings)


def new_monitor(profile_file: tuple[Path, str], **overrides: Any) -> Monitor:
    cfg = config(profile_file, **overrides)
    profile, digest = mon.load_reference(cfg.reference, None, os.environ)
    assert digest == profile_file[1]
    return Monitor(cfg, profile, digest)


def records(x: Array, y: Array | None, per_request: int = 10, prefix: str = "r", model: str = "clf") -> list[
        TraceRecord]:
    """One trace record per ``per_request`` rows, request ids ``<prefix>-<k>``."""
    out = []
    for k, start in enumerate(range(0, len(x), per_request)):
        outputs = {} if y is None else {"OUTPUT0": y[start:start + per_request]}
        out.append(TraceRecord(k + 1, model, 1, f"{prefix}-{k}", inputs={"INPUT0": x[start:start + per_request]},
                               outputs=outputs))
    return out


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels without model): value}`` of a metrics page."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert s.labels.get("model") == "clf", s
            found[s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "model"))] = s.value
    return found


# --- windows ---------------------------------------------------------------------------------------------

def test_window_buffer_is_tumbling_and_aligned_by_request() -> None:
    buffer = WindowBuffer(5)
    rows = np.arange(20, dtype=np.float32).reshape(10, 2)
    outs = -rows[:, :1]
    buffer.add(rows[0:2], outs[0:2])
    buffer.add(rows[2:4], None)  # a request answered with an error: no outputs
    assert buffer.take() is None and buffer.pending == 4  # fewer than 5 rows: wait
    buffer.add(rows[4:7], outs[4:6])  # output rows do not match the input rows: drops out of the outputs
    buffer.add(rows[7:9], outs[7:9])
    assert buffer.pending == 9
    taken = buffer.take()
    assert taken is not None
    inputs, outputs = taken
    np.testing.assert_array_equal(inputs, rows[4:9])  # the newest 5 rows; older ones are dropped
    assert outputs is not None
    np.testing.assert_array_equal(outputs, outs[7:9])
    assert buffer.pending == 0 and buffer.take() is None  # tumbling: the next window starts empty

    buffer.add(np.zeros((12, 2)), np.ones((12, 1)))  # one request larger than a window
    taken = buffer.take()
    assert taken is not None and taken[0].shape == (5, 2) and taken[1] is not None and taken[1].shape == (5, 1)
    buffer.add(np.zeros((3, 2)), None)
    buffer.add(np.zeros((3, 3)), None)  # the row width changed: start over
    assert (buffer.pending, buffer.resets) == (3, 1)
    buffer.add(np.zeros(2), None)  # 1-D: two rows of one value... another width: start over again
    assert (buffer.pending, buffer.resets) == (2, 2)


def test_windows_drift_and_declaration(profile_file: tuple[Path, str]) -> None:
    monitor = new_monitor(profile_file, method="ks", threshold=0.01)
    for seed in (10, 11):
        monitor.ingest(records(*sample(200, seed)))
        result = monitor.evaluate()
        assert result is not None and not result.drifted and result.rows == 200
        assert result.p_value is not None and result.p_value > 0.01
    assert monitor.state.windows == 2 and not monitor.state.declared
    assert monitor.prediction_psi is not None and monitor.prediction_psi < 0.1

    monitor.ingest(records(*sample(150, 12, shift=1.5)))
    monitor.ingest(records(*sample(50, 13), model="other"))  # other models' traces are ignored
    assert monitor.evaluate() is None and monitor.status()["rowsPending"] == 150
    monitor.ingest(records(*sample(100, 14, shift=1.5)))
    result = monitor.evaluate()
    assert result is not None and result.drifted and result.rows == 200
    assert (monitor.state.consecutive, monitor.state.declared) == (1, False)
    monitor.ingest(records(*sample(200, 15, shift=1.5)))
    last = monitor.evaluate()
    assert last is not None and last.p_value is not None
    assert (monitor.state.consecutive, monitor.state.declared, monitor.state.event) == (2, True, "declared")
    assert monitor.prediction_psi is not None and monitor.prediction_psi > 0.2

    found = scrape(monitor.metrics().decode())
    assert found["tritonops_drift_detected", ()] == 1.0
    assert found["tritonops_drift_window_drifted", ()] == 1.0
    assert found["tritonops_drift_windows_total", ()] == 4.0
    assert found["tritonops_drift_declarations_total", ()] == 1.0
    assert found["tritonops_drift_consecutive_windows", ()] == 2.0
    assert found["tritonops_drift_window_rows", ()] == 200.0
    assert found["tritonops_drift_p_value", ()] == last.p_value < 0.01
    assert found["tritonops_prediction_drift_psi", ()] == monitor.prediction_psi
    scores = {labels: v for (name, labels), v in found.items() if name == "tritonops_drift_score"}
    assert len(scores) == FEATURES + 1 and (("feature", "OUTPUT0"), ("role", "output")) in scores
    assert found["tritonops_drift_window_score", ()] == max(scores.values())
    assert abs(found["tritonops_drift_last_window_timestamp_seconds", ()] - time.time()) < 60


def test_window_that_does_not_fit_the_profile_is_counted(profile_file: tuple[Path, str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monitor = new_monitor(profile_file, window_size=10)
    monitor.ingest([TraceRecord(1, "clf", 1, "a", inputs={"INPUT0": np.zeros((10, 3), np.float32)})])
    with caplog.at_level(logging.ERROR, "tritonops.drift"):
        assert monitor.evaluate() is None
    status = monitor.status()
    assert status["windowErrors"] == 1 and "input feature" in status["lastError"] and status["lastWindow"] is None
    assert "not evaluated" in caplog.text
    assert scrape(monitor.metrics().decode())["tritonops_drift_window_errors_total", ()] == 1.0
    monitor.ingest(records(*sample(10, 3), per_request=5))
    assert monitor.evaluate() is not None  # carries on


def test_tracker_state_survives_a_restart(profile_file: tuple[Path, str], tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    state_file = tmp_path / "monitor-state.json"
    first = new_monitor(profile_file, state_file=state_file, consecutive_windows=3)
    for seed in (20, 21):
        first.ingest(records(*sample(200, seed, shift=2.0)))
        first.evaluate()
    assert json.loads(state_file.read_text())["tracker"]["consecutive"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [state_file.name]  # no temporary file left

    second = new_monitor(profile_file, state_file=state_file, consecutive_windows=3)
    assert second.state == first.state
    second.ingest(records(*sample(200, 22, shift=2.0)))
    second.evaluate()
    assert (second.state.windows, second.state.declared) == (3, True)  # the count went on from 2
    assert scrape(second.metrics().decode())["tritonops_drift_windows_total", ()] == 3.0

    state_file.write_text('{"format": 1, "tracker": {"version": 1, "consecutive": -')
    with caplog.at_level(logging.WARNING, "tritonops.drift"):
        assert new_monitor(profile_file, state_file=state_file).state.windows == 0  # corrupt: ignored
    assert "ignoring the state file" in caplog.text
    mon.save_state(state_file, {"format": 1, "model": "clf", "reference": "sha256:other",
                                "tracker": second.state.to_dict()})
    assert new_monitor(profile_file, state_file=state_file).state.windows == 0  # another profile's count


# --- feedback and quality --------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_feedback_ttl_eviction_and_invalid_labels() -> None:
    clock = Clock()
    feedback = Feedback(QualityWindow("accuracy", 10, 0.5), ttl_s=60, max_entries=3, clock=clock)
    probs = np.array([[0.8, 0.1, 0.1]], dtype=np.float32)
    for k in range(4):
        feedback.remember(f"r{k}", probs)
        clock.now += 10
    assert feedback.counts["evicted"] == 1  # r0: the oldest, over max_entries
    label = np.asarray(0.0)
    answer = feedback.join([("r0", label), ("r1", np.asarray(5.0)), ("r1", np.asarray([0.0, 0.0])),
                            ("r1", np.asarray(0.5)), ("r2", label), ("r2", label)])
    assert answer == {"joined": 1, "unknown": 2, "invalid": 3}  # r0 evicted; r2 joined once, then unknown
    clock.now += 45  # r1 is 75 s old (expired), r3 55 s
    assert feedback.join([("r1", label), ("r3", label)]) == {"joined": 1, "unknown": 1, "invalid": 0}
    view, counts, waiting = feedback.snapshot()
    assert (view.pairs, view.value, waiting) == (2, 1.0, 0)
    assert counts == {"joined": 2, "unknown": 3, "invalid": 3, "evicted": 1, "expired": 1}

    small = Feedback(QualityWindow("mse", 2, 1.0), ttl_s=60, max_entries=100, max_bytes=3 * 8, clock=clock)
    for k in range(4):
        small.remember(f"v{k}", np.zeros((1, 2), np.float32))  # 8 bytes each: at most 3 held
    assert small.snapshot()[1]["evicted"] == 1 and small.snapshot()[2] == 3


@pytest.mark.parametrize("metric", ["accuracy", "f1", "auc", "mse"])
def test_quality_equals_retrain_metrics(profile_file: tuple[Path, str], metric: str) -> None:
    minimum = 0.5 if metric != "mse" else 0.05
    monitor = new_monitor(profile_file, quality_metric=metric, quality_minimum=minimum, quality_window=40)
    x, probs = sample(60, seed=30)
    monitor.ingest(records(x, probs, per_request=1))
    rng = np.random.default_rng(31)
    truth = probs.argmax(axis=1)
    labels = np.where(rng.random(60) < 0.8, truth, rng.integers(0, CLASSES, 60))
    targets = probs + rng.normal(0, 0.1, size=probs.shape).astype(np.float32)
    items = [{"id": f"r-{k}", "label": targets[k].tolist() if metric == "mse" else int(labels[k])} for k in range(60)]
    status, answer = monitor.feedback(json.dumps({"items": items[:30]}).encode())
    assert (status, answer) == (200, {"joined": 30, "unknown": 0, "invalid": 0})
    assert monitor.quality is not None and not monitor.quality.snapshot()[0].below_minimum  # 30 < 40 pairs
    assert monitor.feedback(json.dumps({"items": items[30:]}).encode())[1]["joined"] == 30
    last = slice(20, 60)  # the window holds the last 40 pairs
    expected = {"accuracy": lambda: metrics.accuracy(truth[last], labels[last]),
                "f1": lambda: metrics.macro_f1(truth[last], labels[last]),
                "auc": lambda: metrics.macro_auc_ovr(probs[last], labels[last]),
                "mse": lambda: metrics.mse(probs[last], targets[last])}[metric]()
    found = scrape(monitor.metrics().decode())
    assert found["tritonops_quality", (("metric", metric),)] == pytest.approx(expected, rel=1e-12)
    assert found["tritonops_quality_pairs", ()] == 40.0
    worse = expected < minimum if metric != "mse" else expected > minimum
    assert found["tritonops_quality_below_minimum", ()] == float(worse)
    assert monitor.status()["quality"]["belowMinimum"] is worse
    assert found["tritonops_feedback_total", (("outcome", "joined"),)] == 60.0


def test_quality_below_minimum_for_mse_means_above() -> None:
    window = QualityWindow("mse", 2, 0.5)
    window.add([(np.array([1.0]), np.array([0.0])), (np.array([1.0]), np.array([1.0]))])
    assert window.view().value == 0.5 and not window.view().below_minimum
    window.add([(np.array([2.0]), np.array([0.0]))])
    assert window.view().value == 2.0 and window.view().below_minimum  # (0 + 4) / 2: the window keeps 2
    window.add([(np.array([1.0, 2.0]), np.array([1.0, 2.5]))])  # outputs of another width: start over
    assert (window.view().pairs, window.view().value, window.view().below_minimum) == (1, 0.125, False)


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "body: not JSON"),
    (b"[1, 2]", "body: must be a JSON object"),
    (b'{"label": 1}', "id: must be a non-empty string"),
    (b'{"id": 7, "label": 1}', "id: must be a non-empty string"),
    (b'{"id": "a"}', "label: missing"),
    (b'{"id": "a", "label": "cat"}', "label: must be a number"),
    (b'{"id": "a", "label": [1, [2]]}', "label: must be a number"),
    (b'{"id": "a", "label": true}', "label: must be a number"),
    (b'{"id": "a", "label": NaN}', "NaN is not allowed"),
    (b'{"items": {"id": "a"}}', "items: must be a list"),
    (b'{"items": [{"id": "a", "label": 1}, {"id": "b", "label": []}]}', "items[1].label: must hold"),
    (b'{"items": [{"id": "a", "label": 1}, 3]}', "items[1]: must be an object"),
    (b'{"items": [], "id": "a"}', "either id and label, or items"),
])
def test_malformed_feedback_names_the_field(body: bytes, message: str) -> None:
    with pytest.raises(FeedbackError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_feedback(body)


# --- HTTP --------------------------------------------------------------------------------------------------

@pytest.fixture
def endpoint(profile_file: tuple[Path, str]) -> Iterator[tuple[Monitor, str]]:
    monitor = new_monitor(profile_file, quality_metric="accuracy", quality_minimum=0.5, quality_window=5)
    server = MonitorHTTPServer(("127.0.0.1", 0), monitor)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield monitor, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def call(url: str, body: bytes | None = None, method: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of one request."""
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_http_endpoints(endpoint: tuple[Monitor, str]) -> None:
    monitor, url = endpoint
    monitor.ingest(records(*sample(5, seed=40), per_request=1, prefix="q"))
    assert call(f"{url}/healthz")[::2] == (200, "ok\n")
    status, kind, text = call(f"{url}/v1/status")
    doc = json.loads(text)
    assert (status, kind, doc["model"], doc["rowsPending"], doc["feedback"]["waiting"]) == (
        200, "application/json", "clf", 5, 5)
    status, kind, text = call(f"{url}/metrics")
    assert status == 200 and kind.startswith("text/plain") and "tritonops_drift_rows_pending" in text

    status, _, text = call(f"{url}/v1/feedback", json.dumps({"id": "q-0", "label": 1}).encode())
    assert (status, json.loads(text)) == (200, {"joined": 1, "unknown": 0, "invalid": 0})
    body = {"items": [{"id": "q-1", "label": 0}, {"id": "nope", "label": 0}, {"id": "q-2", "label": 9}]}
    assert json.loads(call(f"{url}/v1/feedback", json.dumps(body).encode())[2]) == {
        "joined": 1, "unknown": 1, "invalid": 1}
    status, _, text = call(f"{url}/v1/feedback", b'{"items": [{"id": "q-3"}]}')
    assert (status, json.loads(text)) == (400, {"error": "items[0].label: missing"})
    status, _, text = call(f"{url}/v1/feedback", b" " * (MAX_BODY + 1))
    assert status == 413 and "limit" in json.loads(text)["error"]
    assert call(f"{url}/v1/feedback", b" " * MAX_BODY)[0] == 400  # exactly the limit is read (and is not JSON)
    assert call(f"{url}/v1/feedback")[0] == 405
    assert call(f"{url}/metrics", b"{}")[0] == 405
    assert call(f"{url}/v2/other")[0] == 404

    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert sock.recv(200).split(b"\r\n")[0] == b"HTTP/1.1 411 Length Required"


def test_feedback_is_refused_without_a_quality_metric(profile_file: tuple[Path, str]) -> None:
    status, answer = new_monitor(profile_file).feedback(b'{"id": "a", "label": 1}')
    assert status == 404 and "--quality-metric" in answer["error"]


# --- the program -----------------------------------------------------------------------------------------

def argv(reference: str, *extra: str) -> list[str]:
    return ["--reference", reference, "--model", "clf", "--input", "INPUT0", "--window-size", "100",
            "--interval-seconds", "0.2", "--method", "psi", "--threshold", "0.2", "--consecutive-windows", "2",
            "--state-file", "", *extra]


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRITONOPS_TERMINATION_LOG", str(tmp_path / "termination-log"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path


def test_reference_fetch_failure_exits_1_naming_the_flag(sandbox: Path, capsys: pytest.CaptureFixture[str],
                                                         profile_file: tuple[Path, str]) -> None:
    missing = (sandbox / "missing.json").as_uri()
    assert mon.main(argv(missing)) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("tritonops-drift-monitor: cannot load the reference profile (--reference "
                           f"{missing}): not found")
    assert (sandbox / "termination-log").read_text() == line

    signed = f"http://127.0.0.1:{free_port()}/profile.json?X-Amz-Signature=topsecret123"
    assert mon.main(argv(signed)) == 1
    line = capsys.readouterr().err
    assert "--reference http://127.0.0.1:" in line and "topsecret123" not in line

    assert mon.main(argv(profile_file[0].as_uri(), "--reference-digest", "sha256:" + "0" * 64)) == 1
    assert "does not match the expected sha256:000" in capsys.readouterr().err
    bare = sandbox / "bare.json"
    dump_profile(build_profile(sample(50, 1)[0], input_names=["INPUT0"]), bare)
    assert mon.main(argv(bare.as_uri(), "--output", "OUTPUT0")) == 1
    assert "--output OUTPUT0: the reference profile" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--window-size", "0"], "--window-size must be > 0"),
    (["--method", "psi", "--threshold", "-1"], "threshold must be a positive number"),
    (["--quality-metric", "accuracy"], "--quality-metric needs --quality-minimum and --output"),
    (["--listen", "nowhere"], "--listen must be HOST:PORT"),
    (["--method", "median"], "invalid choice"),
])
def test_bad_flags_exit_2(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert mon.main(argv("file:///p.json", *extra)) == 2
    assert message in capsys.readouterr().err


def healthy(url: str) -> bool:
    try:
        return call(f"{url}/healthz")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def imports_torch() -> bool:
    """Whether importing the monitor drags in torch (the sidecar's image has numpy and scipy, not torch)."""
    code = "import sys, tritonops_runtime.drift.monitor; print('torch' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "True\n"


def test_the_monitor_does_not_import_torch(imports_torch: bool) -> None:
    assert not imports_torch


def test_sigterm_stops_the_program_within_a_second(sandbox: Path, profile_file: tuple[Path, str],
                                                   imports_torch: bool) -> None:
    port, log = free_port(), sandbox / "monitor.log"
    cmd = [sys.executable, "-m", "tritonops_runtime.drift.monitor",
           *argv(profile_file[0].as_uri(), "--trace-prefix", str(sandbox / "trace.json"), "--listen",
                 f"127.0.0.1:{port}")]
    with log.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stderr=stderr)
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}") or proc.poll() is not None, 20.0, "the monitor", 0.05)
        assert proc.poll() is None, log.read_text()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        elapsed = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
    # Without torch the process is gone in ~0.3 s; torch's interpreter teardown alone adds 0.6-0.8 s.
    assert elapsed < (2.5 if imports_torch else 1.0), elapsed
    assert "monitoring model clf" in log.read_text()
