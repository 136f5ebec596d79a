"""Retraining inputs: data formats, the holdout split, and the serving model read with the fetcher's code.

Also the helpers the other ``test_retrain_*`` modules share: the example model (``examples/model/make_model.py``
trained on its original blobs, once per process) and its data, original or shifted.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import tarfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from tests.runtime.conftest import HttpServer
from tritonops_runtime.errors import FetchError
from tritonops_runtime.retrain.config import RetrainConfig, RetrainError
from tritonops_runtime.retrain.data import fetch_model, load_data, parent_version, read_arrays, split
from tritonops_runtime.retrain.train import torch_threads

ROOT = Path(__file__).resolve().parents[2]
# Added to each blob's centre: the serving model, trained on the original blobs, drops to ~65% accuracy.
SHIFT = np.array([[1.5, -1.5, 1.0, 0.0], [-1.0, 0.0, -1.5, 1.5], [1.5, 1.0, -1.0, -1.5]], dtype=np.float32)


@functools.cache
def example() -> ModuleType:
    """``examples/model/make_model.py`` as a module."""
    spec = importlib.util.spec_from_file_location("tritonops_example_make_model", ROOT / "examples/model/make_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_classifier() -> torch.nn.Module:
    """A fresh eager instance of the example's classifier (the ``--model-class`` factory of the tests)."""
    model: torch.nn.Module = example().Classifier()
    return model


@functools.cache
def example_model_bytes() -> bytes:
    """The example TorchScript model, trained on the original blobs as make_model.py does."""
    x, y = example().synthetic_data(2000)
    with torch_threads(1):  # a tiny model: more threads only spin-wait
        model = example().train(x, y)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), buffer)
    return buffer.getvalue()


def blobs(n: int, seed: int, shifted: bool) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The example's blobs (``seed`` != the training seed), optionally shifted."""
    x, y = example().synthetic_data(n, seed)
    return (x + SHIFT[y] if shifted else x).astype(np.float32), y


