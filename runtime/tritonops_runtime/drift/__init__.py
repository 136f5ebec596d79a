"""The drift monitor: capture of sampled tensors from Triton's trace files, drift statistics against a
reference profile, and ground-truth quality, exported as Prometheus metrics by the ``drift-monitor``
sidecar. Nothing here sits on Triton's request path.
"""
