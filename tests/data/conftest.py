"""Fixtures of the data tests: a real S3 API (moto's server mode over HTTP) and a private read cache."""

import logging
import uuid

import pytest


@pytest.fixture(autouse=True)
def _private_read_cache(tmp_path, monkeypatch):
    """Stores on object storage cache their shards under VLA_CACHE: never the user's ~/.cache in tests."""
    monkeypatch.setenv("VLA_CACHE", str(tmp_path / "vla-cache"))


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto S3 server for the session, on 127.0.0.1 and a free port -> its endpoint URL."""
    server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    srv = server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    yield f"http://{host}:{port}"
    srv.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch) -> str:
    """A new, empty bucket; vla reaches it through the environment alone (AWS_ENDPOINT_URL and
    credentials, as a user sets them), as do subprocesses. -> "s3://<bucket>"."""
    boto3 = pytest.importorskip("boto3")
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    bucket = f"vla-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture
def s3_objects(s3, moto_endpoint):
    """-> keys(prefix) listing the bucket's object keys through boto3 (not through vla)."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = s3.split("://", 1)[1]

    def keys(prefix: str = "") -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    keys.client, keys.bucket = client, bucket
    return keys
