"""`streamguard aws setup` against moto (the session's moto server, one account shared by the
AWS tests; each test uses its own names).

The command runs end to end (``streamguard_core.cli.main``) where its output matters: what it
creates is read back with boto3, the second run must change nothing, and a role SageMaker may
not assume stops it before anything is created. The other cases call the planner directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from streamguard_core.aws.config import SageMakerConfig
from streamguard_core.aws.jobs import SageMakerJobSpec
from streamguard_core.aws.setup import (
    ACCESS_POLICY_NAME,
    RULE_CHECKPOINTS,
    RULE_MULTIPART,
    RULE_OUTPUT,
    SAGEMAKER_PRINCIPAL,
    SetupClients,
    SetupConfig,
    SetupConflict,
    SetupPlan,
    _write_config,
    apply_plan,
    plan_setup,
    trusted_services,
)
from streamguard_core.cli import main

REGION = "eu-west-1"
# `streamguard aws setup` run by ``main`` goes to the same moto server
pytestmark = pytest.mark.usefixtures("endpoints")


@pytest.fixture(scope="module")
def aws(moto_server: str) -> dict[str, Any]:
    """Clients of the session's moto server, made once (making them is most of a command's
    time). Not an in-process ``mock_aws``: leaving one resets moto's global state, which the
    moto server of the other AWS tests shares (their bucket vanished when this ran first)."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return {
        name: session.client(name, endpoint_url=moto_server) for name in ("iam", "ecr", "s3", "sts")
    }


def _clients(aws: dict[str, Any]) -> SetupClients:
    return SetupClients(aws["iam"], aws["ecr"], aws["s3"], aws["sts"])


def _setup(capsys, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run the command with --json; (exit code, its JSON, stderr)."""
    code = main(["aws", "setup", "--region", REGION, "--json", *args])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else {}), out.err


def _states(result: dict[str, Any] | SetupPlan) -> dict[str, str]:
    if isinstance(result, SetupPlan):
        return {s.resource: s.state for s in result.steps}
    return {s["resource"]: s["state"] for s in result["steps"]}


def _cfg(name: str, **kw: Any) -> SetupConfig:
    """Names of one test's own (the moto account is shared by the module)."""
    return SetupConfig(
        bucket=f"sg-{name}",
        role_name=f"sg-{name}",
        repositories=[f"sg-{name}-train"],
        region=REGION,
        **kw,
    )


def _name_args(cfg: SetupConfig) -> tuple[str, ...]:
    """The command's flags for ``cfg``'s names."""
    return ("--bucket", cfg.bucket, "--role-name", cfg.role_name, "--repository", *cfg.repositories)


def _exists(aws: dict[str, Any], cfg: SetupConfig) -> dict[str, bool]:
    from botocore.exceptions import ClientError

    def found(call: Any) -> bool:
        try:
            call()
        except ClientError:
            return False
        return True

    return {
        "role": found(lambda: aws["iam"].get_role(RoleName=cfg.role_name)),
        "repository": found(
            lambda: aws["ecr"].describe_repositories(repositoryNames=cfg.repositories)
        ),
        "bucket": found(lambda: aws["s3"].head_bucket(Bucket=cfg.bucket)),
    }


def _snapshot(aws: dict[str, Any], role: str, bucket: str) -> dict[str, Any]:
    """Everything setup may change, as AWS reports it (compared before and after a rerun)."""
    iam, ecr, s3 = aws["iam"], aws["ecr"], aws["s3"]
    found = iam.get_role(RoleName=role)["Role"]
    return {
        "role": (found["Arn"], found["CreateDate"], found["AssumeRolePolicyDocument"]),
        "policies": iam.list_role_policies(RoleName=role)["PolicyNames"],
        "policy": iam.get_role_policy(RoleName=role, PolicyName=ACCESS_POLICY_NAME)[
            "PolicyDocument"
        ],
        "repositories": sorted(
            (r["repositoryName"], r["createdAt"])
            for r in ecr.describe_repositories()["repositories"]
        ),
        "buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"]),
        "block": s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        "encryption": s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"],
        "rules": s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
    }