def write_model(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(example_model_bytes())
    return path


def write_npz(path: Path, inputs: npt.NDArray[Any], labels: npt.NDArray[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, inputs=inputs, labels=labels)
    return path


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def cfg_for(tmp: Path, **overrides: Any) -> RetrainConfig:
    base: dict[str, Any] = {"model_uri": "file:///nonexistent/model.pt", "data_uri": "file:///nonexistent.npz",
                            "output_uri": f"file://{tmp}/store", "scratch": tmp / "scratch", "pvc_root": tmp / "pvc",
                            "threads": 1}
    return RetrainConfig(**{**base, **overrides})


# --- data formats ---------------------------------------------------------------------------------------

def test_npz_and_digest(tmp_path: Path) -> None:
    x, y = blobs(50, 3, shifted=False)
    path = write_npz(tmp_path / "d.npz", x, y)
    data = load_data(cfg_for(tmp_path, data_uri=f"file://{path}"), tmp_path)
    assert data.inputs.dtype == np.float32 and data.labels.dtype == np.int64
    assert np.array_equal(data.inputs, x) and np.array_equal(data.labels, y)
    assert data.digest == sha(path)


def test_csv_label_last(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("f0,f1,label\n0.5,1.5,2\n-1,2,0\n")
    data = read_arrays(path, "classification", "sha256:x")
    assert data.inputs.tolist() == [[0.5, 1.5], [-1.0, 2.0]] and data.labels.tolist() == [2, 0]
    regression = read_arrays(path, "regression", "sha256:x")
    assert regression.labels.dtype == np.float32 and regression.labels.tolist() == [2.0, 0.0]


def test_directory_concatenates_sorted_files(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "b.csv").write_text("a,b,y\n3,3,1\n")
    write_npz(tmp_path / "data" / "a.npz", np.array([[1, 1], [2, 2]], dtype=np.float32), np.array([0, 0]))
    (tmp_path / "data" / "notes.txt").write_text("ignored")
    data = load_data(cfg_for(tmp_path, data_uri=f"file://{tmp_path}/data"), tmp_path / "s")
    assert data.inputs[:, 0].tolist() == [1, 2, 3] and data.labels.tolist() == [0, 0, 1]
    lines = sorted(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in (tmp_path / "data").iterdir())
    assert data.digest == "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()  # the fetcher's


@pytest.mark.parametrize(("content", "message"), [
    ({"x": np.zeros((2, 2))}, "no array inputs or labels"),
    ({"inputs": np.zeros((2, 2)), "labels": np.array([0.5, 1])}, "whole numbers >= 0"),
    ({"inputs": np.zeros((2, 2)), "labels": np.array([-1, 1])}, "whole numbers >= 0"),
    ({"inputs": np.zeros((3, 2)), "labels": np.array([0, 1])}, "one row per sample"),
    ({"inputs": np.array([[np.nan, 1.0]]), "labels": np.array([0])}, "NaN or infinite"),
])
def test_bad_npz(tmp_path: Path, content: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **content)
    with pytest.raises(RetrainError, match=message):
        read_arrays(path, "classification", "")


def test_unknown_format_and_bad_csv(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(RetrainError, match="unknown data format"):
        read_arrays(tmp_path / "d.parquet", "classification", "")
    (tmp_path / "d.csv").write_text("a,b\n1,x\n")
    with pytest.raises(RetrainError, match=r"cannot read d\.csv as CSV"):
        read_arrays(tmp_path / "d.csv", "classification", "")


def test_data_over_http_uses_the_fetcher(tmp_path: Path, http_server: HttpServer) -> None:
    x, y = blobs(40, 5, shifted=True)
    path = write_npz(http_server.root / "new.npz", x, y)
    data = load_data(cfg_for(tmp_path, data_uri=f"{http_server.url}/new.npz"), tmp_path / "s")
    assert np.array_equal(data.labels, y) and data.digest == sha(path)
    with pytest.raises(FetchError, match="not found: HTTP 404"):
        load_data(cfg_for(tmp_path, data_uri=f"{http_server.url}/missing.npz"), tmp_path / "s")


# --- split ----------------------------------------------------------------------------------------------

def test_split_is_seeded_disjoint_and_complete() -> None:
    train, hold = split(101, 0.2, seed=7)
    assert len(hold) == 20 and len(train) == 81
    assert sorted([*train.tolist(), *hold.tolist()]) == list(range(101))
    again = split(101, 0.2, seed=7)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], hold)
    assert not np.array_equal(split(101, 0.2, seed=8)[1], hold)
    assert len(split(3, 0.01, seed=0)[1]) == 1  # at least one row held out
    with pytest.raises(RetrainError, match="too few"):
        split(1, 0.5, seed=0)


# --- the serving model ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("uri", "version"), [
    ("s3://models/clf/3/model.pt", "3"), ("file:///store/clf/12/", "12"), ("pvc://claim/clf/4", "4"),
    ("https://host/clf/model.pt", ""), ("s3://models", ""), ("file:///store/v3/model.pt", ""),
])
def test_parent_version(uri: str, version: str) -> None:
    assert parent_version(uri) == version


def test_model_from_an_archive_with_digest(tmp_path: Path) -> None:
    archive = tmp_path / "clf.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(write_model(tmp_path / "src" / "2" / "model.pt"), arcname="clf/2/model.pt")
    cfg = cfg_for(tmp_path, model_uri=f"file://{archive}", model_digest=sha(archive), parent_version="2")
    current = fetch_model(cfg, tmp_path / "s1")
    assert current.path.read_bytes() == example_model_bytes()
    assert (current.digest, current.version) == (sha(archive), "2")
    bad = cfg_for(tmp_path, model_uri=f"file://{archive}", model_digest="sha256:" + "0" * 64)
    with pytest.raises(FetchError, match="digest mismatch"):
        fetch_model(bad, tmp_path / "s2")


def test_shifted_blobs_hurt_the_serving_model() -> None:
    buffer = io.BytesIO(example_model_bytes())
    model = torch.jit.load(buffer)  # type: ignore[no-untyped-call]
    for shifted, low, high in ((False, 0.9, 1.0), (True, 0.5, 0.8)):
        x, y = blobs(1000, 11, shifted)
        with torch.no_grad():
            accuracy = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
        assert low < accuracy <= high
