"""Local files: opened without following links, written under a size budget, copied, looked up inside a root.

- :func:`open_regular` opens a regular file with ``O_NOFOLLOW`` (a link or a FIFO swapped in is refused);
  :func:`create_new` creates a file that must not exist yet (``O_EXCL``, so never through a planted link).
- :class:`Budget` counts the bytes written by one step (a copy, an unpack) against the size limit, and
  :func:`write_stream` writes through it, removing the partial file when the limit (or anything) stops it.
- :func:`path_beneath` maps ``pvc://<claim>/<path>`` into the claim's root: no symbolic link anywhere in the
  path, and the resolved path must stay inside the root.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from tritonops_runtime.errors import FetchError, size_limit_error

CHUNK = 1 << 20
MAX_MEMBERS = 100_000


@dataclass(frozen=True)
class Download:
    """A fetched source: a local path (file or directory) and, for downloaded files, their sha256 and size."""

    path: Path
    sha256: str = ""
    size: int = 0


class Reader(Protocol):
    """Anything with ``read(n)``: a file, an archive member, a hashed HTTP response."""

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes; empty at the end."""
        ...


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file and not a symbolic link (``O_NOFOLLOW``)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO must not hang us
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FetchError(f"not found: {path}") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise FetchError(f"{path} is a symbolic link: not followed") from None
        raise FetchError(f"cannot open {path}: {err.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FetchError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def create_new(path: Path, mode: int = 0o644) -> BinaryIO:
    """A new file for writing; fails if anything (a file, a link) is already at ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    return os.fdopen(fd, "wb")


class Budget:
    """Bytes (and files) written by one step, against the size limit; ``subject`` names the step in messages."""

    def __init__(self, max_bytes: int, subject: str) -> None:
        self.max_bytes, self.subject, self.used, self.members = max_bytes, subject, 0, 0

    def member(self, declared: int = 0) -> None:
        """Count one more file; fail before writing it when its declared size cannot fit."""
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise FetchError(f"{self.subject} has more than {MAX_MEMBERS} files")
        if self.used + declared > self.max_bytes:
            raise size_limit_error(self.subject, self.max_bytes)

    def take(self, n: int) -> None:
        """Count ``n`` more bytes about to be written; fail as soon as the total passes the limit."""
        self.used += n
        if self.used > self.max_bytes:
            raise size_limit_error(self.subject, self.max_bytes)


def write_stream(src: Reader, dest: Path, budget: Budget, mode: int = 0o644) -> None:
    """Copy ``src`` into the new file ``dest`` under ``budget``; no partial ``dest`` is left on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and not dest.is_symlink():
        dest.unlink()  # an archive naming a file twice: the later member wins, as with tar
    try:
        with create_new(dest) as out:
            while chunk := src.read(CHUNK):
                budget.take(len(chunk))
                out.write(chunk)
        dest.chmod(mode)
    except FileExistsError:
        raise FetchError(f"cannot write {dest.name}: a directory or link of that name is in the way") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _executable(path: Path) -> int:
    return 0o755 if os.access(path, os.X_OK) else 0o644


def copy_file(src: Path, dest: Path, max_bytes: int) -> None:
    """Copy one regular file (never through a link) into the new file ``dest``, enforcing the size limit."""
    with open_regular(src) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise size_limit_error(str(src), max_bytes, size)
        write_stream(f, dest, Budget(max_bytes, str(src)))


def _copy_tree(src: Path, target: Path, root: Path, budget: Budget) -> None:
    for dirpath, dirs, files in os.walk(src, followlinks=False):
        for d in dirs:
            if (Path(dirpath) / d).is_symlink():
                raise FetchError(f"{Path(dirpath) / d} is a symlinked directory: not allowed")
        for name in sorted(files):
            path = Path(dirpath) / name
            if path.is_symlink():
                if not path.resolve().is_relative_to(root):
                    raise FetchError(f"{path} is a symlink leaving {root}: not allowed")
                path = path.resolve()
            with open_regular(path) as f:
                budget.member(os.fstat(f.fileno()).st_size)
                write_stream(f, target / Path(dirpath, name).relative_to(src), budget, _executable(path))


def copy_tree(src: Path, target: Path, max_bytes: int, root: Path | None = None) -> None:
    """Copy directory ``src`` into the new directory ``target``; file symlinks are followed only inside ``root``.

    Symlinked directories are refused; on failure ``target`` is removed.
    """
    root = (root or src).resolve()
    target.mkdir(parents=True)
    try:
        _copy_tree(src, target, root, Budget(max_bytes, f"the directory {src}"))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def path_beneath(root: Path, rel: str, label: str) -> Path:
    """``root/rel`` after checking that no component of ``rel`` is a symbolic link and that it stays in ``root``.

    ``label`` (the URI) names the request in messages. A missing component ends the check: the caller reports
    the path as not found.
    """
    root = root.resolve()
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FetchError(f"refusing {label}: '..' is not allowed")
    current = root
    for i, part in enumerate(parts):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return root.joinpath(*parts)
        if stat.S_ISLNK(mode):
            raise FetchError(f"refusing {label}: {'/'.join(parts[:i + 1])} is a symbolic link (links in pvc:// "
                             "paths are not followed)")
    if not current.resolve(strict=True).is_relative_to(root):
        raise FetchError(f"refusing {label}: it resolves outside the claim")
    return current
