"""A thin Prometheus client: one instant query, one number (the adapter behind canary analysis).

``query`` returns the value of a query whose result is a single sample, None when the result is empty
(no series), and raises :class:`PrometheusError` when the server cannot be reached or rejects the query,
so that the caller can count either as a failed check. An optional bearer token and CA bundle cover
Prometheus behind authentication and TLS. :func:`measure` runs one analysis window's queries.
"""

from __future__ import annotations

import json
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonops.analysis import Run, Window, judge


@dataclass(frozen=True)
class Endpoint:
    """Where and how to query Prometheus."""

    url: str
    token: str = ""
    token_file: str = ""  # read at each use, so a rotated token is picked up
    ca_file: str = ""  # a CA bundle file (https)
    insecure_skip_verify: bool = False


def bearer(endpoint: Endpoint) -> str:
    """The endpoint's bearer token, read from its file at each use (a rotated token is picked up)."""
    return Path(endpoint.token_file).read_text().strip() if endpoint.token_file else endpoint.token


class PrometheusError(RuntimeError):
    """The query could not be answered (connection, HTTP status, bad query, unexpected result)."""


def _context(ca_file: str, insecure: bool) -> ssl.SSLContext | None:
    if insecure:
        return ssl._create_unverified_context()  # asked for by insecureSkipVerify
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return None


def query(base_url: str, promql: str, *, token: str = "", ca_file: str = "",
          insecure_skip_verify: bool = False, timeout: float = 5.0) -> float | None:
    """The single value of ``promql`` now; None for an empty result (or NaN, e.g. 0/0)."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = _context(ca_file, insecure_skip_verify)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout) as resp:
            body: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise PrometheusError(f"{err.code} from {base_url}: {err.read()[:300].decode(errors='replace')}") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise PrometheusError(f"cannot query {base_url}: {err}") from err
    data = body.get("data", {})
    result = data.get("result")
    if body.get("status") != "success" or result is None:
        raise PrometheusError(f"{base_url} answered {str(body)[:300]}")
    if data.get("resultType") == "scalar":
        value = float(result[1])
    elif not result:
        return None
    elif len(result) > 1:
        raise PrometheusError(f"{len(result)} series for a check that needs one: aggregate the query (sum, max)")
    else:
        value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def measure(run: Run, endpoint: Endpoint) -> Window:
    """Query every check of ``run`` and judge the window; a query the server cannot answer has no value."""
    errors: list[str] = []

    def one(promql: str) -> float | None:
        try:
            return query(endpoint.url, promql, token=endpoint.token, ca_file=endpoint.ca_file,
                         insecure_skip_verify=endpoint.insecure_skip_verify)
        except PrometheusError as err:
            errors.append(str(err))
            return None

    requests = one(run.requests_query)
    values = {c.name: one(c.query) for c in run.checks}
    return judge(run.checks, values, requests, run.min_requests, run.revision, tuple(errors))