def test_setup_creates_the_role_repositories_and_bucket_then_a_rerun_changes_nothing(
    aws, capsys, tmp_path: Path
):
    bucket, snippet = "sg-setup-cli", tmp_path / "sagemaker.yaml"
    args = ("--bucket", bucket, "--checkpoint-days", "14", "--write-config", str(snippet))
    code, first, err = _setup(capsys, *args)
    assert code == 0, err
    assert set(_states(first).values()) == {"create"} and len(first["steps"]) == 8
    assert first["config_written"] == "written"
    iam, ecr, s3 = aws["iam"], aws["ecr"], aws["s3"]

    role = iam.get_role(RoleName="streamguard-sagemaker")["Role"]
    assert trusted_services(role["AssumeRolePolicyDocument"]) == [SAGEMAKER_PRINCIPAL]
    policy = iam.get_role_policy(RoleName="streamguard-sagemaker", PolicyName=ACCESS_POLICY_NAME)
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert statements["ListTheBucket"]["Resource"] == f"arn:aws:s3:::{bucket}"
    assert statements["ReadWriteThePrefix"]["Resource"] == f"arn:aws:s3:::{bucket}/streamguard/*"
    assert sorted(statements["PullTheImages"]["Resource"]) == [
        f"arn:aws:ecr:{REGION}:123456789012:repository/streamguard-{k}" for k in ("serve", "train")
    ]
    # nothing but the ECR login and the metrics (namespace-bound) is granted on "*"
    assert {sid for sid, s in statements.items() if s["Resource"] == "*"} == {
        "EcrLogin",
        "PublishMetrics",
    }
    assert "logs:PutLogEvents" in statements["WriteContainerLogs"]["Action"]

    repositories = {
        r["repositoryName"]: r
        for r in ecr.describe_repositories(
            repositoryNames=["streamguard-train", "streamguard-serve"]
        )["repositories"]
    }
    assert repositories["streamguard-train"]["imageScanningConfiguration"]["scanOnPush"] is True

    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == REGION
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert set(rules) == {RULE_CHECKPOINTS, RULE_OUTPUT, RULE_MULTIPART}
    assert rules[RULE_CHECKPOINTS]["Filter"]["Prefix"] == "streamguard/checkpoints/"
    assert rules[RULE_CHECKPOINTS]["Expiration"]["Days"] == 14
    assert rules[RULE_OUTPUT]["Filter"]["Prefix"] == "streamguard/output/"
    assert rules[RULE_OUTPUT]["Expiration"]["Days"] == 90
    assert rules[RULE_MULTIPART]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7

    # the values it printed and wrote are the ones that exist, and a job spec takes them
    settings = first["sagemaker"]
    assert settings["role_arn"] == role["Arn"]
    assert settings["image_uri"] == repositories["streamguard-train"]["repositoryUri"] + ":latest"
    assert (settings["bucket"], settings["prefix"], settings["region"]) == (
        bucket,
        "streamguard",
        REGION,
    )
    written = yaml.safe_load(snippet.read_text())
    assert written == {"sagemaker": settings}
    cfg = SageMakerConfig.model_validate(written["sagemaker"])
    SageMakerJobSpec(
        job_name="j",
        image_uri=cfg.image_uri,
        role_arn=cfg.role_arn,
        input_s3_uri=f"s3://{bucket}/streamguard/data/x/",
        output_s3_path=f"s3://{bucket}/streamguard/output/run/",
    )

    # again, in plain text: every step says "exists" and nothing in the account changed
    before = _snapshot(aws, "streamguard-sagemaker", bucket)
    assert main(["aws", "setup", "--region", REGION, *args]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("  IAM ", "  ECR ", "  S3 "))]
    assert len(lines) == 8 and all("  exists" in line for line in lines), out
    assert f"role_arn: {role['Arn']}" in out and f"{snippet}: exists" in out
    assert _snapshot(aws, "streamguard-sagemaker", bucket) == before


def test_dry_run_plans_and_creates_nothing(aws, capsys, tmp_path: Path):
    cfg, snippet = _cfg("dry"), tmp_path / "sagemaker.yaml"
    code, plan, err = _setup(capsys, *_name_args(cfg), "--dry-run", "--write-config", str(snippet))
    assert code == 0 and plan["dry_run"] is True, err
    assert set(_states(plan).values()) == {"create"}
    assert not any(s["done"] for s in plan["steps"]) and plan["config_written"] is None
    assert _exists(aws, cfg) == {"role": False, "repository": False, "bucket": False}
    assert not snippet.exists()


