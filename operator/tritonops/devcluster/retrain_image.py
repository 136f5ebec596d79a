"""The retraining Job's image, :data:`RETRAIN_IMAGE`: ``tritonops-retrain`` on CPU, with the host venv's torch.

Content: the runtime image's (:mod:`tritonops.devcluster.images`: Debian bookworm minbase, ``runtime/`` in
``/opt/venv`` installed with ``--no-deps``, user 10001) plus torch, onnx and onnxruntime beside numpy, scipy
and prometheus-client; entrypoint ``tritonops-retrain``. It is NOT one of :func:`images.recipes`, which
``hack/build-images.sh``, ``hack/up.sh`` and every e2e session build and import: its archive is 3.3 GiB (torch
2.15.0+cu132), built cold in about 2 minutes. Build it with :func:`build_retrain_image`
(``hack/build-retrain-image.sh``) and load it into a running real node with :func:`import_retrain_image`.
torch creates ``/tmp/torchinductor_<user>`` at the first optimizer step: the Job's scratch volume is ``/tmp``.

Where the Python packages come from: the only torch on this machine is the host venv's CUDA build, with its
nvidia-* wheels; there is no CPU-only wheel on disk, and PyPI would be a multi-GB download per cold build. So
the image's venv gets copies of the distributions installed in the venv that runs the build: the Requires-Dist
closure of :data:`ROOTS` under the host's markers (:func:`dependency_closure`), each distribution's RECORD
files below site-packages (its console scripts, elsewhere, are left out: their shebangs name the host venv)
and its ``.dist-info``. The host venv and bookworm's ``python3`` are both CPython 3.11, so the wheels' binaries
fit; :func:`host_distributions` refuses another Python. The recipe's pins are ``name==version`` of every copied
distribution and a digest of their RECORDs, so a venv with another torch (or onnx, ...) gets a new image.

Pruned, for a CPU-only image (GPU work in it is not supported):

- the ``triton`` distribution (1 GB): OpenAI Triton, the GPU kernel compiler of ``torch.compile``,
  imported only on demand; torch's CPU wheels do not require it;
- ``torch/include`` (63 MB): C++ headers for extensions and inductor's code generation; there is no compiler;
- under ``site-packages/nvidia`` (CUDA libraries, headers, device code and licenses, no Python): every file
  but the licenses and the libraries that ``ldd`` in the chroot resolves for what ``import torch`` loads
  (:data:`TORCH_ROOTS`); 1.4 of its 3 GB go. Gone are the libraries only ``dlopen``ed for GPU work: cuDNN's
  sub-libraries and engines (``libcudnn.so.9`` itself is NEEDED and stays), cuSOLVER and nvJitLink (needed
  only by the lazily loaded ``libtorch_cuda_linalg.so``), nvrtc's builtins, CUPTI's profiler hosts, NVSHMEM's
  transports, plus static archives, bitcode and headers. cuBLAS, cuFFT, cuSPARSE(Lt), NCCL, nvrtc, CUPTI,
  cuFile and NVSHMEM's host library stay: ``libtorch_cpu``/``libtorch_cuda``, which ``import torch`` loads,
  list them as NEEDED.

:func:`_check` proves the result in the chroot, as uid 10001: nothing :data:`TORCH_ROOTS` needs is missing,
``tritonops-retrain --help``, and :data:`SMOKE` (the imports, an optimizer step, TorchScript script/save/load,
the TorchScript-based ONNX export run by onnxruntime, ``quantize_dynamic_jit``, CPU linear algebra).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tritonops.devcluster import images, oci
from tritonops.devcluster.binaries import cache_root, repo_root
from tritonops.devcluster.images import Image, ImageError, Log

if TYPE_CHECKING:
    from tritonops.devcluster.realnode import RealNode

RETRAIN_IMAGE = "localhost/tritonops/tritonops-retrain:0.1.0"
SITE, VENV, UID = images.SITE, images.VENV, images.RUNTIME_UID
ENV = (f"PATH={VENV}/bin:{images.BASE_PATH}", *images.PYTHON_ENV)  # the runtime image's
ROOTS = ("torch", "onnx", "onnxruntime", "numpy", "scipy", "prometheus-client")
EXCLUDED = frozenset({"triton"})  # see the module docstring
SKIPPED_PREFIXES = ("torch/include/",)  # RECORD paths not copied
NVIDIA = "nvidia"  # site-packages/nvidia: pruned to what ldd resolves for TORCH_ROOTS
LICENSE = re.compile(r"(?i)^(license|notice|copying)")
DEVICES = {"null": 3, "zero": 5, "random": 8, "urandom": 9}  # /dev/<name>: minor of char device 1 (mem)
TORCH_ROOTS = ("torch/_C.*.so", "torch/lib/libtorch_global_deps.so")  # what `import torch` loads (globs)
LABELS = {**images.RUNTIME_LABELS, "org.opencontainers.image.title": "tritonops-retrain",
          "org.opencontainers.image.description": "tritonops-retrain, the retraining Job's command (CPU torch)"}
SMOKE = """
import io, numpy, onnx, onnxruntime, prometheus_client, scipy.stats, torch
import tritonops_runtime.retrain.main
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic_jit
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
nn.functional.cross_entropy(model(x), y).backward()
before = model[0].weight.detach().clone()
opt.step()
assert not torch.equal(before, model[0].weight), "the optimizer step changed nothing"
buf = io.BytesIO()
torch.jit.save(torch.jit.script(model), buf)
buf.seek(0)
scripted = torch.jit.load(buf, map_location="cpu")
onx = io.BytesIO()
torch.onnx.export(scripted, x[:1], onx, input_names=["INPUT0"], output_names=["OUTPUT0"], opset_version=17,
                  dynamo=False, dynamic_axes={"INPUT0": {0: "batch"}, "OUTPUT0": {0: "batch"}})
