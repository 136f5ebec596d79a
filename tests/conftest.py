"""Shared pytest wiring for every tier.

- ``golden(path, text)`` compares with a golden file; ``--update-golden`` rewrites them instead.
- ``cluster`` (one per session): a private control plane built from Go modules (etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler and kwok; see ``tritonops.devcluster``) with 2 CPU and 2 GPU
  nodes (2 x nvidia.com/gpu each), or the cluster of ``$KUBECONFIG`` when that is set (``cluster.owned``
  is then False and nothing cluster-scoped is created on it). Tests using it are marked ``cluster``, and on
  a failure the tail of every component log is attached to the report.
- ``namespace``: a fresh namespace enforcing the restricted Pod Security level, deleted after the test.
- ``api``: a client of the cluster with the CRD installed; ``operator``: ``tritonops run`` as a subprocess
  watching ``namespace`` under exactly the chart's RBAC (a token of the chart's ServiceAccount).
"""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rbac import operator_kubeconfig
from tests.integration.support import Api, OperatorProcess, install_crd
from tritonops.devcluster.nodes import NodePool
from tritonops.devcluster.session import ClusterHandle, create_namespace, delete_namespace, open_cluster

ROOT = Path(__file__).resolve().parents[1]
_HANDLE = pytest.StashKey[ClusterHandle]()
TEST_POOL = NodePool(cpu_nodes=2, gpu_nodes=2, gpus_per_node=2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files under tests/")


Golden = Callable[[Path, str], None]


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    """``golden(path, text)``: assert ``text`` equals the file, or rewrite it under ``--update-golden``."""
    update = bool(request.config.getoption("--update-golden"))

    def check(path: Path, text: str) -> None:
        if update:
            path.write_text(text)
        assert path.exists(), f"{path} is missing: rerun pytest with --update-golden"
        assert text == path.read_text(), f"{path} differs: rerun with --update-golden if the change is intended"

    return check


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    handle = open_cluster(tmp_path_factory.mktemp("devcluster"), TEST_POOL)
    request.config.stash[_HANDLE] = handle
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture
def namespace(cluster: ClusterHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace enforcing the restricted Pod Security level, deleted after the test."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    create_namespace(cluster.kubeconfig, name)
    yield name
    delete_namespace(cluster.kubeconfig, name)


@pytest.fixture(scope="session")
def api(cluster: ClusterHandle) -> Api:
    install_crd(cluster)
    return Api.from_kubeconfig(str(cluster.kubeconfig))


@pytest.fixture
def operator(cluster: ClusterHandle, api: Api, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    kubeconfig = operator_kubeconfig(cluster, namespace, tmp_path)
    proc = OperatorProcess(str(kubeconfig), namespace, tmp_path / "operator.log").start()
    yield proc
    proc.stop()
    print((tmp_path / "operator.log").read_text()[-6000:])  # shown by pytest when the test fails


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    handle = item.config.stash.get(_HANDLE, None)
    if report.failed and handle is not None and handle.owned:
        report.sections.append(("control-plane logs (last 80 lines each)", handle.log_tails(80)))
    return report


@dataclass(frozen=True)
class ExampleModel:
    """The generated example model (see examples/model/make_model.py)."""

    dir: Path
    torchscript: Path
    onnx: Path | None
    sample_inputs: list[list[float]]
    summary: dict[str, Any]


@pytest.fixture(scope="session")
def example_model(tmp_path_factory: pytest.TempPathFactory) -> ExampleModel:
    """Train and export the example model once per session (a few seconds on CPU)."""
    spec = importlib.util.spec_from_file_location("make_model", ROOT / "examples" / "model" / "make_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("example-model")
    summary = module.make(out)
    sample = json.loads((out / "sample.json").read_text())
    onnx = Path(summary["onnx"]) if summary["onnx"] else None
    return ExampleModel(out, Path(summary["torchscript"]), onnx, sample["inputs"], summary)
