"""s3:// against a real S3 server (versitygw, posix backend) with SigV4 authentication."""

from __future__ import annotations

import json

import pytest

from tests.runtime.support import MODEL, Env, sha, tar_gz, write
from tests.s3 import S3Server


@pytest.fixture
def s3(env: Env, s3_server: S3Server) -> S3Server:
    for key, value in s3_server.env().items():
        env.monkeypatch.setenv(key, value)
    s3_server.put("models", "clf/model.pt", write(env.tmp / "upload" / "model.pt"))
    return s3_server


def test_fetch_with_credentials_and_digest(env: Env, s3: S3Server) -> None:
    rc, out, err = env.run("s3://models/clf/model.pt", "--digest", sha(MODEL))
    assert rc == 0, err
    report = json.loads(out)
    assert report["verified"] and report["digest"] == sha(MODEL)
    assert (env.repo / "clf" / "1" / "model.pt").read_bytes() == MODEL


def test_archive_from_s3(env: Env, s3: S3Server) -> None:
    s3.put("models", "clf/v2.tgz", tar_gz(env.tmp / "v2.tgz", {"clf/1/model.pt": MODEL}))
    rc, _, err = env.run("s3://models/clf/v2.tgz")
    assert rc == 0, err
    assert (env.repo / "clf" / "1" / "model.pt").read_bytes() == MODEL


def test_bad_secret_is_403(env: Env, s3: S3Server) -> None:
    env.monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    reason = env.fail("s3://models/clf/model.pt")
    assert reason == (f"tritonops-fetch: access denied: HTTP 403 (SignatureDoesNotMatch) fetching "
                      f"{s3.endpoint}/models/clf/model.pt: check the credentials secret (spec.model.credentials) "
                      "and the object's permissions")
    assert "wrong-secret" not in reason


def test_anonymous_is_403(env: Env, s3: S3Server) -> None:
    env.monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert "access denied: HTTP 403 (AccessDenied)" in env.fail("s3://models/clf/model.pt")


def test_missing_object_and_bucket_are_404(env: Env, s3: S3Server) -> None:
    assert "not found: HTTP 404 (NoSuchKey) fetching" in env.fail("s3://models/clf/missing.pt")
    assert "not found: HTTP 404 (NoSuchBucket) fetching" in env.fail("s3://no-such-bucket/clf/model.pt")


def test_digest_mismatch(env: Env, s3: S3Server) -> None:
    reason = env.fail("s3://models/clf/model.pt", "--digest", sha(b"something else"))
    assert f"digest mismatch for s3://models/clf/model.pt: expected {sha(b'something else')}, found {sha(MODEL)}" \
        in reason
