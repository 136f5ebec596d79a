"""The SigV4 signer against AWS's published example, and S3 URL addressing."""

from __future__ import annotations

import datetime as dt

from tritonops_runtime import sigv4
from tritonops_runtime.sources import gcs_url, s3_request

AWS_EXAMPLE = sigv4.Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def test_aws_documented_get_object_example() -> None:
    # docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html, "Example: GET Object"
    headers = sigv4.sign("GET", "examplebucket.s3.amazonaws.com", "/test.txt", AWS_EXAMPLE, "us-east-1",
                         headers={"Range": "bytes=0-9"}, payload_hash=sigv4.EMPTY_SHA256,
                         now=dt.datetime(2013, 5, 24, tzinfo=dt.UTC))
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def test_session_token_is_signed() -> None:
    creds = sigv4.Credentials("AK", "SK", "TOKEN")
    headers = sigv4.sign("GET", "h", "/b/k", creds, "eu-west-1")
    assert headers["x-amz-security-token"] == "TOKEN"
    assert "x-amz-security-token" in headers["Authorization"].split("SignedHeaders=")[1]


def test_s3_addressing() -> None:
    url, headers = s3_request("s3://models/a b/model.pt", {"AWS_REGION": "eu-west-1"})
    assert url == "https://models.s3.eu-west-1.amazonaws.com/a%20b/model.pt" and headers == {}
    url, _ = s3_request("s3://my.bucket/k", {})
    assert url == "https://s3.us-east-1.amazonaws.com/my.bucket/k"
    url, headers = s3_request("s3://b/k.pt", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/",
                                              "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"})
    assert url == "http://127.0.0.1:9000/b/k.pt"
    assert headers["host"] == "127.0.0.1:9000" and headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_gcs_url_mapping() -> None:
    assert gcs_url("gs://bucket/dir/model v1.onnx") == "https://storage.googleapis.com/bucket/dir/model%20v1.onnx"
