"""Gateway API CRDs for tests of canary traffic routing: install them on the test cluster when it lacks them.

The CRDs come from ``$TRITONOPS_GATEWAY_API_CRDS`` (a directory of CRD YAML files) or else from
``hack/fetch-gateway-api.sh`` (the pinned standard channel, cached under ``~/.cache/tritonops/crds``). A cluster
that already serves HTTPRoutes (say kind with Gateway API installed by its owner) is left as it is: these
tests must not upgrade or downgrade someone else's CRDs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from tests.chart.tools import run
from tests.integration.support import Api, kubectl

ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = ROOT / "hack" / "fetch-gateway-api.sh"
CRDS_ENV = "TRITONOPS_GATEWAY_API_CRDS"
HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"
GROUP = "gateway.networking.k8s.io"


def gateway_api_crds_dir() -> Path:
    """The directory of Gateway API CRD files: ``$TRITONOPS_GATEWAY_API_CRDS``, else the fetch script's cache."""
    given = os.environ.get(CRDS_ENV, "")
    if given:
        path = Path(given)
    else:
        out = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=300, check=False)
        if out.returncode != 0:
            raise AssertionError(f"{FETCH_SCRIPT} failed ({out.returncode}):\n{out.stderr[-3000:]}")
        path = Path(out.stdout.strip().splitlines()[-1])
    if not (path / f"{GROUP}_httproutes.yaml").is_file():
        raise AssertionError(f"{path} has no {GROUP}_httproutes.yaml (set {CRDS_ENV} to a standard-channel CRD dir)")
    return path


def crd_names(crds_dir: Path) -> list[str]:
    """Names of the CustomResourceDefinitions in the directory's YAML files."""
    names = []
    for file in sorted(crds_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
    return names


def has_crd(cluster: Any, name: str) -> bool:
    """Whether the cluster has the CustomResourceDefinition ``name``."""
    client = Api.from_kubeconfig(str(cluster.kubeconfig)).client
    try:
        kubernetes.client.ApiextensionsV1Api(client).read_custom_resource_definition(
            name, _preload_content=False)  # no need to decode a 400 KB schema
    except kubernetes.client.ApiException as err:
        if err.status == 404:
            return False
        raise
    finally:
        client.close()
    return True


def ensure_crds(cluster: Any, probe: str, crds_dir: Callable[[], Path], timeout: float = 120.0) -> list[str]:
    """Install the CRDs of ``crds_dir()`` unless the cluster serves ``probe`` already; wait until Established.

    A cluster that has them (installed by its owner) is left as it is: tests never upgrade or downgrade
    someone else's CRDs. Returns the names of the CRDs this call installed.
    """
    installed: list[str] = []
    if not has_crd(cluster, probe):
        found = crds_dir()
        # Server-side: these CRDs (hundreds of KB) are too big for client-side apply's last-applied annotation.
        kubectl(cluster, "apply", "--server-side", "--field-manager=tritonops-tests", "-f", str(found))
        installed = crd_names(found)
    waiting = [f"crd/{name}" for name in installed or [probe]]
    run([cluster.tool("kubectl"), "--kubeconfig", str(cluster.kubeconfig), "wait", "--for=condition=Established",
         f"--timeout={int(timeout)}s", *waiting], timeout=timeout + 30)
    return installed


def ensure_gateway_api_crds(cluster: Any, timeout: float = 120.0) -> list[str]:
    """Make the cluster serve HTTPRoutes (see :func:`ensure_crds`)."""
    return ensure_crds(cluster, HTTPROUTE_CRD, gateway_api_crds_dir, timeout)
