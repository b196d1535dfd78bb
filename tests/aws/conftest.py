"""Fixtures of the SageMaker backend tests: dummy credentials, moto's S3 server, the emulator.

Everything talks real HTTP to 127.0.0.1 only. The AWS variables are set per test
(``monkeypatch``), so no other test sees them; the two servers are started once per session
and only when a test asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _aws_testkit import AWS_CLEARED, AWS_TEST_ENV, BUCKET, client, free_port


def _isolate(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    for key, value in AWS_TEST_ENV.items():
        mp.setenv(key, value)
    for key in AWS_CLEARED:
        mp.delenv(key, raising=False)
    # no user config or credentials file takes part
    mp.setenv("AWS_CONFIG_FILE", str(tmp / "aws-config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "aws-credentials"))


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials, one attempt per call, and a proxy that blocks any egress."""
    _isolate(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 (Cost Explorer, CloudWatch Logs) server on a free 127.0.0.1 port; yields its
    URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client("s3", url).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture(scope="session")
def emulator(moto_server: str, tmp_path_factory: pytest.TempPathFactory):
    """The SageMaker emulator, its S3 and CloudWatch Logs on the moto server."""
    from streamguard_core.aws.emulator import SageMakerEmulator

    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory.mktemp("aws-config"))
        emu = SageMakerEmulator(
            work_root=tmp_path_factory.mktemp("sagemaker"),
            s3_endpoint_url=moto_server,
            logs_endpoint_url=moto_server,  # container output to CloudWatch, as SageMaker does
            sync_interval_s=0.1,
            poll_interval_s=0.02,
            stop_grace_s=60,
        ).start()
    yield emu
    emu.stop()


@pytest.fixture
def endpoints(monkeypatch: pytest.MonkeyPatch, moto_server: str) -> str:
    """boto3 clients made in the test go to the moto server (S3, Cost Explorer, Logs)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def sagemaker_endpoints(monkeypatch: pytest.MonkeyPatch, endpoints: str, emulator) -> None:
    """... and SageMaker goes to the emulator."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", emulator.url)


@pytest.fixture(scope="session")
def processed(make_processed) -> Path:
    """A small real processed data set (synthetic functions, 4 pairs per CWE)."""
    return make_processed(4, 300, 64)


@pytest.fixture(scope="session")
def data_uri(processed: Path, moto_server: str) -> str:
    """The processed data set uploaded once as the 'data' channel."""
    from streamguard_core.aws.s3 import upload_channel

    return upload_channel(client("s3", moto_server), processed, BUCKET, "streamguard/data")
