"""`python -m deployments.install_aws`: the SageMaker backend's blocks, no secret printed."""

from __future__ import annotations

import pytest


def test_blocks_are_saved_and_the_secret_is_never_printed(prefect_harness, monkeypatch, capsys):
    from prefect_aws import AwsCredentials, S3Bucket

    from deployments.install_aws import main

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    argv = ["--bucket", "sg-bucket", "--region", "eu-west-1", "--from-environment",
            "--credentials-block", "sg-test-aws", "--bucket-block", "sg-test-bucket"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "very-secret-value" not in out and "AKIATESTKEY0001" not in out
    assert "key ...0001" in out
    creds = AwsCredentials.load("sg-test-aws")
    assert creds.aws_access_key_id == "AKIATESTKEY0001"
    assert creds.aws_secret_access_key.get_secret_value() == "very-secret-value"
    assert creds.region_name == "eu-west-1"
    bucket = S3Bucket.load("sg-test-bucket")
    assert bucket.bucket_name == "sg-bucket"
    # a second run updates in place (profile only: no key stored)
    assert main(["--bucket", "sg-bucket", "--profile", "ml", "--credentials-block",
                 "sg-test-aws", "--bucket-block", "sg-test-bucket"]) == 0  # fmt: skip
    updated = AwsCredentials.load("sg-test-aws")
    assert updated.profile_name == "ml" and updated.aws_access_key_id is None


@pytest.mark.parametrize("bucket", ["s3://x", "x/y"])
def test_bucket_must_be_a_bare_name(bucket, capsys):
    from deployments.install_aws import main

    assert main(["--bucket", bucket]) == 2
    assert "bare bucket name" in capsys.readouterr().err


def test_the_flows_read_the_bucket_and_credentials_from_the_saved_blocks(
    prefect_harness, monkeypatch, capsys
):
    from deployments.install_aws import main
    from streamguard_core.aws.config import SageMakerConfig
    from tasks.sagemaker import aws_credentials, with_bucket

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY0002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-secret")
    argv = ["--bucket", "sg-data", "--bucket-folder", "team-a", "--from-environment",
            "--credentials-block", "sg-flow-aws", "--bucket-block", "sg-flow-bucket"]  # fmt: skip
    assert main(argv) == 0
    assert "s3_bucket_block: sg-flow-bucket" in capsys.readouterr().out
    cfg = SageMakerConfig(image_uri="img", role_arn="arn:aws:iam::123456789012:role/r")
    resolved = with_bucket(cfg, "sg-flow-bucket")
    assert (resolved.bucket, resolved.prefix) == ("sg-data", "team-a/streamguard")
    # with no credentials block named, the bucket block's own credentials are used
    assert aws_credentials(None, "sg-flow-bucket").aws_access_key_id == "AKIATESTKEY0002"
    assert aws_credentials("sg-flow-aws", "sg-flow-bucket").aws_access_key_id == "AKIATESTKEY0002"
    assert aws_credentials(None, None) is None
