"""Build the OCI images that pods on the local real node run, with no Docker and no registry.

Each image is an OCI image-layout tar (:mod:`tritonops.devcluster.oci`) for ``ctr -n k8s.io images import``:

- :data:`PAUSE_IMAGE`: ``hack/pause/pause.c`` built with ``gcc -static -Os``; ``/pause`` is its only file.
- :data:`RUNTIME_IMAGE`: ``runtime/Dockerfile``'s image under the operator's default ``--runtime-image`` name
  (so rendered pods are the production ones): ``/opt/venv`` with this checkout's ``runtime/``, user 10001,
  entrypoint ``tritonops-fetch``; its Python 3.11 is Debian's rather than python.org's.
- :data:`TRITON_IMAGE`: a CPU stand-in for NGC's tritonserver: the ``nvidia-pytriton`` wheel's server and Python
  backend laid out as in NGC (``/opt/tritonserver/bin``, default backend dir ``/opt/tritonserver/backends``),
  numpy<2 and onnxruntime in ``/opt/venv``, whose ``bin`` leads ``PATH`` so the backend stub's embedded Python
  uses the venv (see :mod:`tritonops_runtime.localtriton`).

Root filesystems come from ``mmdebstrap --variant=minbase`` and ``chroot`` (root only); pip runs in the chroot
from a pip wheel, offline, on wheels the host's pip downloaded once to ``<cache>/wheels`` (.debs are kept in
``<cache>/debs``). Layers set every mtime to 0, so ``.pyc`` files are rebuilt as unchecked-hash ones.
Archives: ``<cache>/images/<short>-<key>.tar`` (``<cache>``: ``$TRITONOPS_CACHE`` or ``~/.cache/tritonops``), the
key hashing the recipe's inputs and this module and ``oci.py``; builders serialize on a lock per image.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tritonops.devcluster import oci
from tritonops.devcluster.binaries import cache_root, repo_root

Log = Callable[[str], None]

PAUSE_IMAGE = "localhost/tritonops/pause:3.10"
RUNTIME_IMAGE = "ghcr.io/tritonops/tritonops-runtime:0.1.0"
TRITON_IMAGE = "localhost/tritonops/tritonserver-cpu:2.51.0-pytriton0.7.0"
RUNTIME_UID = 10001  # as runtime/Dockerfile: a high UID no host account shares

SUITE = "bookworm"
MIRRORS = ("deb http://deb.debian.org/debian bookworm main", "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main")
DPKG_EXCLUDES = ("doc/*", "man/*", "info/*", "locale/*", "lintian/*")  # under /usr/share; copyright files stay
PIP = "pip==26.3"
BUILD_WHEELS = (PIP, "setuptools==84.2.1")  # setuptools: runtime/'s build backend, for pip's isolated build
TRITON_WHEELS = ("nvidia-pytriton==0.7.0", "numpy==1.26.4", "onnxruntime==1.32.0", "flatbuffers==25.12.19",
                 "packaging==26.4", "protobuf==7.36.2")
# The drift monitor's dependencies (runtime/'s extra "drift"), in the runtime image beside the fetcher.
DRIFT_WHEELS = ("numpy==1.26.4", "scipy==1.17.1", "prometheus-client==0.23.1")
PY = "3.11"  # bookworm's python3
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VENV = "/opt/venv"
SITE = f"{VENV}/lib/python{PY}/site-packages"
PYTRITON = f"{SITE}/pytriton/tritonserver"
TRITON_LIBS = f"{SITE}/nvidia_pytriton.libs"  # auditwheel's libs; RPATHs miss them from the backend dir
PYTHON_ENV = ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
CHROOT_ENV = ("HOME=/root", f"PATH={VENV}/bin:/opt/tritonserver/bin:{BASE_PATH}", "LC_ALL=C.UTF-8")
TRITON_LAYOUT = {  # /opt/tritonserver/<path> -> where the wheel keeps it
    "bin/tritonserver": f"{PYTRITON}/bin/tritonserver",
    "backends/python/libtriton_python.so": f"{PYTRITON}/backends/python/libtriton_python.so",
    "backends/python/triton_python_backend_utils.py": f"{PYTRITON}/backends/python/triton_python_backend_utils.py",
    "backends/python/triton_python_backend_stub": f"{PYTRITON}/python_backend_stubs/{PY}/triton_python_backend_stub",
}
RUNTIME_LABELS = {f"org.opencontainers.image.{k}": v for k, v in (  # runtime/Dockerfile's
    ("title", "tritonops-runtime"), ("source", "https://github.com/tritonops/tritonops"),
    ("description", "Model fetcher and helpers that run inside tritonops Triton pods"),
    ("licenses", "Apache-2.0"), ("version", "0.1.0"))}
PRUNE = ("tmp/*", "dev/*", "var/cache/apt/*", "var/lib/apt/lists/*", "var/log/*.log", "root/.cache", "etc/*-")


class ImageError(RuntimeError):
    """An image could not be built or imported."""


@dataclass(frozen=True)
class Image:
    """A built image: its reference as kubelet/containerd see it and its OCI archive."""

    name: str
    archive: Path


@dataclass(frozen=True)
class Recipe:
    """How to fill a root filesystem; the cache key covers ``inputs`` (files, dirs), ``pins`` and the code."""

    short: str
    name: str
    config: oci.ImageConfig
    build: Callable[[Path, Path, Log], None]  # (rootfs, cache root, log)
    inputs: tuple[Path, ...] = ()
    pins: tuple[str, ...] = ()


def _run(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if check and proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise ImageError(f"{' '.join(cmd[:6])} ... failed with exit code {proc.returncode}:\n{tail}")
    return proc


def _chroot(rootfs: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``rootfs`` with a clean environment (leading ``K=V`` words add variables)."""
    return _run(["chroot", str(rootfs), "/usr/bin/env", "-i", *CHROOT_ENV, *argv], check=check)


