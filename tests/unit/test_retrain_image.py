"""The retrain image's pure parts: the dependency closure it copies from the venv, ldd parsing, its cache pins."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata

import pytest

from tritonops.devcluster import images, retrain_image
from tritonops.devcluster.retrain_image import dependency_closure, parse_ldd

LINUX = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
         "python_version": "3.11", "python_full_version": "3.11.2", "implementation_name": "cpython"}


def fake_requires(graph: dict[str, list[str]]) -> retrain_image.Requires:
    def requires(name: str) -> Sequence[str] | None:
        if name not in graph:
            raise metadata.PackageNotFoundError(name)
        return graph[name] or None
    return requires


GRAPH = {
    "torch": ["filelock", "sympy>=1.13", 'toolkit[cublas,cudart]==13.2; platform_system == "Linux"',
              'triton~=3.9; platform_system == "Linux"', 'pyyaml; extra == "pyyaml"',
              'pywin32; sys_platform == "win32"'],
    "toolkit": ["nvidia-cublas; extra == 'cublas'", "nvidia-cuda-runtime; extra == 'cudart'",
                "nvidia-npp; extra == 'npp'", "nvidia-cuda-nvrtc; extra == 'cublas'"],
    "sympy": ["mpmath<1.4,>=1.1.0", "pytest>=7; extra == 'dev'"],
    "mpmath": ["sympy"],  # a cycle
    "filelock": [], "nvidia-cublas": [], "nvidia-cuda-runtime": [], "nvidia-cuda-nvrtc": [], "triton": ["setuptools"],
    "setuptools": [],
    "onnx": ["numpy>=1.23", "Typing_Extensions>=4.7", "ml_dtypes"], "numpy": [], "typing-extensions": [],
    "ml-dtypes": ["numpy"],
}


def test_closure_follows_markers_and_the_extras_asked_for() -> None:
    found = dependency_closure(["torch"], fake_requires(GRAPH), LINUX)
    assert set(found) == {"torch", "filelock", "sympy", "mpmath", "toolkit", "triton", "nvidia-cublas",
                          "nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "setuptools"}
    assert found["toolkit"] == {"cublas", "cudart"} and found["torch"] == frozenset()


def test_closure_excludes_and_normalizes_names() -> None:
    found = dependency_closure(["torch", "onnx"], fake_requires(GRAPH), LINUX, exclude=["Triton"])
    assert "triton" not in found and "setuptools" not in found  # an excluded distribution is not walked
    assert {"typing-extensions", "ml-dtypes", "numpy"} <= set(found)


def test_closure_on_another_platform_drops_linux_only_requirements() -> None:
    found = dependency_closure(["torch"], fake_requires({**GRAPH, "pywin32": []}),
                               {**LINUX, "sys_platform": "win32", "platform_system": "Windows"})
    assert set(found) == {"torch", "filelock", "sympy", "mpmath", "pywin32"}


def test_a_later_requirement_with_more_extras_walks_them_too() -> None:
    graph = {**GRAPH, "app": ["toolkit[cublas]", "other"], "other": ["toolkit[npp]"], "nvidia-npp": []}
    found = dependency_closure(["app"], fake_requires(graph), LINUX)
    assert found["toolkit"] == {"cublas", "npp"} and "nvidia-npp" in found


def test_a_missing_distribution_names_what_required_it() -> None:
    with pytest.raises(images.ImageError, match=r"nvidia-cublas \(required by toolkit\) is not installed"):
        dependency_closure(["torch"], fake_requires({k: v for k, v in GRAPH.items() if k != "nvidia-cublas"}), LINUX)


def test_parse_ldd() -> None:
    out = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibtorch_python.so => /opt/venv/lib/python3.11/site-packages/torch/lib/libtorch_python.so (0x00007f)
\tlibcudnn.so.9 => /opt/venv/lib/python3.11/site-packages/torch/lib/../../nvidia/cudnn/lib/libcudnn.so.9 (0x7f)
\tlibcuda.so.1 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f)
"""
    resolved, missing = parse_ldd(out)
    assert missing == ["libcuda.so.1"]
    assert resolved == {"/opt/venv/lib/python3.11/site-packages/torch/lib/libtorch_python.so",
                        "/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib/libcudnn.so.9",
                        "/lib/x86_64-linux-gnu/libc.so.6"}


def test_the_recipe_pins_this_venvs_torch_and_is_not_a_default_image() -> None:
    pytest.importorskip("torch")
    recipe = retrain_image.retrain_recipe()
    assert f"torch=={metadata.version('torch')}" in recipe.pins
    assert not any(pin.startswith("triton==") for pin in recipe.pins)
    assert any(pin.startswith("RECORDs=") for pin in recipe.pins)
    assert recipe.name == retrain_image.RETRAIN_IMAGE == "localhost/tritonops/tritonops-retrain:0.1.0"
    assert retrain_image.RETRAIN_IMAGE not in {r.name for r in images.recipes()}
