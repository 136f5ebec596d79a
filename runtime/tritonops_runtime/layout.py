"""Find the model inside fetched content (a directory or an unpacked archive) and place it as Triton wants.

Accepted shapes of the content, tried in order (``model.pt`` stands for the format's file name):

1. ``model.pt`` at the top: the whole top level becomes the version directory (side files come along);
2. ``<version>/model.pt``: that version directory is used (other version directories are ignored);
3. a single top-level directory (``classifier/...``, as ``tar czf x.tgz classifier`` makes): look inside it;
4. exactly one file with the format's extension anywhere (``*.pt``): it becomes ``model.pt``.

A ``config.pbtxt`` inside the content is ignored: the operator's rendered config is authoritative.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tritonops_runtime import contract as c
from tritonops_runtime.errors import FetchError

# Extensions accepted by rule 4 for each format.
EXTENSIONS = {
    "torchscript": (".pt", ".pth", ".torchscript"),
    "onnx": (".onnx",),
    "tensorrt": (".plan", ".engine"),
    "python": (".py",),
}


def _move_children(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        if child.name != c.CONFIG_FILE:
            shutil.move(str(child), str(dest / child.name))


def _find(content: Path, fmt: str, version: str, depth: int = 0) -> tuple[Path, bool]:
    """(path, is_directory) of what becomes the version directory or the model file."""
    file_name = c.MODEL_FILES[fmt]
    if (content / file_name).is_file():
        return content, True
    if (content / version / file_name).is_file():
        return content / version, True
    entries = [e for e in content.iterdir() if e.name != c.CONFIG_FILE]
    if depth == 0 and len(entries) == 1 and entries[0].is_dir():
        return _find(entries[0], fmt, version, depth + 1)
    candidates = sorted(p for p in content.rglob("*") if p.is_file() and p.suffix in EXTENSIONS[fmt])
    if len(candidates) == 1:
        return candidates[0], False
    found = ", ".join(p.relative_to(content).as_posix() for p in candidates[:5]) or "none"
    raise FetchError(f"no {file_name} in the fetched content: expected {file_name} at the top level, "
                     f"{version}/{file_name}, or exactly one {'/'.join('*' + e for e in EXTENSIONS[fmt])} "
                     f"file (found: {found})")


def arrange(content: Path, version_dir: Path, fmt: str, version: str) -> None:
    """Move the model out of ``content`` into ``version_dir`` as ``model.<ext>``; ``content`` is removed."""
    found, is_dir = _find(content, fmt, version)
    if is_dir:
        _move_children(found, version_dir)
    else:
        version_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(found), str(version_dir / c.MODEL_FILES[fmt]))
    shutil.rmtree(content, ignore_errors=True)
