"""``tritonops-retrain`` on local stores (file://, pvc://), its arguments, exit codes and termination message."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.runtime.test_retrain_data import blobs, sha, write_model, write_npz
from tritonops_runtime import fetch
from tritonops_runtime.retrain.config import EXIT_ACCEPTED, EXIT_FAILED, EXIT_REJECTED, Result
from tritonops_runtime.retrain.main import main, termination_message
from tritonops_runtime.retrain.train import available_cpus


def run(tmp: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    rc = main(["--termination-log", str(tmp / "termination-log"), "--scratch-dir", str(tmp / "scratch"),
               "--threads", "1", *args])
    out = capsys.readouterr()
    return rc, json.loads(out.out), out.err


def test_csv_data_into_a_file_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    write_model(store / "1" / "model.pt")
    x, y = blobs(800, 7, shifted=True)
    csv = tmp_path / "new.csv"
    np.savetxt(csv, np.column_stack([x, y]), delimiter=",", header="a,b,c,d,label", comments="", fmt="%.6f")
    rc, result, err = run(tmp_path, capsys, "--model-uri", f"file://{store}/1/model.pt", "--data-uri", f"file://{csv}",
                          "--output-uri", f"file://{store}", "--result-file", str(tmp_path / "result.json"),
                          "--onnx", "--prune", "0.2", "--quantize", "--seed", "1")
    assert rc == EXIT_ACCEPTED and err == "" and result["version"] == "2", result
    assert result["storageUri"] == f"file://{store}/2/model.pt" and result["dataDigest"] == sha(csv)
    assert json.loads((tmp_path / "result.json").read_text()) == result
    assert sorted(os.listdir(store)) == ["1", "2"]  # the hidden .partial directory was renamed into place
    assert sorted(os.listdir(store / "2")) == ["manifest.json", "model.onnx", "model.pt", "reference_profile.json"]
    config = tmp_path / "config.pbtxt"
    config.write_text("")
    report = fetch.fetch(fetch.FetchConfig(uri=result["storageUri"], name="clf", format="torchscript", version="2",
                                           digest=result["digest"], repository=tmp_path / "repo", config_file=config,
                                           scratch=tmp_path / "fetch"))
    assert report["verified"] is True


def test_pvc_in_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pvc = tmp_path / "pvc"
    write_model(pvc / "models" / "clf" / "3" / "model.pt")
    x, y = blobs(600, 7, shifted=True)
    write_npz(pvc / "data" / "part-1.npz", x[:300], y[:300])
    write_npz(pvc / "data" / "part-2.npz", x[300:], y[300:])
    rc, result, _ = run(tmp_path, capsys, "--model-uri", "pvc://claim/models/clf/3", "--data-uri", "pvc://claim/data",
                        "--output-uri", "pvc://claim/models/clf", "--pvc-root", str(pvc), "--epochs", "10")
    assert rc == EXIT_ACCEPTED and result["version"] == "4" and result["parentVersion"] == "3"
    assert result["storageUri"] == "pvc://claim/models/clf/4/model.pt" and result["samples"]["rows"] == 600
    assert (pvc / "models" / "clf" / "4" / "model.pt").is_file()


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out


def test_a_diverging_regression_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    (store / "1").mkdir(parents=True)
    torch.manual_seed(0)
    torch.jit.script(Linear()).save(str(store / "1" / "model.pt"))  # type: ignore[no-untyped-call]
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    data = write_npz(tmp_path / "d.npz", x, x.sum(axis=1))
    rc, result, _ = run(tmp_path, capsys, "--model-uri", f"file://{store}/1/model.pt", "--data-uri", f"file://{data}",
                        "--output-uri", f"file://{store}", "--task", "regression", "--lr", "1e30", "--tolerance",
                        "0.5")
    assert rc == EXIT_REJECTED, result
    assert result["metric"] == "mse" and result["reasons"][0].startswith("the training loss became non-finite")
    assert result["finetuned"]["mse"] > 1e20
    assert re.search(r"mse \d\.\d{3}e\+\d+ vs the serving model's 6\.4249", result["reasons"][1])
    assert sorted(os.listdir(store)) == ["1"]


@pytest.mark.parametrize(("args", "reason"), [
    (["--data-uri", "file:///d", "--output-uri", "file:///o"], "--model-uri is required"),
    (["--min-improvement", "0.1", "--tolerance", "0.1"], "bad arguments: argument --tolerance: not allowed with"),
    (["--task", "ranking"], "bad arguments: argument --task: invalid choice"),
    (["--model-uri", "file:///m", "--data-uri", "file:///d", "--output-uri", "file:///o", "--metric", "mse"],
     "--metric 'mse' does not suit classification"),
    (["--model-uri", "file:///m", "--data-uri", "file:///d", "--output-uri", "gs://bucket/models"],
     "cannot write the new version to gs://"),
    (["--model-uri", "file:///m", "--data-uri", "file:///d", "--output-uri", "file:///o", "--prune", "1.5",
      "--holdout-fraction", "0"], "bad --holdout-fraction 0.0: between 0 and 1 (exclusive); bad --prune 1.5"),
    (["--model-uri", "file:///nonexistent/model.pt", "--data-uri", "file:///d", "--output-uri", "file:///o"],
     "not found: /nonexistent/model.pt"),
])
def test_failures_exit_1_with_one_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                         reason: str) -> None:
    rc, result, err = run(tmp_path, capsys, *args)
    assert rc == EXIT_FAILED and result["decision"] == "Failed" and reason in result["reasons"][0]
    assert err == f"tritonops-retrain: {result['reasons'][0]}\n"
    assert json.loads((tmp_path / "termination-log").read_text())["reasons"] == result["reasons"]


def test_the_job_environment_gives_the_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITONOPS_MODEL_URI", "file:///m/3/model.pt")
    monkeypatch.setenv("TRITONOPS_DATA_URI", "file:///d.npz")
    monkeypatch.setenv("TRITONOPS_OUTPUT_URI", "https://host/store")
    monkeypatch.setenv("TRITONOPS_TERMINATION_LOG", str(tmp_path / "from-env"))
    assert main(["--scratch-dir", str(tmp_path)]) == EXIT_FAILED
    result = json.loads(capsys.readouterr().out)
    assert "cannot write the new version to https://" in result["reasons"][0]
    assert json.loads((tmp_path / "from-env").read_text())["decision"] == "Failed"


@pytest.mark.parametrize(("files", "expected"), [
    ({"cpu.max": "150000 100000\n"}, 2), ({"cpu.max": "50000 100000\n"}, 1), ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None), ({}, None),
])
def test_available_cpus_follows_the_cgroup_quota(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == min(cpus, expected or cpus)


def test_termination_message_fits_4_kib() -> None:
    result = Result("Rejected", [f"reason {i}: " + "é" * 3000 for i in range(20)], task="classification",
                    metric="accuracy", current={"accuracy": 0.5}, files={f"f{i}": "sha256:" + "0" * 64
                                                                           for i in range(100)})
    report = result.to_json()
    message = termination_message(report)
    assert len(message.encode()) <= 4096
    decoded = json.loads(message)
    assert decoded["decision"] == "Rejected" and decoded["reasons"][0].startswith("reason 0: éé")
    small = termination_message(Result("Accepted", ["ok"], version="2", finetuned={"auc": math.nan}).to_json())
    assert json.loads(small)["version"] == "2" and "files" not in json.loads(small)
    assert json.loads(small)["finetuned"] == {"auc": None}  # undefined metrics are null, never NaN
