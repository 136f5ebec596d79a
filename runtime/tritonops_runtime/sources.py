"""Where a model comes from: storage URIs mapped to a local file or directory.

Schemes: ``file:///path`` and ``pvc://<claim>/<path>`` (mapped to ``<pvc root>/<path>``) are read in place
(a file or a directory); ``http(s)://``, ``s3://bucket/key`` and ``gs://bucket/object`` are downloaded into the
scratch directory, streaming, hashed on the fly and capped at ``max_bytes`` (see
:mod:`tritonops_runtime.httpget`, which also sets the redirect policy).

A ``pvc://`` path must not go through a symbolic link (any component, the last one included) and must resolve
inside the claim. URIs with user info (``https://user:password@host/...``) are refused: they would be sent
in clear to every redirect target and end up in logs.

S3: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` selects an S3-compatible endpoint (path-style addressing);
without it AWS is used (virtual-hosted style, ``AWS_REGION``/``AWS_DEFAULT_REGION``, default us-east-1).
Requests are signed (SigV4) when ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` are set, with
``AWS_SESSION_TOKEN`` when set. These are all the variables read: ``contract.CREDENTIAL_ENV_KEYS``.
GCS: public objects through ``https://storage.googleapis.com/<bucket>/<object>`` (anonymous).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from tritonops_runtime import contract as c
from tritonops_runtime import sigv4
from tritonops_runtime.errors import FetchError
from tritonops_runtime.httpget import download
from tritonops_runtime.localfs import Download, path_beneath
from tritonops_runtime.redaction import redact

__all__ = ["SCHEMES", "Download", "FetchError", "download", "gcs_url", "pvc_path", "redact", "request_for",
           "resolve", "s3_request"]

SCHEMES = ("file", "pvc", "http", "https", "s3", "gs")
GCS_ENDPOINT = "https://storage.googleapis.com"


def gcs_url(uri: str) -> str:
    """``gs://bucket/object`` -> the public HTTPS URL of the object."""
    parts = urlsplit(uri)
    if not parts.netloc or not parts.path.strip("/"):
        raise FetchError(f"bad GCS URI {redact(uri)!r}: expected gs://<bucket>/<object>")
    return f"{GCS_ENDPOINT}/{parts.netloc}/{quote(unquote(parts.path.lstrip('/')), safe='/-_.~')}"


def pvc_path(uri: str, pvc_root: Path) -> Path:
    """``pvc://claim/sub/path`` -> ``pvc_root/sub/path``, refusing '..', symbolic links and paths leaving the root."""
    parts = urlsplit(uri)
    if not parts.netloc:
        raise FetchError(f"bad PVC URI {redact(uri)!r}: expected pvc://<claim>/<path>")
    rel = unquote(parts.path).lstrip("/")
    if any(p == ".." for p in rel.split("/")):
        raise FetchError(f"bad PVC URI {redact(uri)!r}: '..' is not allowed")
    return path_beneath(pvc_root, rel, redact(uri))


def s3_request(uri: str, env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The URL and headers of a GET for ``s3://bucket/key`` (signed when credentials are set)."""
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise FetchError(f"bad S3 URI {redact(uri)!r}: expected s3://<bucket>/<key>")
    region = env.get(c.ENV_AWS_REGION) or env.get(c.ENV_AWS_DEFAULT_REGION) or "us-east-1"
    endpoint = (env.get(c.ENV_AWS_ENDPOINT_URL_S3) or env.get(c.ENV_AWS_ENDPOINT_URL) or "").rstrip("/")
    if endpoint:
        ep = urlsplit(endpoint)
        base, path = f"{ep.scheme}://{ep.netloc}", f"{ep.path}/{bucket}/{key}"
    elif "." in bucket:
        base, path = f"https://s3.{region}.amazonaws.com", f"/{bucket}/{key}"
    else:
        base, path = f"https://{bucket}.s3.{region}.amazonaws.com", f"/{key}"
    url = base + sigv4.uri_encode_path(path)
    access, secret = env.get(c.ENV_AWS_ACCESS_KEY_ID, ""), env.get(c.ENV_AWS_SECRET_ACCESS_KEY, "")
    if not (access and secret):
        return url, {}
    creds = sigv4.Credentials(access, secret, env.get(c.ENV_AWS_SESSION_TOKEN, ""))
    return url, sigv4.sign("GET", urlsplit(url).netloc, path, creds, region)


def request_for(uri: str, env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The URL and headers of the GET that downloads a remote ``uri`` (s3://, gs://, http(s)://)."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "s3":
        return s3_request(uri, env)
    return (gcs_url(uri) if scheme == "gs" else uri), {}


def _check_uri(uri: str) -> str:
    """The URI's scheme, after refusing unsupported schemes and user info."""
    try:
        parts = urlsplit(uri)
    except ValueError as err:
        raise FetchError(f"bad storage URI {redact(uri)!r}: {err}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        what = f"scheme {scheme}://" if scheme else f"{redact(uri)!r} (no scheme)"
        raise FetchError(f"unsupported storage URI {what}: use one of {', '.join(s + '://' for s in SCHEMES)}")
    if "@" in parts.netloc:
        raise FetchError(f"credentials in the URI {redact(uri)} are not supported: the fetcher authenticates "
                         "only s3:// requests, with the Secret named by spec.model.credentials.secretName")
    return scheme


def resolve(uri: str, scratch: Path, pvc_root: Path, max_bytes: int,
            env: Mapping[str, str] | None = None) -> Download:
    """The local file or directory holding ``uri``'s content (downloading remote objects to ``scratch``)."""
    env = os.environ if env is None else env
    scheme = _check_uri(uri)
    if scheme in ("file", "pvc"):
        # file:// names any path of the container (no root to stay in): links there are the user's own and
        # are resolved once, here; what is opened later is then never a link (O_NOFOLLOW).
        path = Path(unquote(urlsplit(uri).path)).resolve() if scheme == "file" else pvc_path(uri, pvc_root)
        if not path.exists():
            raise FetchError(f"not found: {path} ({redact(uri)})")
        return Download(path)
    name = Path(unquote(urlsplit(uri).path)).name
    name = name if name not in ("", ".", "..") else "download"
    url, headers = request_for(uri, env)
    return download(url, headers, scratch / name, max_bytes)
