"""kopf wiring: every trigger only enqueues the owning ModelDeployment; the controller does the work.

kopf watches the ModelDeployments (``on.event`` only, so it adds no finalizer and keeps no per-object state:
the operator never blocks deletion and GitOps tools see no annotations of ours); each version goes into
:mod:`tritonops.cache` before its cycle is queued. The children are watched by :mod:`tritonops.informer`
(lighter than kopf's per-object machinery at thousands of objects); the workers start once those have
listed, so no cycle runs on an empty cache.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server

from tritonops.api import GROUP, PLURAL, VERSION
from tritonops.builders.job import LABEL_RETRAINING_OF
from tritonops.builders.meta import LABEL_MANAGED_BY, LABEL_MD, MANAGED_BY
from tritonops.cache import Cache
from tritonops.controller import Controller, ControllerConfig
from tritonops.informer import Informers
from tritonops.kube import Kube

CHILD_LABELS = {LABEL_MANAGED_BY: MANAGED_BY}
CHILD_KINDS = ("Deployment", "Service", "ConfigMap", "Pod", "Job")  # watched by informers, with CHILD_LABELS


@dataclass
class Runtime:
    """What ``tritonops run`` configures before kopf starts (set by the CLI)."""

    config: ControllerConfig = field(default_factory=ControllerConfig)
    qps: float = 50.0
    burst: int = 100
    metrics_port: int = 8080
    listen_address: str = "0.0.0.0"  # in a pod the kubelet and Prometheus reach it on the pod IP
    cache: Cache = field(default_factory=lambda: Cache(frozenset({"ModelDeployment", *CHILD_KINDS})))
    controller: Controller | None = None
    informers: Informers | None = None


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
    kube = Kube.from_environment(RUNTIME.qps, RUNTIME.burst)
    loop = asyncio.get_running_loop()
    controller = Controller(kube, RUNTIME.config, RUNTIME.cache)

    def notify(namespace: str, name: str) -> None:
        loop.call_soon_threadsafe(controller.enqueue, namespace, name)

    selector = ",".join(f"{k}={v}" for k, v in CHILD_LABELS.items())
    RUNTIME.informers = Informers(kube, RUNTIME.cache, CHILD_KINDS, RUNTIME.config.listed, selector,
                                  (LABEL_MD, LABEL_RETRAINING_OF), notify)
    RUNTIME.informers.start()
    controller.synced = RUNTIME.informers.wait_synced
    RUNTIME.controller = controller
    controller.queue.start()
    logger.info("tritonops controller started (metrics on :%s)", RUNTIME.metrics_port)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    """Stop the workers."""
    if RUNTIME.informers:
        RUNTIME.informers.stop()
    if RUNTIME.controller:
        await RUNTIME.controller.queue.stop()


@kopf.on.probe(id="workers")
def workers_probe(**_: Any) -> bool:
    """Liveness: the controller is running."""
    return RUNTIME.controller is not None


@kopf.on.event(GROUP, VERSION, PLURAL)
def model_deployment_event(type: str, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> None:
    """Any change to a ModelDeployment (and the initial listing) reconciles it."""
    if RUNTIME.controller is None or namespace is None:
        return
    if type == "DELETED":
        RUNTIME.cache.remove("ModelDeployment", namespace, name)
        RUNTIME.controller.forget(namespace, name)
    else:
        RUNTIME.cache.put("ModelDeployment", dict(body))  # top level copied; nested dicts are the event's own
        RUNTIME.controller.enqueue(namespace, name)


