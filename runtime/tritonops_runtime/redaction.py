"""Keeping secrets out of what the fetcher prints: URLs, signed query parameters and known secret values.

Every line the fetcher prints or writes (stderr, the termination message, the report) goes through
:func:`redact_text`, whatever produced it (our messages, urllib's, http.client's, tarfile's):

- each URL in the text loses its user info, query string and fragment (:func:`redact`);
- a signing parameter outside a URL (``X-Amz-Signature=...``, ``sig=...``, ``token=...``) loses its value;
- known secret values (the URI's user info and signed parameters, the secret keys of the environment named in
  :data:`tritonops_runtime.contract.SECRET_ENV_KEYS`) are replaced wherever they appear, e.g. inside
  ``nonnumeric port: 'secret@host'``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus, urlsplit

from tritonops_runtime import contract as c

REDACTED = "<redacted>"
# Query parameters that carry a signature, a credential or a token (compared case-insensitively).
SIGNED_PARAMS = frozenset({
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential",
    "awsaccesskeyid", "signature", "sig", "token", "access_token", "id_token", "refresh_token", "api_key",
    "apikey", "key", "password", "secret", "client_secret",
})
MIN_SECRET = 4  # shorter known values are not scrubbed literally (they would mangle ordinary words)

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*")
_PARAM = re.compile(r"(?i)(?<![\w-])(" + "|".join(re.escape(p) for p in sorted(SIGNED_PARAMS, key=len, reverse=True))
                    + r")=[^&\s'\"<>;,]*")


def redact(url: str) -> str:
    """``url`` without user info, query string and fragment (presigned signatures, tokens), for messages.

    Never fails: malformed URLs (a bad port, a broken IPv6 literal) are cut the same way.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _PARAM.sub(_hide_value, url)
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def _hide_value(match: re.Match[str]) -> str:
    return f"{match.group(1)}={REDACTED}"


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: user name and password, values of signed query parameters (raw and decoded)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    userinfo, at, _ = parts.netloc.rpartition("@")
    found = [v for v in (*userinfo.split(":", 1), userinfo) if v] if at else []
    for pair in f"{parts.query}&{parts.fragment}".split("&"):
        name, _, value = pair.partition("=")
        if unquote_plus(name).lower() in SIGNED_PARAMS and value:
            found.append(value)
    return found + [unquote_plus(v) for v in found if unquote_plus(v) != v]


def known_secrets(env: Mapping[str, str], texts: Iterable[str]) -> list[str]:
    """Secret values to scrub: the environment's secret keys and the secrets of every URL in ``texts``."""
    found = [env.get(key, "") for key in c.SECRET_ENV_KEYS]
    for text in texts:
        for match in _URL.finditer(text):
            found += url_secrets(match.group(0))
    return [s for s in found if s]


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL redacted, signed parameters' values hidden and ``secrets`` replaced."""
    out = _URL.sub(lambda m: redact(m.group(0)), text)
    out = _PARAM.sub(_hide_value, out)
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    return out
