"""The Services in front of a ModelDeployment's Triton pods (HTTP, gRPC and metrics).

One selects the pods of every revision; one per revision is a weighted backend of a Gateway API route.
"""

from __future__ import annotations

import re
from typing import Any

from tritonops.builders.meta import (
    LABEL_REVISION,
    Owner,
    canonical_hash,
    common_labels,
    metadata,
    selector_labels,
    stamp_hash,
)
from tritonops_runtime.contract import DRIFT_PORT, GRPC_PORT, HTTP_PORT, METRICS_PORT


def service_name(md_name: str) -> str:
    """The Service is named like the ModelDeployment: clients use ``<name>.<namespace>.svc``."""
    return md_name


def build_service(owner: Owner, feedback: bool = False) -> dict[str, Any]:
    """A ClusterIP Service selecting the serving pods of every revision; with ``feedback`` (drift monitor
    on) also the sidecar's port, where clients POST labels to ``/v1/feedback``."""
    ports = [
        {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP",
         "appProtocol": "http"},
    ]
    if feedback:
        ports.append({"name": "drift", "port": DRIFT_PORT, "targetPort": "drift", "protocol": "TCP",
                      "appProtocol": "http"})
    return stamp_hash({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(service_name(owner.name), owner, common_labels(owner.name, "inference-service")),
        "spec": {"type": "ClusterIP", "selector": selector_labels(owner.name), "ports": ports},
    })


# A Service name is a DNS-1035 label: at most 63 characters.
_MAX_SERVICE_NAME = 63
_HASH_LENGTH = 10


def revision_service_name(md_name: str, revision: str) -> str:
    """The Service of one revision: named like the revision (``<md>-<hash>``), which the schema keeps short.

    A revision that does not start with ``<md>-`` gets that prefix; a name longer than 63 characters is cut
    and ends in a hash of the whole name instead, so distinct revisions keep distinct, stable names.
    """
    name = revision if revision.startswith(f"{md_name}-") else f"{md_name}-{revision}"
    if len(name) <= _MAX_SERVICE_NAME:
        return name
    head = name[:_MAX_SERVICE_NAME - _HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{canonical_hash(name, _HASH_LENGTH)}"


def build_revision_service(owner: Owner, revision: str) -> dict[str, Any]:
    """A ClusterIP Service selecting only one revision's pods: a weighted backend of a Gateway API route."""
    labels = common_labels(owner.name, "revision-service", revision)
    return stamp_hash({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(revision_service_name(owner.name, revision), owner, labels),
        "spec": {"type": "ClusterIP", "selector": {**selector_labels(owner.name), LABEL_REVISION: revision},
                 "ports": build_service(owner)["spec"]["ports"]},  # the same ports, by construction
    })


def is_model_service(md_name: str, name: str) -> bool:
    """Whether a Service name is the ModelDeployment's Service or one of its revision Services.

    Revision Services are recognised by name (``<md>-`` and ten hex digits, as ``revision_of`` makes them),
    so a route that still points at an earlier revision is recognised without knowing that revision. (Names
    cut to 63 characters are not: they need a ModelDeployment name past the schema's 45-character limit.)
    """
    pattern = rf"{re.escape(md_name)}-[0-9a-f]{{{_HASH_LENGTH}}}"
    return name == service_name(md_name) or re.fullmatch(pattern, name) is not None
