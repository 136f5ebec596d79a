"""tritonops-fetch: sources, layout, digests, archive safety, limits and the one-line failure report."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.runtime.conftest import HttpServer
from tests.runtime.support import MODEL, Env, sha, tar_gz, write
from tritonops_runtime import contract as c
from tritonops_runtime import fetch
from tritonops_runtime.errors import FetchError
from tritonops_runtime.unpack import unpack


def test_single_file_layout_and_report(env: Env) -> None:
    src = write(env.tmp / "src" / "anything.bin")
    rc, out, err = env.run(src.as_uri())
    assert rc == 0, err
    report = json.loads(out)
    assert report["digest"] == sha(MODEL) and report["source"] == "file" and not report["verified"]
    assert (env.repo / "clf" / "1" / "model.pt").read_bytes() == MODEL
    assert (env.repo / "clf" / "config.pbtxt").read_text().startswith('name: "clf"')
    assert json.loads((env.repo / "clf" / c.FETCHED_FILE).read_text()) == report
    assert json.loads(env.term.read_text())["digest"] == report["digest"]
    assert sorted(report["files"]) == sorted(["1/model.pt", "config.pbtxt", c.FETCHED_FILE])


def test_digest_verified_and_mismatch(env: Env) -> None:
    src = write(env.tmp / "model.pt")
    rc, out, _ = env.run(src.as_uri(), "--digest", sha(MODEL))
    assert rc == 0 and json.loads(out)["verified"]
    env.clear()
    reason = env.fail(src.as_uri(), "--digest", sha(b"other"))
    assert f"digest mismatch for {src.as_uri()}: expected {sha(b'other')}, found {sha(MODEL)}" in reason


def test_directory_source_and_tree_digest(env: Env) -> None:
    write(env.tmp / "dir" / "model.pt")
    write(env.tmp / "dir" / "labels.txt", b"a\nb\n")
    write(env.tmp / "dir" / "config.pbtxt", b"ignored")
    rc, out, _ = env.run((env.tmp / "dir").as_uri())
    assert rc == 0
    assert (env.repo / "clf" / "1" / "labels.txt").read_bytes() == b"a\nb\n"
    files = [("model.pt", MODEL), ("labels.txt", b"a\nb\n"), ("config.pbtxt", b"ignored")]
    listing = "".join(sorted(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files))
    assert json.loads(out)["digest"] == sha(listing.encode())
    assert (env.repo / "clf" / "config.pbtxt").read_text().startswith('name: "clf"')


def test_pvc_uri_maps_to_pvc_root(env: Env) -> None:
    write(env.tmp / "pvc" / "models" / "clf" / "model.pt")
    rc, _, err = env.run("pvc://my-claim/models/clf/model.pt")
    assert rc == 0, err
    assert (env.repo / "clf" / "1" / "model.pt").read_bytes() == MODEL
    env.clear()
    assert "'..' is not allowed" in env.fail("pvc://my-claim/../etc/passwd", "--name", "clf")


def test_http_file_and_404(env: Env, http_server: HttpServer) -> None:
    write(http_server.root / "clf" / "model.pt")
    rc, out, _ = env.run(f"{http_server.url}/clf/model.pt?token=secret", "--version", "7")
    assert rc == 0 and (env.repo / "clf" / "7" / "model.pt").read_bytes() == MODEL
    assert "secret" not in out
    env.clear()
    reason = env.fail(f"{http_server.url}/clf/missing.pt?token=secret")
    assert reason == f"tritonops-fetch: not found: HTTP 404 fetching {http_server.url}/clf/missing.pt"


@pytest.mark.parametrize("layout", ["top", "versioned", "wrapped", "renamed"])
def test_http_archive_layouts(env: Env, http_server: HttpServer, layout: str) -> None:
    members = {"top": {"model.pt": MODEL, "vocab.txt": b"v"}, "versioned": {"1/model.pt": MODEL, "2/model.pt": b"x"},
               "wrapped": {"clf/model.pt": MODEL, "clf/config.pbtxt": b"theirs"},
               "renamed": {"clf/weights/best.pt": MODEL, "clf/README": b"r"}}[layout]
    archive = tar_gz(http_server.root / "clf.tar.gz", members)
    rc, out, err = env.run(f"{http_server.url}/clf.tar.gz", "--digest", sha(archive.read_bytes()))
    assert rc == 0, err
    assert json.loads(out)["source"] == "archive"
    assert (env.repo / "clf" / "1" / "model.pt").read_bytes() == MODEL
    assert (env.repo / "clf" / "config.pbtxt").read_text().startswith('name: "clf"')


def test_zip_archive_onnx(env: Env) -> None:
    with zipfile.ZipFile(env.tmp / "m.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("export/model.onnx", MODEL)
    rc, _, err = env.run((env.tmp / "m.zip").as_uri(), "--format", "onnx")
    assert rc == 0, err
    assert (env.repo / "clf" / "1" / "model.onnx").read_bytes() == MODEL


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(("members", "links", "expected"), [
    ({"model.pt": MODEL}, {"s": _link("link.pt", tarfile.SYMTYPE, "/etc/passwd")}, "links are not allowed"),
    ({"model.pt": MODEL}, {"h": _link("hard.pt", tarfile.LNKTYPE, "model.pt")}, "links are not allowed"),
    ({"model.pt": MODEL}, {"d": _link("dev", tarfile.CHRTYPE, "")}, "only regular files and directories"),
    ({"model.pt": MODEL}, {"f": _link("fifo", tarfile.FIFOTYPE, "")}, "only regular files and directories"),
])
def test_malicious_tar_rejected(env: Env, members: dict[str, bytes], links: dict[str, tarfile.TarInfo],
                                expected: str) -> None:
    archive = tar_gz(env.tmp / "bad.tgz", members, links)
    assert expected in env.fail(archive.as_uri())
    assert not (env.repo / "clf").exists() and not list(env.tmp.rglob("link.pt")) + list(env.tmp.rglob("hard.pt"))


# Member names that leave the extraction directory; ABS stands for an absolute path under the test's tmp_path
# (never a system path: the tests may run as root, and an unprotected write must stay observable and harmless).
TRAVERSALS = [("../evil.pt", "'..' is not allowed"), ("a/../../evil.pt", "'..' is not allowed"),
              ("./a/b/../../../../evil.pt", "'..' is not allowed"), ("ABS", "absolute paths are not allowed")]


def _traversal_case(tmp: Path, name: str) -> tuple[Path, str, Path]:
    """(extraction dir, member name, where the member would land if nothing stopped it)."""
    target = tmp / "x" / "y" / "content"
    member = str(tmp / "abs" / "evil.pt") if name == "ABS" else name
    landing = Path(os.path.normpath(target / member))
    assert not landing.is_relative_to(target)  # the case really escapes
    landing.parent.mkdir(parents=True, exist_ok=True)  # so that an unprotected write would succeed
    return target, member, landing


@pytest.mark.parametrize(("name", "expected"), TRAVERSALS)
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_traversal_member_never_lands(tmp_path: Path, kind: str, name: str, expected: str) -> None:
    target, member, landing = _traversal_case(tmp_path, name)
    if kind == "tar":
        archive = tar_gz(tmp_path / "bad.tgz", {"model.pt": MODEL, member: MODEL})
    else:
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("model.pt", MODEL)
            zf.writestr(member, MODEL)
    with pytest.raises(FetchError, match=f"unsafe archive member {re.escape(repr(member))}: {expected}"):
        unpack(archive, target, 1 << 20)
    assert not landing.exists()


@pytest.mark.parametrize(("name", "expected"), TRAVERSALS)
def test_traversal_member_fails_the_fetch(env: Env, name: str, expected: str) -> None:
    # With model.pt beside it, an unprotected unpack would succeed: the fetch must fail and write nothing.
    _, member, _ = _traversal_case(env.tmp, name)
    archive = tar_gz(env.tmp / "bad.tgz", {"model.pt": MODEL, member: MODEL})
    assert expected in env.fail(archive.as_uri())
    assert list(env.tmp.rglob("evil.pt")) == []


def test_malicious_zip_rejected(env: Env) -> None:
    with zipfile.ZipFile(env.tmp / "link.zip", "w") as zf:
        info = zipfile.ZipInfo("model.pt")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    assert "links are not allowed" in env.fail((env.tmp / "link.zip").as_uri())


def test_size_limits(env: Env, http_server: HttpServer) -> None:
    bomb = env.tmp / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.pt", b"\0" * 2_000_000)
    assert bomb.stat().st_size < 50_000
    assert "the content unpacked from bomb.zip exceeds the size limit of 100000 bytes (97.7 KiB): raise " \
        "spec.model.maxSize (TRITONOPS_MAX_BYTES)" in env.fail(bomb.as_uri(), "--max-bytes", "100000")
    write(http_server.root / "big.pt", b"x" * 5000)
    env.monkeypatch.setenv(c.ENV_MAX_BYTES, "4096")
    assert "big.pt is 5000 bytes, over the size limit of 4096 bytes" in env.fail(f"{http_server.url}/big.pt")
    assert "big.pt is 5000 bytes, over the size limit of 4096" in env.fail((http_server.root / "big.pt").as_uri())


@pytest.mark.parametrize(("args", "expected"), [
    (["--uri", "ftp://host/model.pt"], "unsupported storage URI scheme ftp://: use one of file://"),
    (["--uri", "file:///nonexistent/model.pt"], "not found: /nonexistent/model.pt"),
    (["--uri", "file:///x", "--format", "keras"], "unknown model format 'keras'"),
    (["--uri", "file:///x", "--digest", "md5:abc"], "bad digest 'md5:abc'"),
    (["--uri", "file:///x", "--backend", "PythonWrapper", "--format", "tensorrt"], "cannot serve tensorrt"),
    (["--uri", "file:///x", "--max-bytes", "lots"], "bad TRITONOPS_MAX_BYTES 'lots'"),
    (["--bogus"], "bad arguments: unrecognized arguments: --bogus"),
    (["--uri", ""], "no storage URI: set TRITONOPS_STORAGE_URI or --uri"),
])
def test_bad_settings(env: Env, args: list[str], expected: str) -> None:
    rc = fetch.main(args)
    err = env.capsys.readouterr().err
    assert rc == 1 and expected in err and err.count("\n") == 1
    assert env.term.read_text() == err.strip()


def test_missing_config_and_missing_model_file(env: Env) -> None:
    write(env.tmp / "dir" / "a.txt")
    assert "no model.pt in the fetched content" in env.fail((env.tmp / "dir").as_uri())
    env.monkeypatch.setenv(c.ENV_CONFIG_FILE, str(env.tmp / "nope.pbtxt"))
    assert "config file" in env.fail((env.tmp / "dir").as_uri())


def test_env_only_python_wrapper_and_refetch(env: Env) -> None:
    src = write(env.tmp / "model.onnx")
    env.monkeypatch.setenv(c.ENV_STORAGE_URI, src.as_uri())
    env.monkeypatch.setenv(c.ENV_MODEL_FORMAT, "onnx")
    env.monkeypatch.setenv(c.ENV_BACKEND, c.BACKEND_PYTHON_WRAPPER)
    (env.repo / ".clf.leftover").mkdir(parents=True)
    write(env.repo / "clf" / "1" / "stale.bin")
    assert fetch.main([]) == 0
    version = env.repo / "clf" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model.py"]
    assert "class TritonPythonModel" in (version / "model.py").read_text()
    assert not (env.repo / ".clf.leftover").exists()


def test_console_script_subprocess(env: Env, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "tritonops_runtime.fetch", "--uri", "s4://x/y"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("tritonops-fetch: unsupported storage URI scheme s4://")
    assert env.term.read_text() == proc.stderr.strip()
