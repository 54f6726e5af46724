"""An S3 API on localhost: moto's server in a subprocess, for the object-store paths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.servers import free_port

# What botocore (under s3fs) reads; moto takes any keys.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3(log: Path) -> Iterator[dict[str, str]]:
    """A running moto server; yields the environment that points S3 clients at it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()  # e.g. the port was taken
            try:
                # moto's own answer (another server on a reused port would answer otherwise)
                if httpx.get(f"{url}/moto-api/data.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield {**CREDENTIALS, "AWS_ENDPOINT_URL": url}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def create_bucket(env: dict[str, str], bucket: str) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    client.create_bucket(Bucket=bucket)