onnx.checker.check_model(onnx.load_from_string(onx.getvalue()))
sess = onnxruntime.InferenceSession(onx.getvalue(), providers=["CPUExecutionProvider"])
assert numpy.allclose(sess.run(None, {"INPUT0": x.numpy()})[0], scripted(x).detach().numpy(), atol=1e-5)
quantize_dynamic_jit(scripted, {"": default_dynamic_qconfig})(x)
assert torch.allclose(torch.linalg.solve(2 * torch.eye(3), torch.ones(3)), torch.full((3,), 0.5))
print("smoke ok: torch", torch.__version__, "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)
"""

Requires = Callable[[str], Sequence[str] | None]


def _applies(req: Requirement, extras: Collection[str], environment: Mapping[str, str]) -> bool:
    """Whether ``req`` is wanted under ``environment`` by a distribution installed with ``extras``."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras))


def dependency_closure(roots: Iterable[str], requires: Requires, environment: Mapping[str, str] | None = None,
                       exclude: Collection[str] = ()) -> dict[str, frozenset[str]]:
    """Canonical name -> extras asked for, of ``roots`` and all they require, transitively.

    ``roots`` are requirement strings (``name[extra,...]``, version specifiers ignored); ``requires(name)``
    gives a distribution's Requires-Dist (``importlib.metadata.requires``). A requirement counts when its
    marker holds in ``environment`` (default: this interpreter's) with ``extra`` empty or one of the extras
    the distribution was asked for; a distribution reached again with new extras is walked again for them.
    ``exclude`` (canonical names) are neither walked nor returned. A missing distribution is an ImageError.
    """
    env = {k: str(v) for k, v in (default_environment() if environment is None else environment).items()}
    excluded = {canonicalize_name(n) for n in exclude}
    found: dict[str, frozenset[str]] = {}
    todo = [(Requirement(root), "the image") for root in roots]
    while todo:
        req, wanted_by = todo.pop()
        name = canonicalize_name(req.name)
        extras = found.get(name, frozenset()) | {canonicalize_name(e) for e in req.extras}
        if name in excluded or (name in found and extras == found[name]):
            continue
        try:
            reqs = requires(name) or ()
        except metadata.PackageNotFoundError:
            raise ImageError(f"{name} (required by {wanted_by}) is not installed in {sys.prefix}") from None
        found[name] = frozenset(extras)
        todo += [(dep, name) for dep in map(Requirement, reqs) if _applies(dep, extras, env)]
    return found


def host_distributions(roots: Iterable[str] = ROOTS) -> list[metadata.Distribution]:
    """The installed distributions of :func:`dependency_closure` (:data:`EXCLUDED` aside), sorted by name."""
    if sys.version_info[:2] != tuple(map(int, images.PY.split("."))):
        raise ImageError(f"the retrain image copies this venv's packages into Python {images.PY}; this is "
                         f"Python {sys.version_info[0]}.{sys.version_info[1]} ({sys.executable})")
    closure = dependency_closure(roots, metadata.requires, exclude=EXCLUDED)
    return [metadata.distribution(name) for name in sorted(closure)]


def _copy_distribution(dist: metadata.Distribution, site: Path) -> int:
    """Copy ``dist``'s RECORD files below its site-packages (no ``__pycache__``, none of
    :data:`SKIPPED_PREFIXES`) to the same paths under ``site``; returns the bytes copied."""
    total = 0
    for rel in dist.files or ():
        posix = PurePosixPath(rel)
        if posix.parts[0] == ".." or "__pycache__" in posix.parts or str(posix).startswith(SKIPPED_PREFIXES):
            continue
        src = Path(str(dist.locate_file(rel)))
        if not src.is_file():
            raise ImageError(f"{dist.metadata['Name']}: {src} is in its RECORD but missing: reinstall it")
        dest = site / posix
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest, follow_symlinks=True)
        shutil.copymode(src, dest)
        total += src.stat().st_size
    return total