def recipe_key(recipe: Recipe) -> str:
    """12 hex digits of a hash over the recipe's files (``__pycache__`` aside), pins and this module's code."""
    digest, root = hashlib.sha256(), repo_root()
    files = [Path(__file__).resolve(), Path(oci.__file__).resolve()]
    for top in recipe.inputs:
        files += [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()
                                                    and "__pycache__" not in p.parts and p.suffix != ".pyc")
    for path in files:
        name = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        digest.update(f"{name}\0".encode() + path.read_bytes() + b"\0")
    digest.update("\0".join((recipe.short, recipe.name, *recipe.pins)).encode())
    return digest.hexdigest()[:12]


def _remove_tree(path: Path) -> None:
    """rmtree, after lazily unmounting anything a killed mmdebstrap left mounted inside (never through a mount)."""
    prefix = str(path.resolve()) + "/"
    for attempt in range(2):
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].encode().decode("unicode_escape") for line in f]
        mounted = sorted((p for p in points if p.startswith(prefix)), reverse=True)
        if mounted and attempt:
            raise ImageError(f"{path} still has mounts ({mounted[0]}); not removing it")
        for point in mounted:
            _run(["umount", "--lazy", point], check=False)
    shutil.rmtree(path, ignore_errors=True)


def _debootstrap(rootfs: Path, packages: Sequence[str], cache: Path, log: Log) -> None:
    if os.geteuid() != 0:
        raise ImageError("building the Debian-based images needs root (mmdebstrap --mode=root, chroot)")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    log(f"mmdebstrap {SUITE} minbase + {','.join(packages)}")
    _run(["mmdebstrap", "--mode=root", "--variant=minbase", f"--include={','.join(packages)}",
          "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",  # not the usrmerge package (it pulls in perl)
          '--aptopt=APT::Install-Recommends "false"', "--skip=essential/unlink",
          *[f"--dpkgopt=path-exclude=/usr/share/{p}" for p in DPKG_EXCLUDES],
          "--dpkgopt=path-include=/usr/share/doc/*/copyright",
          '--setup-hook=mkdir -p "$1"/var/cache/apt/archives', f"--setup-hook=sync-in {debs} /var/cache/apt/archives/",
          f"--customize-hook=sync-out /var/cache/apt/archives {debs}", SUITE, str(rootfs), *MIRRORS])


