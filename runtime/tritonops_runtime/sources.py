"""Where a model comes from: storage URIs mapped to a local file or directory.

Schemes: ``file:///path`` and ``pvc://<claim>/<path>`` (mapped to ``<pvc root>/<path>``) are read in place
(a file or a directory); ``http(s)://``, ``s3://bucket/key`` and ``gs://bucket/object`` are downloaded into the
scratch directory, streaming, hashed on the fly and capped at ``max_bytes``.

S3: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` selects an S3-compatible endpoint (path-style addressing);
without it AWS is used (virtual-hosted style, ``AWS_REGION``/``AWS_DEFAULT_REGION``, default us-east-1).
GCS: public objects through ``https://storage.googleapis.com/<bucket>/<object>`` (anonymous).
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from tritonops_runtime import sigv4
from tritonops_runtime.errors import FetchError

SCHEMES = ("file", "pvc", "http", "https", "s3", "gs")
CHUNK = 1 << 20
TIMEOUT_S = 60.0
GCS_ENDPOINT = "https://storage.googleapis.com"


@dataclass(frozen=True)
class Download:
    """A fetched source: a local path (file or directory) and, for files, their sha256 and size."""

    path: Path
    sha256: str = ""
    size: int = 0


def redact(url: str) -> str:
    """``url`` without user info and query string (presigned signatures, tokens) for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def gcs_url(uri: str) -> str:
    """``gs://bucket/object`` -> the public HTTPS URL of the object."""
    parts = urlsplit(uri)
    if not parts.netloc or not parts.path.strip("/"):
        raise FetchError(f"bad GCS URI {uri!r}: expected gs://<bucket>/<object>")
    return f"{GCS_ENDPOINT}/{parts.netloc}/{quote(unquote(parts.path.lstrip('/')), safe='/-_.~')}"


def pvc_path(uri: str, pvc_root: Path) -> Path:
    """``pvc://claim/sub/path`` -> ``pvc_root/sub/path``, refusing paths that leave the root."""
    parts = urlsplit(uri)
    if not parts.netloc:
        raise FetchError(f"bad PVC URI {uri!r}: expected pvc://<claim>/<path>")
    rel = unquote(parts.path).lstrip("/")
    if any(p == ".." for p in rel.split("/")):
        raise FetchError(f"bad PVC URI {uri!r}: '..' is not allowed")
    return pvc_root / rel


def s3_request(uri: str, env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The URL and headers of a GET for ``s3://bucket/key`` (signed when credentials are set)."""
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise FetchError(f"bad S3 URI {uri!r}: expected s3://<bucket>/<key>")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").rstrip("/")
    if endpoint:
        ep = urlsplit(endpoint)
        base, path = f"{ep.scheme}://{ep.netloc}", f"{ep.path}/{bucket}/{key}"
    elif "." in bucket:
        base, path = f"https://s3.{region}.amazonaws.com", f"/{bucket}/{key}"
    else:
        base, path = f"https://{bucket}.s3.{region}.amazonaws.com", f"/{key}"
    url = base + sigv4.uri_encode_path(path)
    access, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not (access and secret):
        return url, {}
    creds = sigv4.Credentials(access, secret, env.get("AWS_SESSION_TOKEN", ""))
    return url, sigv4.sign("GET", urlsplit(url).netloc, path, creds, region)


def _http_error(err: urllib.error.HTTPError, url: str) -> FetchError:
    body = err.read(4096).decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]+)</Code>", body)
    detail = f" ({code.group(1)})" if code else ""
    where = redact(url)
    if err.code == 404:
        return FetchError(f"not found: HTTP 404{detail} fetching {where}")
    if err.code in (401, 403):
        return FetchError(f"access denied: HTTP {err.code}{detail} fetching {where}: check the credentials "
                          "secret (spec.model.credentials) and the object's permissions")
    return FetchError(f"HTTP {err.code}{detail} fetching {where}")


def download(url: str, headers: Mapping[str, str], dest: Path, max_bytes: int) -> Download:
    """GET ``url`` into ``dest`` (streaming), hashing it; at most ``max_bytes``."""
    request = urllib.request.Request(url, headers=dict(headers), method="GET")
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp, dest.open("wb") as out:
            length = resp.headers.get("Content-Length")
            if length and int(length) > max_bytes:
                raise FetchError(f"{redact(url)} is {int(length)} bytes, over the limit of {max_bytes} "
                                 f"(TRITONOPS_MAX_BYTES)")
            while chunk := resp.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"{redact(url)} exceeds the limit of {max_bytes} bytes (TRITONOPS_MAX_BYTES)")
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as err:
        raise _http_error(err, url) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(f"cannot fetch {redact(url)}: {reason}") from None
    return Download(dest, digest.hexdigest(), size)


def resolve(uri: str, scratch: Path, pvc_root: Path, max_bytes: int,
            env: Mapping[str, str] | None = None) -> Download:
    """The local file or directory holding ``uri``'s content (downloading remote objects to ``scratch``)."""
    env = os.environ if env is None else env
    scheme = urlsplit(uri).scheme.lower()
    if scheme not in SCHEMES:
        what = f"scheme {scheme}://" if scheme else f"{redact(uri)!r} (no scheme)"
        raise FetchError(f"unsupported storage URI {what}: use one of {', '.join(s + '://' for s in SCHEMES)}")
    if scheme in ("file", "pvc"):
        path = Path(unquote(urlsplit(uri).path)) if scheme == "file" else pvc_path(uri, pvc_root)
        if not path.exists():
            raise FetchError(f"not found: {path} ({redact(uri)})")
        return Download(path)
    name = Path(unquote(urlsplit(uri).path)).name
    name = name if name not in ("", ".", "..") else "download"
    dest = scratch / name
    if scheme == "s3":
        url, headers = s3_request(uri, env)
    else:
        url, headers = (gcs_url(uri) if scheme == "gs" else uri), {}
    return download(url, headers, dest, max_bytes)
