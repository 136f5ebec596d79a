"""Writing a version directory to the model store, never over an existing version.

The store is ``--output-uri`` (``spec.retraining.outputStorageUri``); version ``N`` goes to ``<output>/<N>/``.
A version exists as soon as anything is under ``<output>/<N>/`` (a partly written version included), so the
next version is one more than the highest integer name found there, and a number that holds anything is never
written again.

**file:// and pvc://** (pvc:// maps to ``--pvc-root`` like the fetcher's, refusing symbolic links and
``..``): the files are copied into a hidden ``<output>/.<N>.partial-*`` directory (modes 0755/0644) and renamed
to ``<N>`` with ``renameat2(RENAME_NOREPLACE)``, which fails if ``<N>`` appeared meanwhile. Readers see no
version or a complete one. Where ``renameat2`` is missing (non-glibc) or refused by the file system, an
existence check then ``rename(2)`` is used, which could only replace a directory that is empty. A run killed
mid-copy leaves a hidden ``.partial-*`` directory, never a version.

**s3://**: SigV4 requests (:mod:`tritonops_runtime.sigv4`) with the fetcher's variables (credentials, region,
endpoint; the URL and addressing style come from :func:`tritonops_runtime.sources.s3_request`). ``ListObjectsV2``
finds the versions and checks that ``<N>/`` is empty; then each object is uploaded with ``If-None-Match: *``
(a conditional write: S3 answers 412 if the key exists), ``model.pt`` first as the claim on the version and
``manifest.json`` last as the mark of a complete version. A failed upload deletes the objects this run
created. The credentials need ``s3:ListBucket`` on the prefix and ``s3:PutObject``/``s3:DeleteObject`` on its
objects. Servers that ignore ``If-None-Match`` on PUT leave a race between the listing and the first upload:
two runs writing the same version number at the same moment could interleave their objects. AWS S3 honours it
(since 2024-08); versitygw honours it only with its metadata store: the test server runs with ``--nometa``,
where it is silently ignored (tested both ways).

**gs:// and http(s)://** are read-only here: writing needs an authenticated write API, which the runtime
implements only for S3 (an S3-compatible endpoint works through ``AWS_ENDPOINT_URL_S3``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, unquote, urlencode, urlsplit
from xml.etree import ElementTree

from tritonops_runtime import contract as c
from tritonops_runtime import sigv4
from tritonops_runtime.fetch import file_sha256
from tritonops_runtime.retrain.config import RetrainError, VersionExistsError
from tritonops_runtime.sources import pvc_path, redact, s3_request

TIMEOUT_S = 60.0
_AT_FDCWD, _RENAME_NOREPLACE = -100, 1
_SIGNING_KEYS = (c.ENV_AWS_ACCESS_KEY_ID, c.ENV_AWS_SECRET_ACCESS_KEY, c.ENV_AWS_SESSION_TOKEN)


class Store(Protocol):
    """Where versions are written."""

    uri: str

    def versions(self) -> list[int]:
        """The integer version names present."""
        ...

    def exists(self, version: str) -> bool:
        """Whether anything is at ``<uri>/<version>/``."""
        ...

    def publish(self, version: str, files: Sequence[Path]) -> None:
        """Write ``files`` (in this order) as ``<uri>/<version>/<name>``; VersionExistsError if taken."""
        ...


def version_uri(store_uri: str, version: str, name: str = "") -> str:
    """``<store>/<version>/`` or ``<store>/<version>/<name>``."""
    return f"{store_uri.rstrip('/')}/{version}/{name}"


def next_version(store: Store, parent: str = "") -> str:
    """One more than the highest version in ``store`` and than ``parent`` (the serving model's version, so
    that a new store still continues the model's numbering: 1 for an empty store and no parent)."""
    floor = int(parent) if parent.isdigit() else 0
    return str(max(max(store.versions(), default=0), floor) + 1)


def _rename_noreplace(src: Path, dst: Path) -> None:
    func: Any = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if func is not None:
        rc = func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        err = ctypes.get_errno()
        if rc == 0:
            return
        if err in (errno.EEXIST, errno.ENOTEMPTY):
            raise VersionExistsError(f"{dst} appeared while this version was being written")
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise VersionExistsError(f"{dst} already exists")
    os.rename(src, dst)


class LocalStore:
    """A directory (file:// or pvc://)."""

    def __init__(self, uri: str, root: Path) -> None:
        self.uri, self.root = uri, root

    def versions(self) -> list[int]:
        """Integer-named entries of the store directory."""
        if not self.root.is_dir():
            return []
        return [int(p.name) for p in self.root.iterdir() if p.name.isdigit()]

    def exists(self, version: str) -> bool:
        """Whether ``<root>/<version>`` exists (anything, a link included)."""
        return os.path.lexists(self.root / version)

    def publish(self, version: str, files: Sequence[Path]) -> None:
        """Copy into a hidden directory next to the version, then rename it into place (no replacing)."""
        if self.exists(version):
            raise VersionExistsError(f"version {version} already exists at {redact(version_uri(self.uri, version))}")
        self.root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{version}.partial-"))
        try:
            for src in files:
                dest = partial / src.name
                shutil.copyfile(src, dest)
                dest.chmod(0o644)
                with dest.open("rb") as f:
                    os.fsync(f.fileno())
            partial.chmod(0o755)
            _rename_noreplace(partial, self.root / version)
        finally:
            shutil.rmtree(partial, ignore_errors=True)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Signed writes are never replayed elsewhere: a redirect is an error."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Refuse every redirect (urllib then raises the 3xx as an HTTPError)."""
        return None


class S3Store:
    """An ``s3://bucket/prefix`` store, written with conditional PUTs."""

    def __init__(self, uri: str, env: Mapping[str, str]) -> None:
        parts = urlsplit(uri)
        self.uri, self.bucket, self.env = uri, parts.netloc, env
        self.prefix = unquote(parts.path).strip("/")
        if not self.bucket:
            raise RetrainError(f"bad S3 URI {redact(uri)!r}: expected s3://<bucket>/<prefix>")
        self.region = env.get(c.ENV_AWS_REGION) or env.get(c.ENV_AWS_DEFAULT_REGION) or "us-east-1"
        access, secret = env.get(c.ENV_AWS_ACCESS_KEY_ID, ""), env.get(c.ENV_AWS_SECRET_ACCESS_KEY, "")
        self.creds = sigv4.Credentials(access, secret, env.get(c.ENV_AWS_SESSION_TOKEN, "")) \
            if access and secret else None
        self._opener = urllib.request.build_opener(_NoRedirects())

    def key(self, version: str, name: str = "") -> str:
        """The object key of ``<prefix>/<version>/<name>``."""
        return "/".join(p for p in (self.prefix, version, name) if p) + ("" if name else "/")

    def _url(self, key: str) -> str:
        """The URL of an object (``key``) or of the bucket (``key`` empty, trailing '/')."""
        unsigned = {k: v for k, v in self.env.items() if k not in _SIGNING_KEYS}
        encoded = quote(key or "x", safe="/-_.~")
        url, _ = s3_request(f"s3://{self.bucket}/{encoded}", unsigned)
        return url if key else url[:-1]

    def _send(self, method: str, key: str, query: Mapping[str, str] | None = None,
              headers: Mapping[str, str] | None = None, body: BinaryIO | None = None,
              payload_hash: str = sigv4.EMPTY_SHA256) -> bytes:
        url, query = self._url(key), dict(query or {})
        parts = urlsplit(url)
        sent = dict(headers or {})
        if self.creds is not None:
            sent = sigv4.sign(method, parts.netloc, unquote(parts.path), self.creds, self.region, query=query,
                              headers=sent, payload_hash=payload_hash)
        full = url + ("?" + urlencode(query, quote_via=quote, safe="-_.~") if query else "")
        request = urllib.request.Request(full, data=body, headers=sent, method=method)
        try:
            with self._opener.open(request, timeout=TIMEOUT_S) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as err:
            raise _s3_error(err, method, f"s3://{self.bucket}/{key}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise RetrainError(f"cannot reach S3 for {method} s3://{self.bucket}/{key}: "
                               f"{getattr(err, 'reason', err)}") from None

    def _list(self, prefix: str, delimiter: str = "", max_keys: int = 1000,
              all_pages: bool = True) -> tuple[list[str], list[str]]:
        """(keys, common prefixes) under ``prefix``: all pages, or only the first."""
        keys: list[str] = []
        prefixes: list[str] = []
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys)}
            query.update({"delimiter": delimiter} if delimiter else {})
            query.update({"continuation-token": token} if token else {})
            try:
                root = ElementTree.fromstring(self._send("GET", "", query))
            except ElementTree.ParseError as err:
                raise RetrainError(f"unreadable S3 listing of s3://{self.bucket}/{prefix}: {err}") from None
            keys += [k.text or "" for k in root.findall("{*}Contents/{*}Key")]
            prefixes += [p.text or "" for p in root.findall("{*}CommonPrefixes/{*}Prefix")]
            token = root.findtext("{*}NextContinuationToken") or ""
            if not all_pages or root.findtext("{*}IsTruncated") != "true" or not token:
                return keys, prefixes

    def versions(self) -> list[int]:
        """Integer names of the "directories" directly under the prefix."""
        base = f"{self.prefix}/" if self.prefix else ""
        _, prefixes = self._list(base, "/")
        names = [p[len(base):].rstrip("/") for p in prefixes if p.startswith(base)]
        return [int(n) for n in names if n.isdigit()]

    def exists(self, version: str) -> bool:
        """Whether any object's key starts with ``<prefix>/<version>/``."""
        keys, _ = self._list(self.key(version), max_keys=1, all_pages=False)
        return bool(keys)

    def put_new(self, key: str, path: Path) -> None:
        """Upload ``path`` to ``key`` only if ``key`` does not exist (``If-None-Match: *``)."""
        headers = {"If-None-Match": "*", "Content-Length": str(path.stat().st_size),
                   "Content-Type": "application/octet-stream"}
        with path.open("rb") as body:
            self._send("PUT", key, headers=headers, body=body, payload_hash=file_sha256(path))

    def delete(self, key: str) -> None:
        """Delete an object; errors are ignored (best-effort cleanup)."""
        with contextlib.suppress(RetrainError):
            self._send("DELETE", key)

    def publish(self, version: str, files: Sequence[Path]) -> None:
        """Upload every file with a conditional PUT, in order; on failure delete what was created."""
        if self.exists(version):
            raise VersionExistsError(f"version {version} already exists at {redact(version_uri(self.uri, version))}")
        created: list[str] = []
        try:
            for path in files:
                key = self.key(version, path.name)
                self.put_new(key, path)
                created.append(key)
        except BaseException:
            for key in reversed(created):
                self.delete(key)
            raise


