"""Create (or update) the SageMaker backend's blocks on the Prefect server in ``PREFECT_API_URL``.

    python -m deployments.install_aws --bucket my-streamguard-bucket [--region us-east-1]
        [--profile NAME | --from-environment] [--endpoint-url URL]
        [--credentials-block streamguard-aws] [--bucket-block streamguard-bucket]

- ``AwsCredentials`` block (default name ``streamguard-aws``): with ``--profile`` it stores only
  the profile name (the worker's own ``~/.aws`` resolves it, no secret leaves the machine); with
  ``--from-environment`` it stores the key pair boto3's default chain resolves here (Prefect keeps
  the secret as a SecretStr; it is never printed). Pass its name to the flows as
  ``aws_credentials_block`` (a PipelineConfig field).
- ``S3Bucket`` block (default ``streamguard-bucket``) for the bucket that holds data channels,
  checkpoints and model artefacts (under ``--bucket-folder``, when given), with those
  credentials. Pass its name to the flows as ``s3_bucket_block``: the SageMaker jobs take their
  bucket from it (``sagemaker.bucket`` may then stay empty) and, when no
  ``aws_credentials_block`` is named, its credentials too.

Nothing secret is printed: the output names the blocks, the region and the key id's last 4
characters only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.install_aws",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bucket", required=True, help="S3 bucket name (no s3://, no path)")
    parser.add_argument(
        "--bucket-folder",
        default="",
        help="folder inside the bucket; the jobs' keys go under <folder>/<sagemaker.prefix>",
    )
    parser.add_argument("--region", default=None, help="AWS region (default: the chain's)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--profile", default=None, help="store this AWS profile name only")
    source.add_argument(
        "--from-environment",
        action="store_true",
        help="store the key pair boto3's default chain resolves on this machine",
    )
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="one endpoint for every client made from the block, S3 and SageMaker alike (e.g. "
        "LocalStack); the emulator's two endpoints go in AWS_ENDPOINT_URL[_SAGEMAKER] instead",
    )
    parser.add_argument("--credentials-block", default="streamguard-aws")
    parser.add_argument("--bucket-block", default="streamguard-bucket")
    return parser


def credentials_block(args: argparse.Namespace) -> Any:
    """The ``AwsCredentials`` block the flags describe."""
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    params: dict[str, Any] = {"region_name": args.region}
    if args.endpoint_url:
        params["aws_client_parameters"] = AwsClientParameters(endpoint_url=args.endpoint_url)
    if args.profile:
        return AwsCredentials(profile_name=args.profile, **params)
    if args.from_environment:
        import boto3

        resolved = boto3.Session(region_name=args.region).get_credentials()
        if resolved is None:
            raise SystemExit("error: boto3's default chain found no AWS credentials here")
        frozen = resolved.get_frozen_credentials()
        return AwsCredentials(
            aws_access_key_id=frozen.access_key,
            aws_secret_access_key=frozen.secret_key,
            aws_session_token=frozen.token,
            **params,
        )
    return AwsCredentials(**params)  # the worker's default chain at run time


def main(argv: list[str] | None = None) -> int:
    """Save both blocks; returns the exit status."""
    args = build_parser().parse_args(argv)
    if "/" in args.bucket or args.bucket.startswith("s3:"):
        print(f"error: --bucket takes a bare bucket name, not {args.bucket!r}", file=sys.stderr)
        return 2
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print(
            "error: PREFECT_API_URL is not set: point it at your server "
            "(e.g. http://127.0.0.1:4200/api) so the blocks land there",
            file=sys.stderr,
        )
        return 1
    from prefect_aws import S3Bucket

    creds = credentials_block(args)
    creds.save(args.credentials_block, overwrite=True)
    key_id = creds.aws_access_key_id
    source = (
        f"profile {args.profile}"
        if args.profile
        else f"key ...{key_id[-4:]}"
        if key_id
        else "the worker's default chain"
    )
    print(f"block aws-credentials/{args.credentials_block}: saved ({source}, region {args.region})")
    S3Bucket(bucket_name=args.bucket, bucket_folder=args.bucket_folder, credentials=creds).save(
        args.bucket_block, overwrite=True
    )
    print(f"block s3-bucket/{args.bucket_block}: saved (bucket {args.bucket})")
    print(
        f"use them: set 'aws_credentials_block: {args.credentials_block}' and "
        f"'s3_bucket_block: {args.bucket_block}' in the pipeline config (sagemaker.bucket may "
        "stay empty)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
