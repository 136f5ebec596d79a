"""Safe unpacking of model archives (``.tar.gz``/``.tgz``/``.zip``).

Archives come from users and the network, so every member is checked before anything is written:
absolute paths, ``..`` components, links of any kind (symbolic or hard), device files and FIFOs are
rejected; members are written by us (regular files and directories only, modes 0644/0755, no owners), and
the size limit is applied twice: a member whose declared size cannot fit fails before a byte of it is
written, and the decompressed bytes actually written are counted as they are written (a lying header cannot
slip a bomb through). The first offending member fails the whole fetch, and the target directory is removed.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tritonops_runtime.errors import FetchError
from tritonops_runtime.localfs import Budget, open_regular, write_stream


def archive_kind(path: Path) -> str:
    """'tar', 'zip' or '' from the file's magic bytes (gzip-compressed or plain tar, zip)."""
    with open_regular(path) as f:
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


def _tar_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        if member.issym() or member.islnk():
            raise FetchError(f"unsafe archive member {member.name!r}: links are not allowed")
        if not (member.isfile() or member.isdir()):
            raise FetchError(f"unsafe archive member {member.name!r}: only regular files and directories "
                             "are allowed")
        yield member


def _untar(archive: BinaryIO, target: Path, budget: Budget) -> None:
    with tarfile.open(fileobj=archive, mode="r:*") as tar:
        for member in _tar_members(tar):
            dest = target / _safe_name(member.name)
            budget.member(member.size if member.isfile() else 0)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            src = tar.extractfile(member)
            if src is None:
                raise FetchError(f"cannot read archive member {member.name!r}")
            with src:
                write_stream(src, dest, budget, 0o755 if member.mode & 0o111 else 0o644)


def _unzip(archive: BinaryIO, target: Path, budget: Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            unix_mode = info.external_attr >> 16
            if stat.S_ISLNK(unix_mode):
                raise FetchError(f"unsafe archive member {info.filename!r}: links are not allowed")
            if stat.S_IFMT(unix_mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise FetchError(f"unsafe archive member {info.filename!r}: only regular files and directories "
                                 "are allowed")
            dest = target / _safe_name(info.filename)
            budget.member(0 if info.is_dir() else info.file_size)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as src:
                write_stream(src, dest, budget, 0o755 if unix_mode & 0o111 else 0o644)


def unpack(archive: Path, target: Path, max_bytes: int) -> None:
    """Unpack ``archive`` into the new directory ``target`` after checking every member; removed on failure."""
    kind = archive_kind(archive)
    if kind not in ("tar", "zip"):
        raise FetchError(f"{archive.name} is not a gzip-compressed tar or a zip archive")
    budget = Budget(max_bytes, f"the content unpacked from {archive.name}")
    target.mkdir(parents=True)
    try:
        with open_regular(archive) as f:
            (_untar if kind == "tar" else _unzip)(f, target, budget)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as err:
        shutil.rmtree(target, ignore_errors=True)
        raise FetchError(f"corrupt archive {archive.name}: {err}") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
