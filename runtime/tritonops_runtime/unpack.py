"""Safe unpacking of model archives (``.tar.gz``/``.tgz``/``.zip``) and copying of model directories.

Archives come from users and the network, so every member is checked before anything is written:
absolute paths, ``..`` components, links of any kind (symbolic or hard), device files and FIFOs are
rejected; members are written by us (regular files and directories only, modes 0644/0755, no owners), and
the decompressed bytes actually written are counted against ``max_bytes`` (a lying header cannot slip a
zip bomb through). The first offending member fails the whole fetch.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from tritonops_runtime.errors import FetchError

CHUNK = 1 << 20
MAX_MEMBERS = 100_000


def archive_kind(path: Path) -> str:
    """'tar', 'zip' or '' from the file's magic bytes (gzip-compressed or plain tar, zip)."""
    with path.open("rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b":
        return "tar"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return ""


def _safe_name(name: str) -> PurePosixPath:
    """The member's relative path, or FetchError if it is absolute or climbs out of the target."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise FetchError(f"unsafe archive member {name!r}: absolute paths are not allowed")
    rel = PurePosixPath(name)
    if any(part == ".." for part in rel.parts):
        raise FetchError(f"unsafe archive member {name!r}: '..' is not allowed")
    return rel


class _Budget:
    """Counts bytes written across one unpack against the limit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used, self.members = max_bytes, 0, 0

    def member(self) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise FetchError(f"archive has more than {MAX_MEMBERS} members")

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.max_bytes:
            raise FetchError(f"archive unpacks to more than {self.max_bytes} bytes (TRITONOPS_MAX_BYTES)")


def _write(src: IO[bytes], dest: Path, budget: _Budget, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            budget.take(len(chunk))
            out.write(chunk)
    dest.chmod(mode)


def _tar_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        if member.issym() or member.islnk():
            raise FetchError(f"unsafe archive member {member.name!r}: links are not allowed")
        if not (member.isfile() or member.isdir()):
            raise FetchError(f"unsafe archive member {member.name!r}: only regular files and directories "
                             "are allowed")
        yield member


def _untar(archive: Path, target: Path, budget: _Budget) -> None:
    with tarfile.open(archive, mode="r:*") as tar:
        for member in _tar_members(tar):
            budget.member()
            dest = target / _safe_name(member.name)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            src = tar.extractfile(member)
            if src is None:
                raise FetchError(f"cannot read archive member {member.name!r}")
            with src:
                _write(src, dest, budget, 0o755 if member.mode & 0o111 else 0o644)


def _unzip(archive: Path, target: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            budget.member()
            unix_mode = info.external_attr >> 16
            if stat.S_ISLNK(unix_mode):
                raise FetchError(f"unsafe archive member {info.filename!r}: links are not allowed")
            if stat.S_IFMT(unix_mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise FetchError(f"unsafe archive member {info.filename!r}: only regular files and directories "
                                 "are allowed")
            dest = target / _safe_name(info.filename)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as src:
                _write(src, dest, budget, 0o755 if unix_mode & 0o111 else 0o644)


def unpack(archive: Path, target: Path, max_bytes: int) -> None:
    """Unpack ``archive`` into the (new or empty) directory ``target`` after checking every member."""
    kind = archive_kind(archive)
    target.mkdir(parents=True, exist_ok=True)
    budget = _Budget(max_bytes)
    try:
        if kind == "tar":
            _untar(archive, target, budget)
        elif kind == "zip":
            _unzip(archive, target, budget)
        else:
            raise FetchError(f"{archive.name} is not a gzip-compressed tar or a zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise FetchError(f"corrupt archive {archive.name}: {err}") from None


def copy_tree(src: Path, target: Path, max_bytes: int, root: Path | None = None) -> None:
    """Copy directory ``src`` into ``target``; symlinks are followed only when they stay inside ``root``."""
    root = (root or src).resolve()
    budget = _Budget(max_bytes)
    for dirpath, _dirs, files in os.walk(src, followlinks=False):
        for name in sorted(files):
            path = Path(dirpath) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise FetchError(f"{path} is a symlink leaving {root}: not allowed")
            if not path.is_file():
                raise FetchError(f"{path} is not a regular file")
            budget.member()
            with path.open("rb") as f:
                _write(f, target / path.relative_to(src), budget, 0o755 if os.access(path, os.X_OK) else 0o644)
        for d in _dirs:
            if (Path(dirpath) / d).is_symlink():
                raise FetchError(f"{Path(dirpath) / d} is a symlinked directory: not allowed")


def copy_file(src: Path, dest: Path, max_bytes: int) -> None:
    """Copy one file, enforcing the size limit."""
    if src.stat().st_size > max_bytes:
        raise FetchError(f"{src.name} is {src.stat().st_size} bytes, over the limit of {max_bytes} "
                         "(TRITONOPS_MAX_BYTES)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(0o644)
