"""The size limit (TRITONOPS_MAX_BYTES, spec.model.maxSize) on downloads, copies and unpacked archives.

Every over-limit failure names the limit and how to raise it, stops early, and leaves no partial file behind
(in the scratch directory, the repository or the target directory of the step that failed).
"""

from __future__ import annotations

import io
import random
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime.conftest import HttpServer
from tests.runtime.servers import Recorder, Route
from tests.runtime.support import MODEL, Env, sha, tar_gz, write
from tritonops_runtime import contract as c
from tritonops_runtime.errors import FetchError
from tritonops_runtime.localfs import copy_tree
from tritonops_runtime.sources import download
from tritonops_runtime.unpack import unpack

LIMIT = 10 * 1024 * 1024
RAISE = "raise spec.model.maxSize (TRITONOPS_MAX_BYTES) to allow a larger model"


class _Zeros(io.RawIOBase):
    """An endless stream of zero bytes (a member's data without holding it in memory)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        view[:] = bytes(len(view))
        return len(view)


def _tar(path: Path, sizes: dict[str, int]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, size in sizes.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BufferedReader(_Zeros()))
    return path


def _assert_nothing_left(env: Env) -> None:
    scratch = env.tmp / "scratch"
    assert not scratch.exists() or list(scratch.iterdir()) == []
    assert not env.repo.exists() or list(env.repo.iterdir()) == []


def test_tar_gz_bomb_fails_fast(env: Env, http_server: HttpServer) -> None:
    bomb = _tar(http_server.root / "bomb.tar.gz", {"model.pt": 200 * 1024 * 1024})
    assert bomb.stat().st_size < 1024 * 1024
    for uri in (bomb.as_uri(), f"{http_server.url}/bomb.tar.gz"):
        started = time.monotonic()
        reason = env.fail(uri, "--max-bytes", str(LIMIT), "--digest", sha(bomb.read_bytes()))
        assert time.monotonic() - started < 5
        assert reason == ("tritonops-fetch: the content unpacked from bomb.tar.gz exceeds the size limit of "
                          f"10485760 bytes (10 MiB): {RAISE}")
        _assert_nothing_left(env)


def test_plain_archive_over_the_limit(env: Env, http_server: HttpServer, serve: Callable[[], Recorder]) -> None:
    # An ordinary archive of incompressible data, a little over the limit both packed and unpacked.
    data = random.Random(7).randbytes(LIMIT + 100_000)
    archive = tar_gz(http_server.root / "big.tgz", {"model.pt": data})
    size = archive.stat().st_size
    assert size > LIMIT
    reason = env.fail(f"{http_server.url}/big.tgz", "--max-bytes", str(LIMIT))
    assert reason == (f"tritonops-fetch: {http_server.url}/big.tgz is {size} bytes, over the size limit of "
                      f"{LIMIT} bytes (10 MiB): {RAISE}")
    _assert_nothing_left(env)
    unsized = serve()
    unsized.routes["/big.tgz"] = Route(body=archive.read_bytes(), length=False)
    reason = env.fail(f"{unsized.url}/big.tgz", "--max-bytes", str(LIMIT))
    assert reason == f"tritonops-fetch: {unsized.url}/big.tgz exceeds the size limit of {LIMIT} bytes (10 MiB): {RAISE}"
    _assert_nothing_left(env)
    reason = env.fail(archive.as_uri(), "--max-bytes", str(LIMIT))  # read in place: only unpacking writes
    assert reason == (f"tritonops-fetch: the content unpacked from big.tgz exceeds the size limit of {LIMIT} bytes "
                      f"(10 MiB): {RAISE}")
    _assert_nothing_left(env)


def test_copies_over_the_limit(env: Env) -> None:
    write(env.tmp / "dir" / "model.pt", b"x" * 3000)
    write(env.tmp / "dir" / "labels.txt", b"y" * 3000)
    reason = env.fail((env.tmp / "dir").as_uri(), "--max-bytes", "4096")
    assert reason == (f"tritonops-fetch: the directory {env.tmp / 'dir'} exceeds the size limit of 4096 bytes "
                      f"(4 KiB): {RAISE}")
    env.monkeypatch.setenv(c.ENV_MAX_BYTES, "2048")
    reason = env.fail((env.tmp / "dir" / "model.pt").as_uri())
    assert reason == (f"tritonops-fetch: {env.tmp / 'dir' / 'model.pt'} is 3000 bytes, over the size limit of "
                      f"2048 bytes (2 KiB): {RAISE}")
    _assert_nothing_left(env)


def test_default_limit_is_20_gib() -> None:
    assert c.DEFAULT_MAX_BYTES == 20 * 1024**3


def test_partial_download_removed(tmp_path: Path, serve: Callable[[], Recorder]) -> None:
    server = serve()
    server.routes["/m.pt"] = Route(body=b"z" * 300_000, length=False)
    dest = tmp_path / "m.pt"
    with pytest.raises(FetchError, match="exceeds the size limit of 100000 bytes"):
        download(f"{server.url}/m.pt", {}, dest, 100_000)
    assert not dest.exists()


def test_partial_unpack_removed(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "two.tgz", {"a/model.pt": 600_000, "a/b.bin": 600_000})
    target = tmp_path / "out" / "content"
    with pytest.raises(FetchError, match=r"unpacked from two\.tgz exceeds the size limit of 1000000 bytes"):
        unpack(archive, target, 1_000_000)
    assert not target.exists()
    write(tmp_path / "tree" / "a.bin", b"a" * 600)
    write(tmp_path / "tree" / "b.bin", b"b" * 600)
    with pytest.raises(FetchError, match="exceeds the size limit of 1000 bytes"):
        copy_tree(tmp_path / "tree", target, 1000)
    assert not target.exists()


def test_stale_scratch_of_a_killed_fetch_removed(env: Env) -> None:
    stale = write(env.tmp / "scratch" / "tritonops-fetch-clf=killed" / "model.tgz", b"x" * 1000)
    other = write(env.tmp / "scratch" / "tritonops-fetch-clf-big=running" / "model.tgz", b"x")
    rc, _, err = env.run(write(env.tmp / "model.pt", MODEL).as_uri())
    assert rc == 0, err
    assert not stale.exists() and other.exists()
