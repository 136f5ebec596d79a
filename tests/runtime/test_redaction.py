"""Secrets in storage URIs (user info, signed query parameters) never reach stderr or the termination message."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.runtime.conftest import HttpServer
from tests.runtime.servers import Recorder
from tests.runtime.support import Env, write
from tritonops_runtime import contract as c
from tritonops_runtime.redaction import redact_text
from tritonops_runtime.sources import redact

SECRET = "s3cr3t-Value-42"
QUERIES = [f"X-Amz-Signature={SECRET}", f"X-Amz-Credential=AKIA%2F{SECRET}", f"X-Amz-Security-Token={SECRET}",
           f"X-Goog-Signature={SECRET}", f"sig={SECRET}", f"token={SECRET}"]


def _assert_clean(env: Env, uri: str, *extra: str) -> str:
    rc, out, err = env.run(uri, *extra)
    assert rc == 1 and out == "" and err.count("\n") == 1, err
    assert SECRET not in err and SECRET not in env.term.read_text()
    assert env.term.read_text() == err.strip()
    return err.strip()


@pytest.mark.parametrize("query", QUERIES)
def test_signed_query_never_printed(env: Env, http_server: HttpServer, query: str) -> None:
    for uri in (f"{http_server.url}/missing.pt?{query}", f"http://127.0.0.1:1/model.pt?{query}",
                f"s3://bucket?{query}", f"gs://bucket?{query}", f"pvc://claim/../x?{query}",
                f"https://host.invalid:notaport/model.pt?{query}", f"ftp://host/model.pt?{query}"):
        _assert_clean(env, uri)


@pytest.mark.parametrize("uri", [
    f"http://user:{SECRET}@127.0.0.1:1/model.pt",
    f"https://{SECRET}@127.0.0.1:1/model.tgz",
    f"http://user:{SECRET}@host.invalid/model.pt",
    f"s3://user:{SECRET}@bucket",
])
def test_user_info_never_printed(env: Env, uri: str) -> None:
    _assert_clean(env, uri)


def test_user_info_is_refused_before_any_request(env: Env, http_server: HttpServer) -> None:
    write(http_server.root / "model.pt")
    port = http_server.url.rsplit(":", 1)[1]
    reason = _assert_clean(env, f"http://user:{SECRET}@127.0.0.1:{port}/model.pt")
    assert reason == (f"tritonops-fetch: credentials in the URI http://127.0.0.1:{port}/model.pt are not supported: "
                      "the fetcher authenticates only s3:// requests, with the Secret named by "
                      "spec.model.credentials.secretName")


def test_secret_in_redirect_target_never_printed(env: Env, serve: Callable[[], Recorder]) -> None:
    front = serve()
    front.redirect("/a.pt", f"http://user:{SECRET}@127.0.0.1:1/b.pt?X-Amz-Signature={SECRET}")
    front.redirect("/c.pt", f"http://127.0.0.1:1/d.pt?token={SECRET}")
    for path in ("/a.pt", "/c.pt"):
        _assert_clean(env, f"{front.url}{path}")


def test_environment_secrets_never_printed(env: Env, serve: Callable[[], Recorder]) -> None:
    front = serve()
    env.monkeypatch.setenv("AWS_ENDPOINT_URL", front.url)
    env.monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    env.monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    env.monkeypatch.setenv(c.ENV_MODEL_NAME, f"bad name {SECRET}")
    _assert_clean(env, "s3://bucket/model.pt")


def test_redact() -> None:
    assert redact(f"https://u:{SECRET}@h.example:8443/a/b.pt?X-Amz-Signature={SECRET}#frag") == \
        "https://h.example:8443/a/b.pt"
    assert redact("pvc://claim/models/clf") == "pvc://claim/models/clf"
    assert redact("http://[::1]:80/m.pt?sig=1") == "http://[::1]:80/m.pt"
    assert redact(f"http://u:{SECRET}@h:notaport/m.pt") == "http://h:notaport/m.pt"


def test_redact_text() -> None:
    text = (f"GET https://b.s3.amazonaws.com/k.pt?X-Amz-Algorithm=AWS4&X-Amz-Signature={SECRET} failed; "
            f"retry 'http://u:{SECRET}@h/x' with X-Amz-Credential={SECRET}&x=1 and Token={SECRET}, nonnumeric port: "
            f"'{SECRET}@host'")
    assert redact_text(text, [SECRET]) == (
        "GET https://b.s3.amazonaws.com/k.pt failed; retry 'http://h/x' with X-Amz-Credential=<redacted>&x=1 and "
        "Token=<redacted>, nonnumeric port: '<redacted>@host'")
    assert redact_text("token=abc sig=def&signature=ghi") == "token=<redacted> sig=<redacted>&signature=<redacted>"
    assert redact_text("archive unpacks to 10 bytes", ["", "a"]) == "archive unpacks to 10 bytes"