def parse_ldd(output: str) -> tuple[set[str], list[str]]:
    """(normalized paths that ``ldd`` resolved, names it did not find) from its output."""
    resolved, missing = set(), []
    for line in output.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if "not found" in rest:
            missing.append(name)
        elif rest.startswith("/"):
            resolved.add(os.path.normpath(rest.rsplit(" (", 1)[0]))
    return resolved, missing


def _torch_libraries(rootfs: Path) -> set[str]:
    """Paths (in the image) of the libraries the :data:`TORCH_ROOTS` need; an ImageError when one is missing."""
    site, resolved = rootfs / SITE.lstrip("/"), set()
    for pattern in TORCH_ROOTS:
        if not (hits := sorted(site.glob(pattern))):
            raise ImageError(f"the image has no {SITE}/{pattern}")
        for root in hits:
            found, missing = parse_ldd(images._chroot(rootfs, "ldd", f"/{root.relative_to(rootfs)}").stdout)
            if missing:
                raise ImageError(f"{root.name} needs libraries the image lacks: {', '.join(missing)}")
            resolved |= found
    return resolved


def _prune_nvidia(rootfs: Path, keep: set[str], log: Log) -> None:
    """Delete every file under ``site-packages/nvidia`` but licenses and ``keep`` (paths in the image)."""
    top, freed = rootfs / SITE.lstrip("/") / NVIDIA, 0
    for path in sorted(p for p in top.rglob("*") if p.is_file() or p.is_symlink()):
        if LICENSE.match(path.name) or f"/{path.relative_to(rootfs)}" in keep:
            continue
        freed += path.lstat().st_size
        path.unlink()
    for path in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()
    kept = sorted(os.path.basename(p) for p in keep if p.startswith(f"{SITE}/{NVIDIA}/"))
    log(f"nvidia/: kept {' '.join(kept)}; dropped {freed / 2**20:.0f} MiB")


def _install_packages(rootfs: Path, dists: Sequence[metadata.Distribution], log: Log) -> None:
    """Copy ``dists`` into the image's site-packages, then prune ``nvidia/`` to what torch loads."""
    site, total = rootfs / SITE.lstrip("/"), 0
    log(f"copying {len(dists)} distributions from {sys.prefix}")
    for dist in dists:
        total += _copy_distribution(dist, site)
    log(f"copied {total / 2**20:.0f} MiB")
    _prune_nvidia(rootfs, _torch_libraries(rootfs), log)


