"""Read what the drift monitors of a ModelDeployment report, from Prometheus (the I/O side of drift).

The sidecars export per pod; the operator aggregates over the ModelDeployment's pods (the PodMonitor
labels them ``namespace`` and ``modeldeployment``): drift is declared when any pod declared it, the score
is the worst pod's, quality the worst pod's window. Read at most once per ``min(60 s,
spec.drift.intervalSeconds)`` (the monitors change no faster), and only with ``spec.drift.enabled``.
An unreachable Prometheus is reported in ``status.drift.message``; it never triggers a retraining.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from tritonops.canary import parse_time
from tritonops.prom import Endpoint, PrometheusError, bearer, query
from tritonops.retrain_plan import DriftReading

log = logging.getLogger(__name__)
QUERIES = {
    "detected": "max(tritonops_drift_detected{{{sel}}})",
    "score": "max(tritonops_drift_window_score{{{sel}}})",
    "prediction_psi": "max(tritonops_prediction_drift_psi{{{sel}}})",
    "windows": "sum(tritonops_drift_windows_total{{{sel}}})",
    "quality": "min(tritonops_quality{{{sel}}})",
    "quality_pairs": "min(tritonops_quality_pairs{{{sel}}})",
    "quality_below": "max(tritonops_quality_below_minimum{{{sel}}})",
}


def reading_due(md: dict[str, Any], now: datetime) -> bool:
    """Whether the drift monitors are to be read this cycle."""
    drift = md["spec"].get("drift") or {}
    if not drift.get("enabled"):
        return False
    last = parse_time(((md.get("status") or {}).get("drift") or {}).get("lastCheckTime"))
    every = min(60, int(drift.get("intervalSeconds", 300)))
    return last is None or (now - last).total_seconds() >= every


def read_drift(md: dict[str, Any], endpoint: Endpoint | None) -> DriftReading:
    """One reading of the monitors of ``md`` (``error`` set when Prometheus could not be read)."""
    if endpoint is None or not endpoint.url:
        return DriftReading(error="no Prometheus to read the drift monitors from: install the operator with the "
                                  "chart value analysis.prometheus.url")
    meta = md["metadata"]
    sel = f'namespace="{meta["namespace"]}",modeldeployment="{meta["name"]}"'
    token = bearer(endpoint)
    values: dict[str, float | None] = {}
    try:
        for key, template in QUERIES.items():
            values[key] = query(endpoint.url, template.format(sel=sel), token=token, ca_file=endpoint.ca_file,
                                insecure_skip_verify=endpoint.insecure_skip_verify)
    except (PrometheusError, OSError) as err:
        log.warning("drift of %s/%s: %s", meta["namespace"], meta["name"], err)
        return DriftReading(error=str(err)[:500])
    return DriftReading.from_values(values)
