"""The OCI archive writer behind the local node's images: deterministic, named for ctr, faithful to the tree."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tritonops.devcluster import images, oci

REF = "ghcr.io/tritonops/tritonops-runtime:0.1.0"
CONFIG = oci.ImageConfig(("tritonops-fetch",), ("PATH=/opt/venv/bin:/usr/bin",), "1000:1000",
                         labels={"org.opencontainers.image.title": "t"})


def make_rootfs(root: Path) -> Path:
    (root / "opt" / "venv" / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    tool = root / "opt" / "venv" / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    secret = root / "etc" / "secret"
    secret.write_text("s")
    secret.chmod(0o640)
    (root / "opt" / "venv" / "bin" / "python3").symlink_to("/usr/bin/python3")
    os.link(tool, root / "opt" / "venv" / "bin" / "tool-again")
    return root


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: (tar.extractfile(m) or io.BytesIO()).read() for m in tar if m.isfile()}


def blob(files: dict[str, bytes], digest: str) -> bytes:
    return files["blobs/sha256/" + digest.removeprefix("sha256:")]


def layer_of(archive: Path) -> tuple[dict[str, Any], list[tarfile.TarInfo], dict[str, bytes]]:
    """(manifest and config, layer entries in order, regular files' contents)."""
    files = members(archive)
    manifest = json.loads(blob(files, oci.manifest_digest(archive)))
    config = json.loads(blob(files, manifest["config"]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(blob(files, manifest["layers"][0]["digest"]))) as tar:
        entries = tar.getmembers()
        contents = {m.name: (tar.extractfile(m) or io.BytesIO()).read() for m in entries if m.isfile()}
    return {"manifest": manifest, "config": config}, entries, contents


def test_same_tree_gives_same_digests_whatever_the_mtimes(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    first = oci.write_archive(root, tmp_path / "a.tar", REF, CONFIG)
    os.utime(root / "etc" / "secret", (time.time() + 3600, time.time() + 3600))
    second = oci.write_archive(root, tmp_path / "b.tar", REF, CONFIG)
    assert first == second == oci.manifest_digest(tmp_path / "a.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert not list(tmp_path.glob("*.layer"))
    (root / "etc" / "secret").write_text("changed")
    assert oci.write_archive(root, tmp_path / "c.tar", REF, CONFIG) != first


def test_index_names_the_image_for_containerd(tmp_path: Path) -> None:
    archive = tmp_path / "img.tar"
    oci.write_archive(make_rootfs(tmp_path / "rootfs"), archive, REF, CONFIG)
    files = members(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"] == {oci.CONTAINERD_NAME: REF, oci.REF_NAME: REF}
    assert entry["mediaType"] == oci.MANIFEST_TYPE
    assert entry["platform"] == {"architecture": oci.architecture(), "os": "linux"}


def test_config_and_manifest(tmp_path: Path) -> None:
    archive = tmp_path / "img.tar"
    oci.write_archive(make_rootfs(tmp_path / "rootfs"), archive, REF, CONFIG)
    docs, _, _ = layer_of(archive)
    layer = docs["manifest"]["layers"][0]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    config = docs["config"]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    assert config["config"]["Entrypoint"] == ["tritonops-fetch"]
    assert config["config"]["User"] == "1000:1000"
    assert config["config"]["Env"] == ["PATH=/opt/venv/bin:/usr/bin"]
    assert config["config"]["WorkingDir"] == "/"


def test_layer_keeps_symlinks_hardlinks_and_modes(tmp_path: Path) -> None:
    archive = tmp_path / "img.tar"
    oci.write_archive(make_rootfs(tmp_path / "rootfs"), archive, REF, CONFIG)
    _, entries, contents = layer_of(archive)
    by_name = {m.name: m for m in entries}
    assert [m.name for m in entries] == ["etc", "etc/secret", "opt", "opt/venv", "opt/venv/bin",
                                         "opt/venv/bin/python3", "opt/venv/bin/tool", "opt/venv/bin/tool-again",
                                         "tmp"]
    link = by_name["opt/venv/bin/python3"]
    assert link.issym() and link.linkname == "/usr/bin/python3"
    hard = by_name["opt/venv/bin/tool-again"]
    assert hard.islnk() and hard.linkname == "opt/venv/bin/tool"
    assert by_name["opt/venv/bin/tool"].mode == 0o755
    assert by_name["etc/secret"].mode == 0o640
    assert by_name["tmp"].mode == 0o1777 and by_name["tmp"].isdir()
    assert {(m.mtime, m.uname, m.gname) for m in entries} == {(0, "", "")}
    assert {(m.uid, m.gid) for m in entries} == {(os.getuid(), os.getgid())}
    assert contents["opt/venv/bin/tool"] == b"#!/bin/sh\necho hi\n"


def test_special_files_are_left_out(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    os.mkfifo(root / "tmp" / "fifo")
    oci.write_archive(root, tmp_path / "img.tar", REF, CONFIG)
    _, entries, _ = layer_of(tmp_path / "img.tar")
    assert "tmp/fifo" not in {m.name for m in entries}


def test_cached_images_are_reused_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "images").mkdir()
    for recipe in images.recipes():
        (tmp_path / "images" / f"{recipe.short}-{images.recipe_key(recipe)}.tar").write_bytes(b"")

    def no_build(*args: object) -> None:
        raise AssertionError("a cached image was rebuilt")

    monkeypatch.setattr(images, "_build", no_build)
    t0 = time.monotonic()
    built = images.build_images(tmp_path, log=lambda _: None)
    assert time.monotonic() - t0 < 1.0
    assert [i.name for i in built] == [images.PAUSE_IMAGE, images.RUNTIME_IMAGE, images.TRITON_IMAGE]
    assert all(i.archive.parent == tmp_path / "images" for i in built)
    assert images.RUNTIME_IMAGE == "ghcr.io/tritonops/tritonops-runtime:0.1.0"