@contextlib.contextmanager
def _devices(rootfs: Path) -> Iterator[None]:
    """The character devices torch opens (``/dev/urandom`` when it starts) in the rootfs while the checks run;
    :func:`images._finalize` removed ``/dev``'s entries, which a container runtime provides."""
    made = [rootfs / "dev" / name for name in DEVICES]
    try:
        for path, minor in zip(made, DEVICES.values(), strict=True):
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
            path.chmod(0o666)  # the umask applies to mknod's mode
        yield
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def _check(rootfs: Path, log: Log) -> None:
    """In the chroot, as the pods' uid: ldd for torch, ``tritonops-retrain --help``, :data:`SMOKE`.

    Python writes no bytecode, SMOKE keeps its files in memory and the user can write nowhere but /tmp, which
    :func:`images._finalize` left empty and which is emptied again afterwards: the image stays as built.
    """
    _torch_libraries(rootfs)
    user = ["chroot", f"--userspec={UID}:{UID}", str(rootfs), "/usr/bin/env", "-i", "HOME=/nonexistent",
            "LC_ALL=C.UTF-8", *ENV, "PYTHONDONTWRITEBYTECODE=1"]
    with _devices(rootfs):
        usage = images._run([*user, f"{VENV}/bin/tritonops-retrain", "--help"]).stdout
        if "--model-uri" not in usage:
            raise ImageError(f"tritonops-retrain --help in the image did not print its usage:\n{usage[-2000:]}")
        smoke = images._run([*user, f"{VENV}/bin/python3", "-W", "ignore", "-c", SMOKE]).stdout
    log(smoke.strip().splitlines()[-1])
    for path in (rootfs / "tmp").iterdir():  # e.g. torchinductor_<user>/, a cache dir torch makes on first use
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _stage_runtime(rootfs: Path) -> str:
    """Copy this checkout's ``runtime/`` (sources, pyproject.toml) into the rootfs; returns its path there."""
    src, runtime = rootfs / "tmp" / "build" / "src" / "runtime", repo_root() / "runtime"
    shutil.copytree(runtime / "tritonops_runtime", src / "tritonops_runtime",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(runtime / "pyproject.toml", src / "pyproject.toml")
    return "/tmp/build/src/runtime"


def _build_retrain(rootfs: Path, cache: Path, log: Log) -> None:
    wheels = images._fetch_wheels(cache, images.BUILD_WHEELS, log)
    dists = host_distributions()
    images._debootstrap(rootfs, ("python3",), cache, log)
    images._add_user(rootfs, "tritonops", UID)
    log("pip install --no-deps runtime/ into /opt/venv")
    images._venv_install(rootfs, wheels, "--no-deps", _stage_runtime(rootfs))
    _install_packages(rootfs, dists, log)
    images._finalize(rootfs, log)
    _check(rootfs, log)


def retrain_recipe() -> images.Recipe:
    """The recipe: inputs ``runtime/`` and this module; pins the build wheels, ``name==version`` of every copied
    distribution and a digest of their RECORDs (which hash every installed file: a reinstall of another build
    under the same version, e.g. ``+cpu`` for ``+cu132``, is a new image too)."""
    root = repo_root()
    dists = host_distributions()
    records = hashlib.sha256(b"\0".join((d.read_text("RECORD") or "").encode() for d in dists)).hexdigest()
    pins = (*(f"{canonicalize_name(d.metadata['Name'])}=={d.version}" for d in dists), f"RECORDs={records[:16]}")
    config = oci.ImageConfig(("tritonops-retrain",), ENV, f"{UID}:{UID}", labels=LABELS)
    inputs = (root / "runtime" / "pyproject.toml", root / "runtime" / "tritonops_runtime", Path(__file__).resolve())
    return images.Recipe("retrain", RETRAIN_IMAGE, config, _build_retrain, inputs, (*images.BUILD_WHEELS, *pins))


def build_retrain_image(cache_dir: Path | None = None, log: Log = print) -> Image:
    """Build (or reuse from ``<cache>/images/retrain-<key>.tar``) :data:`RETRAIN_IMAGE`.

    Cold: about 2 minutes and 10 GB of scratch space beside the archive at the peak (root filesystem, layer,
    archive); needs root. Cached: under a second (the key hashes ``runtime/``, the code and the installed
    distributions' metadata).
    """
    return images._ensure(retrain_recipe(), cache_root(cache_dir), log)


def import_retrain_image(node: RealNode, cache_dir: Path | None = None, log: Log = print) -> Image:
    """Build (cached) :data:`RETRAIN_IMAGE` and import it into ``node``'s containerd unless it is there already."""
    image = build_retrain_image(cache_dir, log)
    t0 = time.monotonic()
    node.import_images([image])
    log(f"{RETRAIN_IMAGE} is in {node.name}'s containerd ({time.monotonic() - t0:.1f}s)")
    return image


def main(argv: Sequence[str] | None = None) -> int:
    """``build``: build or reuse the retrain image's archive, print its path; progress goes to stderr."""
    parser = argparse.ArgumentParser(prog="python -m tritonops.devcluster.retrain_image", description=main.__doc__)
    parser.add_argument("command", choices=["build"])
    parser.parse_args(argv)

    def err(msg: str) -> None:
        print(f"[retrain-image {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    try:
        image = build_retrain_image(log=err)
    except (ImageError, OSError) as e:
        err(f"error: {e}")
        return 1
    print(image.archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
