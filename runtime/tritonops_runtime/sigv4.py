"""AWS Signature Version 4 for S3 object reads, over the standard library only.

The fetcher only needs ``GET <object>``, so the runtime image carries this small signer instead of boto3
(and botocore's ~80 MB of service models). Credentials come from the usual environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``); without them requests
are sent unsigned (public buckets). Instance-profile / IRSA credential discovery is not implemented.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    """An access key pair and an optional session token (STS)."""

    access_key: str
    secret_key: str
    session_token: str = ""


def uri_encode_path(path: str) -> str:
    """S3's canonical URI: every byte except unreserved characters and '/' percent-encoded, once."""
    return quote(path, safe="/-_.~")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str = "s3") -> bytes:
    """The derived key ``kSigning`` for one day, region and service."""
    k_date = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


def canonical_request(method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
                      payload_hash: str) -> tuple[str, str]:
    """The canonical request and its signed-headers list (header names lower-cased and sorted)."""
    canon_headers = {k.lower().strip(): " ".join(v.strip().split()) for k, v in headers.items()}
    names = sorted(canon_headers)
    query_str = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
    header_block = "".join(f"{n}:{canon_headers[n]}\n" for n in names)
    signed = ";".join(names)
    text = "\n".join([method, uri_encode_path(path), query_str, header_block, signed, payload_hash])
    return text, signed


def sign(method: str, host: str, path: str, creds: Credentials, region: str, *,
         query: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
         payload_hash: str = UNSIGNED_PAYLOAD, now: dt.datetime | None = None) -> dict[str, str]:
    """The headers to send (the given ones plus ``x-amz-*`` and ``Authorization``) for a signed request.

    ``host`` is the Host header exactly as sent (with ``:port`` when not the scheme's default);
    ``path`` is the decoded object path (``/bucket/key`` for path-style addressing).
    """
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    out = {"host": host, **(headers or {}), "x-amz-date": stamp, "x-amz-content-sha256": payload_hash}
    if creds.session_token:
        out["x-amz-security-token"] = creds.session_token
    request, signed = canonical_request(method, path, query or {}, out, payload_hash)
    scope = f"{stamp[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(request.encode("utf-8")).hexdigest()])
    signature = hmac.new(signing_key(creds.secret_key, stamp[:8], region), to_sign.encode("utf-8"),
                         hashlib.sha256).hexdigest()
    out["Authorization"] = (f"{ALGORITHM} Credential={creds.access_key}/{scope}, SignedHeaders={signed}, "
                            f"Signature={signature}")
    return out
