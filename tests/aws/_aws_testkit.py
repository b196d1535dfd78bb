"""Constants and helpers shared by the SageMaker backend tests (imported by conftest too)."""

from __future__ import annotations

from scripts.loopback import free_port as free_port  # re-exported: conftest.py imports it here

REGION = "us-east-1"
BUCKET = "streamguard-test"
ROLE_ARN = "arn:aws:iam::123456789012:role/streamguard-sagemaker"
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/streamguard-train:test"
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_MAX_ATTEMPTS": "1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "HTTPS_PROXY": "http://127.0.0.1:9",  # any escape to the internet fails fast
    "NO_PROXY": "127.0.0.1,localhost",
}
AWS_CLEARED = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SAGEMAKER",
    "AWS_REGION",
)
# a GNN that trains in ~2 s on one slow core: hidden 16, 2 layers, no identifier embedding
TINY_GNN = {
    "model": {"kind": "gnn", "hidden_dim": 16, "num_layers": 2, "node_token_dim": 0},
    "train": {"epochs": 2, "batch_size": 2, "checkpoint_every_steps": 2, "num_threads": 1},
    "seed": 7,
}


def tiny_gnn(data_dir: str = "/data", run_dir: str = "/run", **train: object):
    """The TINY_GNN job spec (``train`` overrides train settings)."""
    from streamguard_core.config import TrainJobSpec

    raw = {**TINY_GNN, "train": {**TINY_GNN["train"], **train}}
    return TrainJobSpec.model_validate({**raw, "data_dir": data_dir, "run_dir": run_dir})


def client(service: str, endpoint_url: str | None = None):
    """A boto3 client with the dummy credentials (for session fixtures)."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return session.client(service, endpoint_url=endpoint_url)
