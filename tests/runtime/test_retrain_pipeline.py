"""End to end through ``tritonops-retrain`` against a real S3 server: real training of the example model.

The serving model is the example (trained on the original blobs) stored as version 1; the new data are the
blobs shifted (accepted, version 2 written and fetched back by the fetcher with its digest) or the original
blobs with a learning rate that wrecks the model (rejected, nothing written).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.runtime.test_retrain_data import blobs, example_model_bytes, sha, write_model, write_npz
from tests.s3 import S3Server
from tritonops_runtime import fetch
from tritonops_runtime.drift.profile import load_profile
from tritonops_runtime.retrain.config import EXIT_ACCEPTED, EXIT_FAILED, EXIT_REJECTED
from tritonops_runtime.retrain.main import main


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The shared S3 server, its credentials in the environment (as the Job gets them from the secret)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


def _store(tmp: Path, s3: S3Server, shifted: bool, seed: int = 7) -> tuple[str, Path]:
    """Version 1 and the new data in S3; returns (the key prefix, the prefix's directory on the server)."""
    prefix = tmp.name
    s3.put("models", f"{prefix}/1/model.pt", write_model(tmp / "upload" / "model.pt"))
    x, y = blobs(1000, seed, shifted)
    s3.put("data", f"{prefix}/new.npz", write_npz(tmp / "upload" / "new.npz", x, y))
    return prefix, s3.root / "models" / prefix


def _run(tmp: Path, capsys: pytest.CaptureFixture[str], prefix: str, *extra: str) -> tuple[int, dict[str, object]]:
    rc = main(["--model-uri", f"s3://models/{prefix}/1/model.pt", "--data-uri", f"s3://data/{prefix}/new.npz",
               "--output-uri", f"s3://models/{prefix}", "--termination-log", str(tmp / "termination-log"),
               "--scratch-dir", str(tmp / "scratch"), "--seed", "3", "--threads", "1", *extra])
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return rc, json.loads(out)


def _fetch_back(tmp: Path, uri: str, digest: str, fmt: str) -> dict[str, object]:
    """The fetcher's own fetch of a published file, verifying its digest."""
    config = tmp / "fetch" / "config.pbtxt"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('name: "clf"\n')
    cfg = fetch.FetchConfig(uri=uri, name="clf", format=fmt, version="2", digest=digest,
                            repository=tmp / "fetch" / fmt, config_file=config, scratch=tmp / "fetch" / "scratch")
    return fetch.fetch(cfg)


def test_shifted_data_is_learned_and_published(tmp_path: Path, s3: S3Server,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    prefix, store = _store(tmp_path, s3, shifted=True)
    rc, result = _run(tmp_path, capsys, prefix, "--onnx", "--lr", "0.002")
    assert rc == EXIT_ACCEPTED, result
    assert result["decision"] == "Accepted" and result["version"] == "2"
    current, candidate = result["current"], result["candidate"]
    assert isinstance(current, dict) and isinstance(candidate, dict)
    assert current["accuracy"] < 0.75 and candidate["accuracy"] > 0.9 and candidate["auc"] > current["auc"]
    assert result["storageUri"] == f"s3://models/{prefix}/2/model.pt"
    assert result["optimizations"] == {"torchscript": "kept", "onnx": "kept", "prune": "off", "quantize": "off"}
    assert sorted(os.listdir(store)) == ["1", "2"]
    assert sorted(os.listdir(store / "2")) == ["manifest.json", "model.onnx", "model.pt", "reference_profile.json"]
    assert (store / "1" / "model.pt").read_bytes() == example_model_bytes()  # the serving model is untouched
    files = result["files"]
    assert isinstance(files, dict) and all(files[name] == sha(store / "2" / name) for name in os.listdir(store / "2"))
    assert result["digest"] == files["model.pt"] and result["parentDigest"] == sha(store / "1" / "model.pt")
    assert result["dataDigest"] == sha(s3.root / "data" / prefix / "new.npz")

    # What the operator reads: the termination message (no file list) and the exit code.
    message = (tmp_path / "termination-log").read_text()
    expected = {**{k: v for k, v in result.items() if k != "files"}, "onnxDigest": result["files"]["model.onnx"]}
    assert len(message.encode()) <= 4096 and json.loads(message) == expected  # the ONNX file's digest, not the list

    # The fetcher fetches the new version and verifies the digest the Job reported.
    report = _fetch_back(tmp_path, str(result["storageUri"]), str(result["digest"]), "torchscript")
    assert report["verified"] is True and report["digest"] == result["digest"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.jit.load(str(tmp_path / "fetch" / "torchscript" / "clf" / "2" / "model.pt"))  # type: ignore[no-untyped-call]
    x, y = blobs(500, 99, shifted=True)  # fresh shifted data
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).numpy()
    assert float((probs.argmax(1) == y).mean()) > 0.9
    onnx_report = _fetch_back(tmp_path, f"s3://models/{prefix}/2/model.onnx", str(files["model.onnx"]), "onnx")
    assert onnx_report["verified"] is True
    session = ort.InferenceSession(str(tmp_path / "fetch" / "onnx" / "clf" / "2" / "model.onnx"))
    assert np.allclose(session.run(["OUTPUT0"], {"INPUT0": x})[0], probs, atol=1e-5)

    # The reference profile verifies against its digest; the manifest ties it all together.
    profile = load_profile(store / "2" / "reference_profile.json", digest=str(files["reference_profile.json"]))
    assert [f["name"] for f in profile["inputs"]] == [f"INPUT0[{j}]" for j in range(4)]
    assert profile["outputs"]["transform"] == "argmax" and profile["rows"] == 1000
    manifest = json.loads((store / "2" / "manifest.json").read_text())
    assert manifest["parent"] == {"uri": f"s3://models/{prefix}/1/model.pt", "version": "1",
                                  "digest": result["parentDigest"]}
    assert manifest["data"]["digest"] == result["dataDigest"] and manifest["digest"] == result["digest"]
    assert manifest["createdBy"].startswith("tritonops-retrain") and manifest["version"] == "2"
    assert manifest["files"]["reference_profile.json"] == files["reference_profile.json"]


def test_a_wrecked_candidate_is_rejected_and_nothing_is_written(tmp_path: Path, s3: S3Server,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    prefix, store = _store(tmp_path, s3, shifted=False)
    rc, result = _run(tmp_path, capsys, prefix, "--lr", "50", "--onnx")
    assert rc == EXIT_REJECTED and result["decision"] == "Rejected"
    reasons = result["reasons"]
    assert isinstance(reasons, list) and reasons[0].startswith("the fine-tuned model's accuracy 0.")
    assert "vs the serving model's 0.9" in reasons[0]
    assert result["version"] == "" and result["storageUri"] == "" and result["files"] == {}
    assert sorted(os.listdir(store)) == ["1"]
    assert json.loads((tmp_path / "termination-log").read_text())["decision"] == "Rejected"


def test_shuffled_labels_do_not_pass_a_required_improvement(tmp_path: Path, s3: S3Server,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tmp_path.name
    s3.put("models", f"{prefix}/1/model.pt", write_model(tmp_path / "upload" / "model.pt"))
    x, y = blobs(1000, 7, shifted=False)
    shuffled = np.random.default_rng(0).permutation(y)
    s3.put("data", f"{prefix}/new.npz", write_npz(tmp_path / "upload" / "new.npz", x, shuffled))
    rc, result = _run(tmp_path, capsys, prefix, "--min-improvement", "0.05", "--metric", "f1")
    assert rc == EXIT_REJECTED and "needs an improvement of at least 0.05" in str(result["reasons"])
    assert sorted(os.listdir(s3.root / "models" / prefix)) == ["1"]


def test_an_existing_version_is_never_overwritten(tmp_path: Path, s3: S3Server,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    prefix, store = _store(tmp_path, s3, shifted=True)
    s3.put("models", f"{prefix}/2/model.pt", write_npz(tmp_path / "other.npz", np.zeros(1), np.zeros(1)))
    before = (store / "2" / "model.pt").read_bytes()
    rc, result = _run(tmp_path, capsys, prefix, "--version", "2")
    assert rc == EXIT_FAILED and result["decision"] == "Failed"
    assert result["reasons"] == [f"version 2 already exists at s3://models/{prefix}/2/: versions are never "
                                 "overwritten"]
    assert result["current"] == {}  # refused before any work
    assert (store / "2" / "model.pt").read_bytes() == before and sorted(os.listdir(store)) == ["1", "2"]
    rc, result = _run(tmp_path, capsys, prefix, "--epochs", "2")  # automatic: after the highest
    assert rc == EXIT_ACCEPTED and result["version"] == "3"
    assert (store / "2" / "model.pt").read_bytes() == before


def test_failures_are_reported_without_secrets(tmp_path: Path, s3: S3Server, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    prefix, store = _store(tmp_path, s3, shifted=True)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123")
    rc, result = _run(tmp_path, capsys, prefix)
    assert rc == EXIT_FAILED and "access denied: HTTP 403 (SignatureDoesNotMatch)" in str(result["reasons"])
    message = (tmp_path / "termination-log").read_text()
    assert "wrong-secret-0123" not in message and json.loads(message)["decision"] == "Failed"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    rc, result = _run(tmp_path, capsys, prefix, "--model-digest", "sha256:" + "0" * 64)
    assert rc == EXIT_FAILED and "digest mismatch" in str(result["reasons"])
    assert sorted(os.listdir(store)) == ["1"]
