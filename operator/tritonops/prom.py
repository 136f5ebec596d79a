"""A thin Prometheus client: one instant query, one number (the adapter behind canary analysis).

``query`` returns the value of a query whose result is a single sample, None when the result is empty
(no series), and raises :class:`PrometheusError` when the server cannot be reached or rejects the query,
so that the caller can count either as a failed check. An optional bearer token and CA bundle cover
Prometheus behind authentication and TLS.
"""

from __future__ import annotations

import json
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class PrometheusError(RuntimeError):
    """The query could not be answered (connection, HTTP status, bad query, unexpected result)."""


def query(base_url: str, promql: str, *, token: str = "", ca_file: str = "", timeout: float = 5.0) -> float | None:
    """The single value of ``promql`` now; None for an empty result (or NaN, e.g. 0/0)."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
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
