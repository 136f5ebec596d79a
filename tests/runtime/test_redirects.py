"""Redirects: credentials never follow a redirect to another origin, no https->http downgrade, a bounded chain.

The S3 requests are signed with the real test server's keys; a scripted server on one loopback port answers
the signed GET with a redirect to another port (another origin) and records what each side received.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.runtime.servers import Recorder, Route
from tests.runtime.support import MODEL, Env, sha, write
from tests.s3 import S3Server

TOKEN = "session-token-that-must-not-travel"
KEY = "/models/clf/model.pt"


def _use_s3(env: Env, s3_server: S3Server, endpoint: str) -> None:
    for name, value in s3_server.env(AWS_ENDPOINT_URL=endpoint, AWS_SESSION_TOKEN=TOKEN).items():
        env.monkeypatch.setenv(name, value)


def _credential_headers(headers: dict[str, str]) -> list[str]:
    return sorted(h for h in headers if h in ("authorization", "cookie") or h.startswith("x-amz-"))


def test_cross_origin_redirect_drops_signature(env: Env, s3_server: S3Server,
                                               serve: Callable[[], Recorder]) -> None:
    front, other = serve(), serve()
    front.redirect(KEY, f"{other.url}/elsewhere/model.pt")
    other.routes["/elsewhere/model.pt"] = Route(body=MODEL)
    _use_s3(env, s3_server, front.url)
    rc, out, err = env.run("s3://models/clf/model.pt", "--digest", sha(MODEL))
    assert rc == 0, err
    assert json.loads(out)["verified"]
    assert _credential_headers(front.seen[0].headers) == [
        "authorization", "x-amz-content-sha256", "x-amz-date", "x-amz-security-token"]
    assert front.seen[0].headers["x-amz-security-token"] == TOKEN
    received = other.seen[0].headers
    assert _credential_headers(received) == [], received
    assert TOKEN not in json.dumps(received) and s3_server.access_key not in json.dumps(received)
    assert received["host"] == other.url.removeprefix("http://")


def test_redirect_to_the_real_s3_server_arrives_unsigned(env: Env, s3_server: S3Server,
                                                        serve: Callable[[], Recorder]) -> None:
    # Had the signed headers (host included) been re-sent, the real server would have accepted the replay.
    front = serve()
    front.redirect(KEY, f"{s3_server.endpoint}{KEY}", status=307)
    s3_server.put("models", "clf/model.pt", write(env.tmp / "upload" / "model.pt"))
    _use_s3(env, s3_server, front.url)
    env.monkeypatch.delenv("AWS_SESSION_TOKEN")  # the server's own keys: a replayed signature would be valid
    reason = env.fail("s3://models/clf/model.pt")
    assert f"access denied: HTTP 403 (AccessDenied) fetching {front.url}{KEY}" in reason
    assert "authorization" in front.seen[0].headers


def test_same_origin_redirect_keeps_signature(env: Env, s3_server: S3Server,
                                              serve: Callable[[], Recorder]) -> None:
    front = serve()
    front.redirect(KEY, f"{front.url}/moved/model.pt")
    front.routes["/moved/model.pt"] = Route(body=MODEL)
    _use_s3(env, s3_server, front.url)
    rc, _, err = env.run("s3://models/clf/model.pt")
    assert rc == 0, err
    assert front.seen[1].path == "/moved/model.pt"
    assert front.seen[1].headers["authorization"] == front.seen[0].headers["authorization"]


def test_https_to_http_downgrade_refused(env: Env, s3_server: S3Server, https_server: Recorder,
                                         serve: Callable[[], Recorder]) -> None:
    plain = serve()
    https_server.redirect(KEY, f"{plain.url}/model.pt?X-Amz-Signature=abc")
    _use_s3(env, s3_server, https_server.url)
    reason = env.fail("s3://models/clf/model.pt")
    assert reason == (f"tritonops-fetch: refusing the redirect from {https_server.url}{KEY} to {plain.url}/model.pt: "
                      "an https download is never downgraded to http")
    assert "authorization" in https_server.seen[0].headers  # TLS worked: the signed request arrived
    assert plain.seen == []


def test_https_redirect_within_https_is_followed(env: Env, https_server: Recorder) -> None:
    https_server.redirect("/model.pt", f"{https_server.url}/v2/model.pt", status=301)
    https_server.routes["/v2/model.pt"] = Route(body=MODEL)
    rc, _, err = env.run(f"{https_server.url}/model.pt")
    assert rc == 0, err
    assert (env.repo / "clf" / "1" / "model.pt").read_bytes() == MODEL


def test_redirect_chain_is_bounded(env: Env, serve: Callable[[], Recorder]) -> None:
    loop = serve()
    for hop in range(20):
        loop.redirect(f"/hop/{hop}", f"{loop.url}/hop/{hop + 1}")
    reason = env.fail(f"{loop.url}/hop/0")
    assert reason == f"tritonops-fetch: too many redirects fetching {loop.url}/hop/0: gave up after 5"
    assert len(loop.seen) == 6


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/model.pt"])
def test_redirect_to_another_scheme_refused(env: Env, serve: Callable[[], Recorder], location: str) -> None:
    front = serve()
    front.redirect("/model.pt", location)
    reason = env.fail(f"{front.url}/model.pt")
    assert reason == (f"tritonops-fetch: refusing the redirect from {front.url}/model.pt to {location}: "
                      "only http and https redirects are followed")
