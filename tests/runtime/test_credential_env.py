"""contract.CREDENTIAL_ENV_KEYS names exactly the variables the fetcher reads for credentials and endpoints.

The operator passes only these keys of the user's secret to the fetcher, so a key read here but missing from
the tuple would silently never arrive, and a key listed but never read would be passed for nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.runtime.support import Env, write
from tritonops_runtime import contract as c
from tritonops_runtime import sources


class _Recording(Mapping[str, str]):
    """A read-only environment that remembers every key looked up."""

    def __init__(self, values: dict[str, str]) -> None:
        self.data, self.read = values, set[str]()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the fetcher must look up named keys, never walk the environment")

    def __len__(self) -> int:
        return len(self.data)


FULL = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_SESSION_TOKEN": "TOKEN"}
ENVIRONMENTS = [{}, FULL, {**FULL, "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1"},
                {**FULL, "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}]


def test_keys_read_for_every_scheme_are_the_contract(tmp_path: Path) -> None:
    read: set[str] = set()
    write(tmp_path / "pvc" / "m.pt")
    for values in ENVIRONMENTS:
        for uri in ("s3://bucket/m.pt", "gs://bucket/m.pt", "https://127.0.0.1:1/m.pt", "pvc://claim/m.pt",
                    (tmp_path / "pvc" / "m.pt").as_uri()):
            recording = _Recording(values)
            if uri.startswith(("s3:", "gs:", "https:")):
                sources.request_for(uri, recording)
            else:
                sources.resolve(uri, tmp_path, tmp_path / "pvc", 1 << 20, env=recording)
            read |= recording.read
    assert read == set(c.CREDENTIAL_ENV_KEYS)
    assert len(c.CREDENTIAL_ENV_KEYS) == len(set(c.CREDENTIAL_ENV_KEYS))
    assert all(key.isupper() and key.isidentifier() for key in c.CREDENTIAL_ENV_KEYS)


def test_fetch_reads_credentials_only_through_the_listed_keys(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # With only the listed keys set (what the operator will pass), an S3 fetch still signs its request.
    seen: list[dict[str, str]] = []

    def fake_download(url: str, headers: Mapping[str, str], dest: Path, max_bytes: int) -> sources.Download:
        seen.append(dict(headers))
        raise sources.FetchError("stop here")

    monkeypatch.setattr(sources, "download", fake_download)
    for key in c.CREDENTIAL_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK",
                       "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}.items():
        assert key in c.CREDENTIAL_ENV_KEYS
        monkeypatch.setenv(key, value)
    assert "stop here" in env.fail("s3://bucket/m.pt")
    assert seen[0]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AK/")
