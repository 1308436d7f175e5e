"""The S3 client is built once per process and settings, and rebuilt when the AWS environment changes."""

import pytest

from homeprice_assets.resources.s3 import s3_client


def test_one_client_per_settings_and_a_new_one_for_new_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    client = s3_client("http://127.0.0.1:9", "us-east-1")
    assert s3_client("http://127.0.0.1:9", "us-east-1") is client
    assert client.meta.endpoint_url == "http://127.0.0.1:9" and client.meta.region_name == "us-east-1"

    other_endpoint = s3_client("http://127.0.0.1:10", "us-east-1")
    assert other_endpoint is not client and other_endpoint.meta.endpoint_url == "http://127.0.0.1:10"

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second")
    rotated = s3_client("http://127.0.0.1:9", "us-east-1")
    assert rotated is not client
    assert rotated._request_signer._credentials.access_key == "second"