def _add_user(rootfs: Path, name: str, uid: int) -> None:
    _chroot(rootfs, "groupadd", "--gid", str(uid), name)
    _chroot(rootfs, "useradd", "--uid", str(uid), "--gid", str(uid), "--no-create-home", "--no-log-init",
            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name)


def _wheel_files(wheels: Path, pins: Sequence[str]) -> list[Path] | None:
    hits = [sorted(wheels.glob(f"{re.sub(r'[-_.]+', '_', name)}-{version}-*.whl"))
            for name, version in (pin.split("==") for pin in pins)]
    return [found[0] for found in hits] if all(hits) else None


def _fetch_wheels(cache: Path, pins: Sequence[str], log: Log) -> list[Path]:
    """The wheel files of ``pins`` (for CPython 3.11, glibc 2.36), downloaded into ``<cache>/wheels`` once."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if (files := _wheel_files(wheels, pins)) is not None:
        return files
    log(f"pip download {' '.join(pins)}")
    arch = platform.machine()  # pip does not widen an explicit --platform to older manylinux tags itself
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
          "--only-binary=:all:", *[f"--platform=manylinux_2_{n}_{arch}" for n in range(36, 16, -1)],
          f"--platform=manylinux2014_{arch}", f"--python-version={PY}", "--implementation=cp",
          f"--abi=cp{PY.replace('.', '')}", "--abi=abi3", "--abi=none", f"--dest={wheels}", *pins])
    if (files := _wheel_files(wheels, pins)) is None:
        raise ImageError(f"pip download did not leave all of {pins} in {wheels}")
    return files


def _venv_install(rootfs: Path, wheels: Sequence[Path], *args: str) -> None:
    """Create /opt/venv (no pip in it) and run ``pip install ARGS`` there, offline, from a pip wheel."""
    staged = rootfs / "tmp" / "build" / "wheels"
    staged.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        shutil.copy2(wheel, staged / wheel.name)
    pip = next(w.name for w in wheels if w.name.startswith("pip-"))
    _chroot(rootfs, "python3", "-m", "venv", "--without-pip", VENV)
    _chroot(rootfs, f"{VENV}/bin/python3", f"/tmp/build/wheels/{pip}/pip", "install", "--no-cache-dir",
            "--no-index", "--find-links=/tmp/build/wheels", "--disable-pip-version-check",
            "--root-user-action=ignore", *args)


def _finalize(rootfs: Path, log: Log) -> None:
    """Unchecked-hash ``.pyc`` files (valid whatever the mtimes); drop build leftovers, apt caches, device nodes."""
    proc = _chroot(rootfs, "python3", "-m", "compileall", "-q", "-f", "-j0", "--invalidation-mode",
                   "unchecked-hash", "/usr/lib/python3", f"/usr/lib/python{PY}", f"{VENV}/lib", check=False)
    if proc.returncode != 0:  # a stray file with bad syntax fails compileall; importing it would fail anyway
        log(f"compileall complained (ignored): {proc.stdout[-500:]}")
    for path in (p for pattern in PRUNE for p in rootfs.glob(pattern)):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    (rootfs / "tmp").chmod(0o1777)


def _build_pause(rootfs: Path, cache: Path, log: Log) -> None:
    log("gcc -static -Os hack/pause/pause.c")
    _run(["gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-o", str(rootfs / "pause"),
          str(repo_root() / "hack" / "pause" / "pause.c")])


def _build_runtime(rootfs: Path, cache: Path, log: Log) -> None:
    wheels = _fetch_wheels(cache, (*BUILD_WHEELS, *DRIFT_WHEELS), log)
    _debootstrap(rootfs, ("python3",), cache, log)
    _add_user(rootfs, "tritonops", RUNTIME_UID)
    src, runtime = rootfs / "tmp" / "build" / "src" / "runtime", repo_root() / "runtime"
    shutil.copytree(runtime / "tritonops_runtime", src / "tritonops_runtime",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(runtime / "pyproject.toml", src / "pyproject.toml")
    log("pip install runtime/ into /opt/venv")
    _venv_install(rootfs, wheels, "--no-deps", "/tmp/build/src/runtime", *DRIFT_WHEELS)
    _finalize(rootfs, log)
    _chroot(rootfs, f"{VENV}/bin/tritonops-fetch", "--help")
    _chroot(rootfs, f"{VENV}/bin/python3", "-c", "import numpy, scipy.stats, prometheus_client")


def _check_triton(rootfs: Path, log: Log) -> None:
    """``ldd`` on Triton's binaries in the rootfs (no "not found"), ``tritonserver --help``, the venv's imports."""
    missing, system = [], set()
    for path in (p for p in TRITON_LAYOUT.values() if not p.endswith(".py")):
        out = _chroot(rootfs, f"LD_LIBRARY_PATH={TRITON_LIBS}", "ldd", path).stdout.splitlines()
        missing += [f"{path}: {line.strip()}" for line in out if "not found" in line]
        system |= {line.split()[0] for line in out if "=> /usr/lib/" in line or "=> /lib/" in line}
    if missing:
        raise ImageError("missing shared libraries:\n" + "\n".join(missing))
    log(f"ldd: all resolved; system libraries: {' '.join(sorted(system))}")
    usage = _chroot(rootfs, f"LD_LIBRARY_PATH={TRITON_LIBS}", "tritonserver", "--help", check=False).stdout
    if "--model-repository" not in usage:  # --help exits 1 after printing the usage
        raise ImageError(f"tritonserver --help in the image did not print its usage:\n{usage[-2000:]}")
    _chroot(rootfs, f"{VENV}/bin/python3", "-c", "import numpy, onnxruntime")


def _build_triton(rootfs: Path, cache: Path, log: Log) -> None:
    wheels = _fetch_wheels(cache, (PIP, *TRITON_WHEELS), log)
    _debootstrap(rootfs, ("python3", f"libpython{PY}"), cache, log)  # the stub links libpython3.11.so.1.0
    _add_user(rootfs, "triton-server", 1000)  # NGC's name and uid; pods run as the builders' UID anyway
    log(f"pip install {' '.join(TRITON_WHEELS)} into /opt/venv")
    _venv_install(rootfs, wheels, "--no-deps", *TRITON_WHEELS)
    for rel, target in TRITON_LAYOUT.items():
        if not (rootfs / target.lstrip("/")).is_file():
            raise ImageError(f"the nvidia-pytriton wheel has no {target}")
        link = rootfs / "opt" / "tritonserver" / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    _finalize(rootfs, log)
    _check_triton(rootfs, log)


def recipes() -> list[Recipe]:
    """pause, runtime and triton, in that order."""
    root, python_env = repo_root(), (f"PATH={VENV}/bin:{BASE_PATH}", *PYTHON_ENV)
    triton_env = (f"PATH={VENV}/bin:/opt/tritonserver/bin:{BASE_PATH}", f"LD_LIBRARY_PATH={TRITON_LIBS}", *PYTHON_ENV)
    return [
        Recipe("pause", PAUSE_IMAGE, oci.ImageConfig(("/pause",), user="65535:65535"), _build_pause,
               (root / "hack" / "pause" / "pause.c",)),
        Recipe("runtime", RUNTIME_IMAGE,
               oci.ImageConfig(("tritonops-fetch",), python_env, f"{RUNTIME_UID}:{RUNTIME_UID}",
                                              labels=RUNTIME_LABELS),
               _build_runtime, (root / "runtime" / "pyproject.toml", root / "runtime" / "tritonops_runtime"),
               (*BUILD_WHEELS, *DRIFT_WHEELS)),
        Recipe("triton", TRITON_IMAGE, oci.ImageConfig(("tritonserver",), triton_env, "1000:1000", "/opt/tritonserver"),
               _build_triton, (), (PIP, *TRITON_WHEELS)),
    ]


def _build(recipe: Recipe, archive: Path, cache: Path, log: Log) -> None:
    for leftover in archive.parent.glob(f".{recipe.short}-*"):  # from a build that was killed
        _remove_tree(leftover)
    work = Path(tempfile.mkdtemp(prefix=f".{recipe.short}-", dir=archive.parent))
    try:
        (work / "rootfs").mkdir()
        recipe.build(work / "rootfs", cache, log)
        oci.write_archive(work / "rootfs", work / "image.tar", recipe.name, recipe.config)
        os.replace(work / "image.tar", archive)
    finally:
        _remove_tree(work)


def _ensure(recipe: Recipe, cache: Path, log: Log) -> Image:
    t0, images = time.monotonic(), cache / "images"
    images.mkdir(parents=True, exist_ok=True)
    archive = images / f"{recipe.short}-{recipe_key(recipe)}.tar"
    if not archive.is_file():
        with (images / f".{recipe.short}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not archive.is_file():
                log(f"{recipe.short}: building {recipe.name}")
                _build(recipe, archive, cache, log)
                log(f"{recipe.short}: built in {time.monotonic() - t0:.0f}s, "
                    f"{archive.stat().st_size / 2**20:.0f} MiB: {archive}")
            for old in images.glob(f"{recipe.short}-*.tar"):
                if old != archive:
                    old.unlink()
    return Image(recipe.name, archive)


def build_images(cache_dir: Path | None = None, log: Callable[[str], None] = print) -> list[Image]:
    """Build (or reuse from ``<cache>/images``) the pause, runtime and triton images; returns them in that order.

    ``cache_dir`` is the tritonops cache root (:func:`cache_root`): archives go to its ``images/``, wheels to
    ``wheels/``, .deb files to ``debs/``. A cached call only hashes the inputs (milliseconds).
    """
    cache = cache_root(cache_dir)
    return [_ensure(recipe, cache, log) for recipe in recipes()]


def _ctr(ctr: str, address: str, *args: str) -> str:
    proc = subprocess.run([ctr, "--address", address, "--namespace", "k8s.io", *args], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def present_images(ctr: str, address: str) -> dict[str, str]:
    """Image name -> target (manifest) digest in containerd's k8s.io namespace."""
    rows = (line.split() for line in _ctr(ctr, address, "images", "ls").splitlines()[1:])
    return {row[0]: row[2] for row in rows if len(row) >= 3}


def import_images(ctr: str, address: str, images: Sequence[Image]) -> None:
    """``ctr images import`` (unpacked for the default snapshotter) each archive not already present."""
    present = present_images(ctr, address)
    for image in images:
        digest = oci.manifest_digest(image.archive)
        if present.get(image.name) == digest:
            continue
        _ctr(ctr, address, "images", "import", str(image.archive))
        if present_images(ctr, address).get(image.name) != digest:
            raise ImageError(f"after importing {image.archive}, containerd has no {image.name} at {digest}")


def main(argv: Sequence[str] | None = None) -> int:
    """``build``: build or reuse the archives, print their paths (one a line); progress goes to stderr."""
    parser = argparse.ArgumentParser(prog="python -m tritonops.devcluster.images", description=main.__doc__)
    parser.add_argument("command", choices=["build"])
    parser.parse_args(argv)

    def err(msg: str) -> None:
        print(f"[images {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    try:
        images = build_images(log=err)
    except (ImageError, OSError) as e:
        err(f"error: {e}")
        return 1
    print("\n".join(str(image.archive) for image in images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