def test_a_role_that_sagemaker_may_not_assume_is_reported_and_nothing_changes(aws, capsys):
    cfg = _cfg("ec2-role")
    ec2_only = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    aws["iam"].create_role(RoleName=cfg.role_name, AssumeRolePolicyDocument=json.dumps(ec2_only))
    code, plan, err = _setup(capsys, *_name_args(cfg))
    assert code == 1
    assert _states(plan)[f"IAM role {cfg.role_name}"] == "conflict"
    assert (
        f"IAM role {cfg.role_name}: the role exists, but its trust policy does not let "
        "sagemaker.amazonaws.com assume it (it trusts: ec2.amazonaws.com)" in err
    )
    assert f"update-assume-role-policy --role-name {cfg.role_name}" in err
    assert "nothing was changed" in err and "Traceback" not in err
    # nothing at all was created or changed, the other steps included
    role = aws["iam"].get_role(RoleName=cfg.role_name)["Role"]
    assert trusted_services(role["AssumeRolePolicyDocument"]) == ["ec2.amazonaws.com"]
    assert aws["iam"].list_role_policies(RoleName=cfg.role_name)["PolicyNames"] == []
    assert _exists(aws, cfg) == {"role": True, "repository": False, "bucket": False}
    with pytest.raises(SetupConflict, match="nothing was changed"):
        apply_plan(plan_setup(_clients(aws), cfg, REGION))


def test_an_existing_bucket_keeps_its_own_rules_and_a_changed_bucket_updates_the_policy(aws):
    cfg = _cfg("own-rules")
    s3 = aws["s3"]
    s3.create_bucket(Bucket=cfg.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    theirs = {
        "ID": "keep-logs-a-year",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 365},
    }
    s3.put_bucket_lifecycle_configuration(
        Bucket=cfg.bucket, LifecycleConfiguration={"Rules": [theirs]}
    )
    plan = apply_plan(plan_setup(_clients(aws), cfg, REGION))
    states = _states(plan)
    assert states[f"S3 bucket {cfg.bucket}"] == "exists"
    assert states[f"S3 lifecycle rules of {cfg.bucket}"] == "update"
    rules = s3.get_bucket_lifecycle_configuration(Bucket=cfg.bucket)["Rules"]
    assert sorted(r["ID"] for r in rules) == sorted(
        ["keep-logs-a-year", RULE_CHECKPOINTS, RULE_OUTPUT, RULE_MULTIPART]
    )
    assert set(_states(plan_setup(_clients(aws), cfg, REGION)).values()) == {"exists"}

    # the same role for another bucket: its inline policy follows (and says so)
    moved = cfg.model_copy(update={"bucket": "sg-own-rules-2"})
    plan = apply_plan(plan_setup(_clients(aws), moved, REGION))
    assert _states(plan)[f"IAM role policy {cfg.role_name}/{ACCESS_POLICY_NAME}"] == "update"
    document = aws["iam"].get_role_policy(RoleName=cfg.role_name, PolicyName=ACCESS_POLICY_NAME)[
        "PolicyDocument"
    ]
    assert '"arn:aws:s3:::sg-own-rules-2"' in json.dumps(document)
    assert f'"arn:aws:s3:::{cfg.bucket}"' not in json.dumps(document)


def test_a_bucket_in_another_region_is_a_conflict(aws):
    cfg = _cfg("far-bucket")
    boto3.session.Session(region_name="us-east-1").client("s3").create_bucket(Bucket=cfg.bucket)
    plan = plan_setup(_clients(aws), cfg, REGION)
    (conflict,) = plan.conflicts
    assert conflict.resource == f"S3 bucket {cfg.bucket}"
    assert f"the bucket is in us-east-1, not {REGION}" in conflict.detail
    assert "--region us-east-1" in conflict.detail
    with pytest.raises(SetupConflict):
        apply_plan(plan)
    assert _exists(aws, cfg)["role"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bucket", "Not_A_Bucket"], "invalid S3 bucket name 'Not_A_Bucket'"),
        (["--bucket", "sg-x", "--repository", "Upper"], "invalid ECR repository name 'Upper'"),
        (["--bucket", "sg-x", "--checkpoint-days", "0"], "checkpoint_days"),
    ],
)
def test_invalid_settings_are_one_clear_error(args, message, capsys):
    assert main(["aws", "setup", "--region", REGION, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_different_snippet_file_is_not_overwritten(tmp_path: Path):
    snippet = tmp_path / "mine.yaml"
    snippet.write_text("sagemaker: {bucket: something-else}\n")
    with pytest.raises(SetupConflict, match="exists with other content; not overwritten"):
        _write_config(snippet, "sagemaker: {bucket: mine}\n")
    assert snippet.read_text() == "sagemaker: {bucket: something-else}\n"
    assert _write_config(snippet, "sagemaker: {bucket: something-else}\n") == "exists"
