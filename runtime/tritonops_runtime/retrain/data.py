"""The run's inputs: the serving model and the new data, read with the fetcher's own code; the holdout split.

**The model** (``--model-uri``) is fetched exactly as the fetcher would fetch it for Triton
(:func:`tritonops_runtime.fetch.fetch` into a scratch repository): a ``model.pt`` file, a directory or a
``.tar.gz``/``.tgz``/``.zip`` archive holding one, from any of the fetcher's schemes, with the same size
limit, layout rules and digest check (``--model-digest``, the deployment's ``spec.model.digest``). It must be
TorchScript: fine-tuning needs torch parameters.

**The data** (``--data-uri``) is resolved with :func:`tritonops_runtime.sources.resolve` (same schemes, limit
and credentials) and may be:

- ``.npz``: arrays ``inputs`` (n, ...) and ``labels`` (n,) or (n, k); read with ``allow_pickle=False``;
- ``.csv``: a header line, then one row per sample, numbers only, the label in the last column;
- a directory (file:// or pvc://): every ``.npz``/``.csv`` file in it, in sorted path order, concatenated.

Inputs become float32. Classification labels must be whole numbers >= 0 (int64); regression targets become
float32. The data digest is the fetcher's: sha256 of the file's bytes, or of a directory's sorted
``sha256sum``-style listing.

**The holdout** is a seeded permutation (``numpy.random.default_rng(seed)``): the first
``round(n * fraction)`` rows of it (at least one) are held out, the others train. The same seed and data give
the same split on every run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tritonops_runtime import contract as c
from tritonops_runtime import fetch
from tritonops_runtime.errors import FetchError
from tritonops_runtime.retrain.config import RetrainConfig, RetrainError
from tritonops_runtime.sources import redact, resolve

DATA_SUFFIXES = (".npz", ".csv")
FORMAT = "torchscript"
_VERSION_SEGMENT = re.compile(r"^[1-9][0-9]*$")


@dataclass(frozen=True)
class Dataset:
    """Inputs, labels and the digest of where they came from."""

    inputs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.generic]
    digest: str

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, rows: npt.NDArray[np.int64]) -> Dataset:
        """The rows ``rows`` (same digest)."""
        return Dataset(self.inputs[rows], self.labels[rows], self.digest)


@dataclass(frozen=True)
class CurrentModel:
    """The serving model's file, its digest (as the fetcher reports it) and its version."""

    path: Path
    digest: str
    version: str


def parent_version(uri: str) -> str:
    """The version in a store URI such as ``s3://models/clf/3/model.pt`` or ``file:///store/clf/3``, or ''."""
    segments = [s for s in redact(uri).partition("://")[2].split("/")[1:] if s]
    if segments and segments[-1] == c.MODEL_FILES[FORMAT]:
        segments = segments[:-1]
    return segments[-1] if segments and _VERSION_SEGMENT.match(segments[-1]) else ""


def fetch_model(cfg: RetrainConfig, scratch: Path) -> CurrentModel:
    """Fetch the serving model into ``scratch`` with the fetcher (layout rules, size limit, digest check)."""
    version = cfg.parent_version or parent_version(cfg.model_uri) or "1"
    scratch.mkdir(parents=True, exist_ok=True)
    config_file = scratch / c.CONFIG_FILE
    config_file.write_text("# the retraining Job's scratch copy: nothing reads it\n")
    fetched = fetch.FetchConfig(uri=cfg.model_uri, name="current", format=FORMAT, version=version,
                                digest=cfg.model_digest, repository=scratch / "repository", config_file=config_file,
                                pvc_root=cfg.pvc_root, max_bytes=cfg.max_bytes, scratch=scratch)
    report = fetch.fetch(fetched)
    path = scratch / "repository" / "current" / version / c.MODEL_FILES[FORMAT]
    return CurrentModel(path, str(report["digest"]), cfg.parent_version or parent_version(cfg.model_uri))


def _read_npz(path: Path) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.generic]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("inputs", "labels") if k not in npz.files]
            if missing:
                raise RetrainError(f"{path.name}: no array {' or '.join(missing)} (found: "
                                   f"{', '.join(npz.files) or 'none'}); the .npz needs 'inputs' and 'labels'")
            return npz["inputs"], npz["labels"]
    except (OSError, ValueError) as err:
        raise RetrainError(f"cannot read {path.name} as .npz: {err}") from None


def _read_csv(path: Path) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.generic]]:
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as err:
        raise RetrainError(f"cannot read {path.name} as CSV (a header line, then numbers, label last): "
                           f"{err}") from None
    if table.shape[1] < 2:
        raise RetrainError(f"{path.name}: a CSV needs at least one feature column and the label column")
    return table[:, :-1], table[:, -1]


def _read_file(path: Path) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.generic]]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".csv":
        return _read_csv(path)
    raise RetrainError(f"unknown data format {path.name!r}: use .npz (inputs, labels) or .csv (header, label last)")


def _labels(raw: npt.NDArray[np.generic], task: str) -> npt.NDArray[np.generic]:
    if task == "regression":
        return np.asarray(raw, dtype=np.float32)
    values = np.asarray(raw)
    if values.ndim != 1:
        raise RetrainError(f"classification labels must be one class index per row, got shape {values.shape}")
    as_float = values.astype(np.float64)
    if not np.all(np.isfinite(as_float)) or np.any(as_float < 0) or np.any(as_float != np.round(as_float)):
        raise RetrainError("classification labels must be class indices: whole numbers >= 0")
    return as_float.astype(np.int64)


def read_arrays(path: Path, task: str, digest: str) -> Dataset:
    """Parse a data file, or every data file of a directory (sorted), into a Dataset."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES) \
        if path.is_dir() else [path]
    if not files:
        raise RetrainError(f"no .npz or .csv file in the data directory {path}")
    parts = [_read_file(p) for p in files]
    try:
        inputs = np.concatenate([np.asarray(x, dtype=np.float32) for x, _ in parts])
        labels = np.concatenate([np.asarray(y) for _, y in parts])
    except ValueError as err:
        raise RetrainError(f"the data files do not fit together: {err}") from None
    if inputs.ndim < 2 or inputs.shape[0] != labels.shape[0]:
        raise RetrainError(f"inputs {inputs.shape} and labels {labels.shape} must have one row per sample")
    if not np.all(np.isfinite(inputs)):
        raise RetrainError("the inputs contain NaN or infinite values")
    return Dataset(inputs, _labels(labels, task), digest)


def load_data(cfg: RetrainConfig, scratch: Path) -> Dataset:
    """Resolve ``cfg.data_uri`` with the fetcher's sources and parse it."""
    download_dir = scratch / "data"
    download_dir.mkdir(parents=True, exist_ok=True)
    src = resolve(cfg.data_uri, download_dir, cfg.pvc_root, cfg.max_bytes)
    digest = fetch.tree_sha256(src.path) if src.path.is_dir() else src.sha256 or fetch.file_sha256(src.path)
    return read_arrays(src.path, cfg.task, f"sha256:{digest}")


def split(n: int, fraction: float, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(train rows, holdout rows): a seeded permutation, the first ``round(n * fraction)`` (>= 1) held out."""
    holdout = max(1, round(n * fraction))
    if n - holdout < 1:
        raise RetrainError(f"{n} samples are too few to hold out {fraction:.0%} and still train")
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


__all__ = ["CurrentModel", "Dataset", "FetchError", "fetch_model", "load_data", "parent_version", "read_arrays",
           "split"]
