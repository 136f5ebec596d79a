"""Helpers of the fetcher tests: a sandboxed fetch environment, digests, archives."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tritonops_runtime import contract as c
from tritonops_runtime import fetch

MODEL = b"not really torchscript, but bytes are bytes" * 10


@dataclass
class Env:
    """A fetch sandbox: repository, config file, termination log, PVC root."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    @property
    def repo(self) -> Path:
        return self.tmp / "models"

    @property
    def term(self) -> Path:
        return self.tmp / "termination-log"

    def clear(self) -> None:
        """Remove the laid-out model (a failed fetch leaves a previous one untouched)."""
        shutil.rmtree(self.repo / "clf")

    def run(self, uri: str, *extra: str) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of a fetch of ``uri``."""
        rc = fetch.main(["--uri", uri, *extra])
        out = self.capsys.readouterr()
        return rc, out.out, out.err

    def fail(self, uri: str, *extra: str) -> str:
        """The one-line failure reason (asserting the termination message and that nothing was laid out)."""
        rc, out, err = self.run(uri, *extra)
        assert rc == 1 and out == ""
        assert err.count("\n") == 1 and err.startswith("tritonops-fetch: ")
        assert self.term.read_text() == err.strip()
        assert not (self.repo / "clf").exists()
        assert not list(self.repo.glob(".clf.*")) if self.repo.exists() else True
        return err.strip()


def make_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Env:
    config = tmp_path / "config" / "config.pbtxt"
    config.parent.mkdir()
    config.write_text('name: "clf"\nbackend: "pytorch"\n')
    for var, value in {c.ENV_MODEL_NAME: "clf", c.ENV_MODEL_FORMAT: "torchscript", c.ENV_MODEL_VERSION: "1",
                       c.ENV_REPOSITORY: str(tmp_path / "models"), c.ENV_CONFIG_FILE: str(config),
                       c.ENV_PVC_ROOT: str(tmp_path / "pvc"), c.ENV_TERMINATION_LOG: str(tmp_path / "termination-log"),
                       "TMPDIR": str(tmp_path / "scratch")}.items():
        monkeypatch.setenv(var, value)
    for var in (c.ENV_STORAGE_URI, c.ENV_MODEL_DIGEST, c.ENV_BACKEND, c.ENV_MAX_BYTES):
        monkeypatch.delenv(var, raising=False)
    return Env(tmp_path, monkeypatch, capsys)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes = MODEL) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tar_gz(path: Path, members: dict[str, bytes], mutate: dict[str, tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in (mutate or {}).values():
            tar.addfile(info)
    return path


