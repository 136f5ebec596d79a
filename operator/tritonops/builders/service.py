"""The Service in front of a ModelDeployment's Triton pods (HTTP, gRPC and metrics)."""

from __future__ import annotations

from typing import Any

from tritonops.builders.meta import Owner, common_labels, metadata, selector_labels, stamp_hash
from tritonops_runtime.contract import GRPC_PORT, HTTP_PORT, METRICS_PORT


def service_name(md_name: str) -> str:
    """The Service is named like the ModelDeployment: clients use ``<name>.<namespace>.svc``."""
    return md_name


def build_service(owner: Owner) -> dict[str, Any]:
    """A ClusterIP Service selecting the serving pods of every revision."""
    ports = [
        {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP",
         "appProtocol": "http"},
    ]
    return stamp_hash({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(service_name(owner.name), owner, common_labels(owner.name, "inference-service")),
        "spec": {"type": "ClusterIP", "selector": selector_labels(owner.name), "ports": ports},
    })
