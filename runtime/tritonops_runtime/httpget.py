"""HTTP(S) GET of one object into a file: streamed, hashed, size-limited, with a strict redirect policy.

Redirects (301, 302, 303, 307, 308) are followed at most :data:`MAX_REDIRECTS` times, and only to http(s)
URLs without user info. An https request is never redirected to http (the object, and any presigned
signature in the new URL, would travel in clear). The ``Host`` header is never carried over, and on a
redirect to another origin (scheme, host and port) the credential headers are dropped: ``Authorization``,
``Proxy-Authorization``, ``Cookie`` and every ``x-amz-*`` header (SigV4's date, payload hash and session
token). A signed S3 request redirected elsewhere therefore arrives unsigned, and is refused there, instead of
handing our signature (valid for minutes, replayable) or session token to a third party.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import Message
from pathlib import Path
from typing import IO
from urllib.parse import urljoin, urlsplit

from tritonops_runtime.errors import FetchError, size_limit_error
from tritonops_runtime.localfs import Budget, Download, write_stream
from tritonops_runtime.redaction import redact

TIMEOUT_S = 60.0
MAX_REDIRECTS = 5
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
CREDENTIAL_PREFIXES = ("x-amz-",)
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the port defaulted by scheme; a malformed port keeps the raw netloc."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return scheme, parts.netloc.rpartition("@")[2].lower(), None
    return scheme, parts.hostname or "", port or DEFAULT_PORTS.get(scheme)


def is_credential_header(name: str) -> bool:
    """Whether a request header carries credentials (never sent to another origin)."""
    low = name.lower()
    return low in CREDENTIAL_HEADERS or low.startswith(CREDENTIAL_PREFIXES)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handler with our limits: bounded, http(s) only, no downgrade, no credentials across."""

    max_redirections = max_repeats = MAX_REDIRECTS + 1  # our own count fails first, with our message

    def __init__(self, start: str) -> None:
        self.start, self.hops = start, 0

    def _refuse(self, old: str, new: str, why: str) -> FetchError:
        return FetchError(f"refusing the redirect from {redact(old)} to {redact(new)}: {why}")

    def _check(self, old: str, new: str) -> None:
        self.hops += 1
        if self.hops > MAX_REDIRECTS:
            raise FetchError(f"too many redirects fetching {redact(self.start)}: gave up after {MAX_REDIRECTS}")
        try:
            parts = urlsplit(new)
        except ValueError:
            raise self._refuse(old, new, "malformed URL") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise self._refuse(old, new, "only http and https redirects are followed")
        if urlsplit(old).scheme.lower() == "https" and scheme == "http":
            raise self._refuse(old, new, "an https download is never downgraded to http")
        if "@" in parts.netloc:
            raise self._refuse(old, new, "the new URL carries user info")

    def http_error_302(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                       headers: Message) -> IO[bytes] | None:
        """Check the target of a redirect against our policy, then let urllib follow it."""
        location = headers.get("location") or headers.get("uri")
        if location:
            try:
                self._check(req.full_url, urljoin(req.full_url, location.strip()))
            except FetchError:
                fp.close()
                raise
        return super().http_error_302(req, fp, code, msg, headers)  # type: ignore[arg-type]

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Message, newurl: str) -> urllib.request.Request | None:
        """urllib's new request, without ``Host`` and, across origins, without credential headers."""
        new = super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]
        if new is not None:
            cross = origin(req.full_url) != origin(new.full_url)
            for name in list(new.headers):
                if name.lower() == "host" or (cross and is_credential_header(name)):
                    del new.headers[name]
        return new


class _Hashing:
    """A response read through: hashes and counts what passes."""

    def __init__(self, src: IO[bytes]) -> None:
        self.src, self.digest, self.size = src, hashlib.sha256(), 0

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes of the response, hashed and counted."""
        chunk = self.src.read(n)
        self.digest.update(chunk)
        self.size += len(chunk)
        return chunk


def _http_error(err: urllib.error.HTTPError, url: str) -> FetchError:
    body = err.read(4096).decode("utf-8", "replace") if err.fp is not None else ""
    code = re.search(r"<Code>([^<]+)</Code>", body)
    detail = f" ({code.group(1)})" if code else ""
    where = redact(url)
    if err.code == 404:
        return FetchError(f"not found: HTTP 404{detail} fetching {where}")
    if err.code in (401, 403):
        return FetchError(f"access denied: HTTP {err.code}{detail} fetching {where}: check the credentials "
                          "secret (spec.model.credentials) and the object's permissions")
    return FetchError(f"HTTP {err.code}{detail} fetching {where}")


def _save(resp: IO[bytes], url: str, dest: Path, max_bytes: int) -> Download:
    length = getattr(resp, "headers", {}).get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise size_limit_error(redact(url), max_bytes, int(length))
    reader = _Hashing(resp)
    write_stream(reader, dest, Budget(max_bytes, redact(url)))
    return Download(dest, reader.digest.hexdigest(), reader.size)


def download(url: str, headers: Mapping[str, str], dest: Path, max_bytes: int) -> Download:
    """GET ``url`` into the new file ``dest`` (streaming), hashing it; at most ``max_bytes``; no partial file left."""
    request = urllib.request.Request(url, headers=dict(headers), method="GET")
    opener = urllib.request.build_opener(_Redirects(url))
    try:
        with opener.open(request, timeout=TIMEOUT_S) as resp:
            return _save(resp, url, dest, max_bytes)
    except urllib.error.HTTPError as err:
        raise _http_error(err, url) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        raise FetchError(f"cannot fetch {redact(url)}: {getattr(err, 'reason', err)}") from None
