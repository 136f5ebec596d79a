"""The I/O side of canary analysis: which Prometheus a ModelDeployment's checks go to, and one measurement.

The operator's Prometheus comes from its flags (chart value ``analysis.prometheus``: URL, bearer token file,
CA bundle); a ModelDeployment may name another address in ``spec.rollout.canary.analysis.prometheus``, which
is queried with the operator's token and CA (the operator has no permission to read Secrets, by design).
Anything that keeps the window from being measured (an unreadable token file, an unreachable server)
becomes a failed window with the reason, never a skipped one (fail closed).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from tritonops import analysis as a
from tritonops.prom import Endpoint, bearer, measure

log = logging.getLogger(__name__)


def endpoint_for(md: dict[str, Any], default: Endpoint | None) -> Endpoint:
    """The Prometheus of ``md``'s analysis (raises LookupError naming the fix when there is none)."""
    own = md["spec"]["rollout"]["canary"]["analysis"].get("prometheus") or {}
    base = default or Endpoint("")
    if not own and not base.url:
        raise LookupError("no Prometheus: set spec.rollout.canary.analysis.prometheus.address or the chart value "
                          "analysis.prometheus.url")
    token = bearer(base)
    if own:
        return Endpoint(own["address"], token, "", base.ca_file, bool(own.get("insecureSkipVerify")))
    return Endpoint(base.url, token, "", base.ca_file, base.insecure_skip_verify)


def measure_due(md: dict[str, Any], default: Endpoint | None, now: datetime) -> a.Window | None:
    """The window due for ``md``'s canary now, measured; None when none is due."""
    run = a.due(md, now)
    if run is None:
        return None
    try:
        endpoint = endpoint_for(md, default)
    except (LookupError, OSError) as err:
        return a.judge(run.checks, {c.name: None for c in run.checks}, None, run.min_requests, run.revision,
                       (str(err),))
    window = measure(run, endpoint)
    log.info("analysis of %s/%s revision %s: %s", run.namespace, md["metadata"]["name"], run.revision,
             window.message())
    return window
