"""Write an OCI image-layout tar from a root filesystem directory, deterministically.

The archive holds ``oci-layout``, ``index.json`` and ``blobs/sha256/<digest>`` (config, manifest and one
uncompressed layer), the format ``ctr images import`` reads. The index entry carries both
``io.containerd.image.name`` (what containerd names the image; it takes precedence) and
``org.opencontainers.image.ref.name`` set to the full reference (without ``io.containerd.image.name``, ctr
would prefix a partial ``ref.name`` with ``--base-name`` or ``import-<date>``).

The layer lists the tree in sorted order (a directory before its contents) with uid/gid/mode as on disk, no
user/group names, every mtime set to ``mtime`` (default 0), symlinks as symlinks and hard links as links to
their first path. Device nodes, FIFOs and sockets are left out (the runtime provides ``/dev``). The same tree
therefore always gives the same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
_CHUNK = 1 << 20
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config (what containerd applies to a container's process)."""

    entrypoint: tuple[str, ...]
    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = "/"
    cmd: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob: its OCI descriptor fields."""

    media_type: str
    digest: str
    size: int

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def architecture() -> str:
    """The OCI architecture name of this machine (amd64, arm64)."""
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def canonical_json(doc: dict[str, Any]) -> bytes:
    """JSON with sorted keys and no whitespace, so equal documents have equal digests."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _walk(root: str, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """(archive name, lstat) of every entry under ``root``, sorted, each directory before its contents."""
    with os.scandir(os.path.join(root, rel) if rel else root) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        path = f"{rel}/{name}" if rel else name
        st = os.lstat(os.path.join(root, path))
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, path)


def _tarinfo(root: str, name: str, st: os.stat_result, links: dict[tuple[int, int], str],
             mtime: int) -> tarfile.TarInfo | None:
    """The header for one entry (None for what a layer should not hold); records hard links in ``links``."""
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(os.path.join(root, name))
    elif stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
        else:
            if st.st_nlink > 1:
                links[key] = name
            info.size = st.st_size
    else:
        return None
    return info


def write_layer(rootfs: Path, out: Path, mtime: int = 0) -> Blob:
    """Write the layer tar of ``rootfs`` to ``out``; returns its blob (the digest is also the diff_id)."""
    root = str(rootfs)
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, st in _walk(root):
            info = _tarinfo(root, name, st, links, mtime)
            if info is None:
                continue
            if info.isreg():
                with open(os.path.join(root, name), "rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
    return Blob(LAYER_TYPE, _file_digest(out), out.stat().st_size)


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _bytes_blob(media_type: str, data: bytes) -> Blob:
    return Blob(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def image_config(config: ImageConfig, layer: Blob, comment: str) -> bytes:
    """The image config JSON (no creation time: it would change the digest of an identical image)."""
    process: dict[str, Any] = {"Entrypoint": list(config.entrypoint), "Env": list(config.env),
                               "WorkingDir": config.working_dir}
    if config.user:
        process["User"] = config.user
    if config.cmd:
        process["Cmd"] = list(config.cmd)
    if config.labels:
        process["Labels"] = dict(config.labels)
    return canonical_json({"architecture": architecture(), "os": "linux", "config": process,
                           "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
                           "history": [{"created_by": comment}]})


def _index(manifest: Blob, ref: str) -> bytes:
    entry = manifest.descriptor(platform={"architecture": architecture(), "os": "linux"},
                                annotations={CONTAINERD_NAME: ref, REF_NAME: ref})
    return canonical_json({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [entry]})


def _add(tar: tarfile.TarFile, name: str, data: bytes | Path) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o644, 0
    if isinstance(data, Path):
        info.size = data.stat().st_size
        with data.open("rb") as f:
            tar.addfile(info, f)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def write_archive(rootfs: Path, dest: Path, ref: str, config: ImageConfig, mtime: int = 0) -> str:
    """Write the OCI image-layout tar of ``rootfs`` named ``ref`` to ``dest``; returns the manifest digest.

    The layer is staged next to ``dest`` (``dest`` + ``.layer``) and removed afterwards.
    """
    staged = dest.with_name(dest.name + ".layer")
    try:
        layer = write_layer(rootfs, staged, mtime)
        config_json = image_config(config, layer, f"tritonops.devcluster: {ref}")
        config_blob = _bytes_blob(CONFIG_TYPE, config_json)
        manifest_json = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                                        "config": config_blob.descriptor(), "layers": [layer.descriptor()]})
        manifest = _bytes_blob(MANIFEST_TYPE, manifest_json)
        with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
            _add(tar, "index.json", _index(manifest, ref))
            for blob, data in ((config_blob, config_json), (manifest, manifest_json), (layer, staged)):
                _add(tar, "blobs/sha256/" + blob.digest.removeprefix("sha256:"), data)
    finally:
        staged.unlink(missing_ok=True)
    return manifest.digest


def read_index(archive: Path) -> dict[str, Any]:
    """``index.json`` of an OCI archive (written second by :func:`write_archive`, so this reads little)."""
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            if member.name in ("index.json", "./index.json"):
                f = tar.extractfile(member)
                if f is not None:
                    index: dict[str, Any] = json.loads(f.read())
                    return index
    raise ValueError(f"{archive}: no index.json")


def manifest_digest(archive: Path) -> str:
    """The digest of the (single) image manifest an OCI archive's index points to."""
    digest: str = read_index(archive)["manifests"][0]["digest"]
    return digest
