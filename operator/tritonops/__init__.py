"""tritonops: a Kubernetes operator that serves models on NVIDIA Triton and runs their lifecycle.

Layers, top to bottom: ``handlers`` (kopf wiring) → ``controller`` (work queue, one reconcile cycle per
object) → ``planner`` (pure: spec + observed state → desired children and status) → ``builders``
(pure: one module per owned kind) → ``api`` (schema, CRD). Only ``kube`` talks to the API server.
"""

__version__ = "0.1.0"
FIELD_MANAGER = "tritonops"
# Owns only spec.replicas of a stable revision while a NoSurge canary borrows its replicas: applying that
# one field under FIELD_MANAGER would give up every other field the operator applied.
CAPACITY_MANAGER = "tritonops-capacity"
