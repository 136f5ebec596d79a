"""kopf wiring: every trigger only enqueues the owning ModelDeployment; the controller does the work.

Only ``on.event`` handlers are used, so kopf adds no finalizer and keeps no per-object state: the
operator never blocks deletion and GitOps tools see no annotations of ours.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server

from tritonops.api import GROUP, PLURAL, VERSION
from tritonops.builders.meta import LABEL_MANAGED_BY, LABEL_MD, MANAGED_BY
from tritonops.controller import Controller, ControllerConfig
from tritonops.kube import Kube

CHILD_LABELS = {LABEL_MANAGED_BY: MANAGED_BY}


@dataclass
class Runtime:
    """What ``tritonops run`` configures before kopf starts (set by the CLI)."""

    config: ControllerConfig = field(default_factory=ControllerConfig)
    qps: float = 20.0
    burst: int = 40
    metrics_port: int = 8080
    listen_address: str = "0.0.0.0"  # in a pod the kubelet and Prometheus reach it on the pod IP
    controller: Controller | None = None


RUNTIME = Runtime()


@kopf.on.startup()
async def startup(
    settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    """Configure kopf, start metrics and the controller's workers."""
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.lastHandled")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.request_timeout = 30
    if RUNTIME.metrics_port:
        start_http_server(RUNTIME.metrics_port, addr=RUNTIME.listen_address)
    RUNTIME.controller = Controller(Kube.from_environment(RUNTIME.qps, RUNTIME.burst), RUNTIME.config)
    RUNTIME.controller.queue.start()
    logger.info("tritonops controller started (metrics on :%s)", RUNTIME.metrics_port)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    """Stop the workers."""
    if RUNTIME.controller:
        await RUNTIME.controller.queue.stop()


@kopf.on.probe(id="workers")
def workers_probe(**_: Any) -> bool:
    """Liveness: the controller is running."""
    return RUNTIME.controller is not None


@kopf.on.event(GROUP, VERSION, PLURAL)
def model_deployment_event(type: str, namespace: str | None, name: str, **_: Any) -> None:
    """Any change to a ModelDeployment (and the initial listing) reconciles it."""
    if RUNTIME.controller is None or namespace is None:
        return
    if type == "DELETED":
        RUNTIME.controller.forget(namespace, name)
    else:
        RUNTIME.controller.enqueue(namespace, name)


def _child_event(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    owner = labels.get(LABEL_MD)
    if RUNTIME.controller is not None and owner and namespace:
        RUNTIME.controller.enqueue(namespace, owner)


kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS, id="deployment-event")(_child_event)
kopf.on.event("", "v1", "services", labels=CHILD_LABELS, id="service-event")(_child_event)
kopf.on.event("", "v1", "configmaps", labels=CHILD_LABELS, id="configmap-event")(_child_event)
kopf.on.event("", "v1", "pods", labels=CHILD_LABELS, id="pod-event")(_child_event)
kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS, id="job-event")(_child_event)