def _s3_error(err: urllib.error.HTTPError, method: str, where: str) -> RetrainError:
    body = err.read(4096).decode("utf-8", "replace") if err.fp is not None else ""
    code = body.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in body else ""
    detail = f" ({code})" if code else ""
    if err.code == 412:
        return VersionExistsError(f"{where} already exists (HTTP 412{detail} on a conditional {method}): "
                                  "another run wrote this version")
    if err.code in (401, 403):
        return RetrainError(f"access denied: HTTP {err.code}{detail} on {method} {where}: the credentials "
                            "need s3:ListBucket, s3:PutObject and s3:DeleteObject on the output prefix")
    return RetrainError(f"HTTP {err.code}{detail} on {method} {where}")


def open_store(uri: str, pvc_root: Path, env: Mapping[str, str] | None = None) -> Store:
    """The store of ``--output-uri`` (s3://, file:// or pvc://); other schemes are refused."""
    env = os.environ if env is None else env
    try:
        parts = urlsplit(uri)
    except ValueError as err:
        raise RetrainError(f"bad --output-uri {redact(uri)!r}: {err}") from None
    scheme = parts.scheme.lower()
    if "@" in parts.netloc:
        raise RetrainError(f"credentials in the output URI {redact(uri)} are not supported: use the "
                           "AWS_* variables of the credentials secret")
    if scheme == "s3":
        return S3Store(uri, env)
    if scheme == "file":
        return LocalStore(uri, Path(unquote(parts.path)).resolve())
    if scheme == "pvc":
        return LocalStore(uri, pvc_path(uri, pvc_root))
    if scheme in ("gs", "http", "https"):
        raise RetrainError(f"cannot write the new version to {scheme}:// ({redact(uri)}): the retraining Job "
                           "writes only to s3:// (AWS or an S3-compatible endpoint), file:// or pvc://")
    raise RetrainError(f"unsupported --output-uri {redact(uri)!r}: use s3://, file:// or pvc://")
