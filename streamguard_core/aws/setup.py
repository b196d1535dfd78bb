"""``streamguard aws setup``: what a SageMaker training run needs in an AWS account, created once.

Three things, each created only when it is missing (running it twice changes nothing and says
``exists`` for each)::

    IAM role        streamguard-sagemaker: trusted by sagemaker.amazonaws.com (sts:AssumeRole),
                    with one inline policy, streamguard-sagemaker-access, scoped to this setup:
                      s3   ListBucket on the bucket; Get/Put/DeleteObject under <prefix>/
                      ecr  GetAuthorizationToken; pull (BatchGetImage ...) from the repositories
                      logs write /aws/sagemaker/* (the jobs' and endpoints' container output)
                      cloudwatch PutMetricData in the /aws/sagemaker/* namespaces
    ECR repository  streamguard-train (docker/Dockerfile.train) and streamguard-serve
                    (docker/Dockerfile.serve), scan on push
    S3 bucket       public access blocked, default encryption (SSE-S3), lifecycle rules that
                    expire <prefix>/checkpoints/ and <prefix>/output/ after N days (the SageMaker
                    backend's layout: jobs.checkpoint_s3_uri, backends.sagemaker.job_spec) and
                    abort incomplete multipart uploads; <prefix>/data/ (content-addressed
                    channels, reused by later runs) and <prefix>/endpoints/ (models behind live
                    endpoints) are kept

Why a scoped inline policy and not the managed ``AmazonSageMakerFullAccess``: that policy lets
the role create and delete any SageMaker resource and pass roles, yet reads and writes only
buckets whose name contains "sagemaker", so with a bucket named otherwise the jobs would still
fail on their first S3 call. The inline policy grants exactly what a training job and an
endpoint of this project do, on this bucket and these repositories.

The plan is read first (:func:`plan_setup`); nothing is changed when any step conflicts (a role
SageMaker may not assume, a bucket of another account or region), so a conflict is reported
with what to do and the account is left as it was. ``--dry-run`` prints the plan alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamguard_core.aws.config import error_code

SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
ACCESS_POLICY_NAME = "streamguard-sagemaker-access"
RULE_CHECKPOINTS = "streamguard-expire-checkpoints"
RULE_OUTPUT = "streamguard-expire-output"
RULE_MULTIPART = "streamguard-abort-incomplete-uploads"
MULTIPART_DAYS = 7
CREATED_BY = {"Key": "created-by", "Value": "streamguard aws setup"}
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
REPOSITORY_NAME = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")

StepState = Literal["create", "update", "exists", "conflict"]


class SetupConfig(BaseModel):
    """What ``streamguard aws setup`` creates (names and retention)."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(description="S3 bucket for data channels, checkpoints and models.")
    prefix: str = Field(
        "streamguard",
        description="Key prefix inside the bucket (SageMakerConfig.prefix; with an S3Bucket "
        "block: its bucket_folder/prefix).",
    )
    role_name: str = Field("streamguard-sagemaker", description="The IAM role SageMaker assumes.")
    repositories: list[str] = Field(
        default_factory=lambda: ["streamguard-train", "streamguard-serve"],
        min_length=1,
        description="ECR repositories; the first holds the training image (image_uri).",
    )
    image_tag: str = Field("latest", description="The tag the printed image URIs carry.")
    checkpoint_days: int = Field(
        30, ge=1, description="Days after which objects under <prefix>/checkpoints/ expire."
    )
    output_days: int = Field(
        90, ge=1, description="Days after which objects under <prefix>/output/ expire."
    )
    region: str | None = Field(None, description="AWS region; empty = the default chain's.")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not BUCKET_NAME.match(value) or ".." in value:
            raise ValueError(
                f"invalid S3 bucket name {value!r}: 3-63 characters of a-z, 0-9, '.' and '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value:
            raise ValueError("prefix must not be empty: the lifecycle rules are scoped to it")
        return value

    @field_validator("role_name")
    @classmethod
    def _role(cls, value: str) -> str:
        if not ROLE_NAME.match(value):
            raise ValueError(f"invalid IAM role name {value!r}: 1-64 of [A-Za-z0-9+=,.@_-]")
        return value

    @field_validator("repositories")
    @classmethod
    def _repositories(cls, value: list[str]) -> list[str]:
        for name in value:
            if not (2 <= len(name) <= 256 and REPOSITORY_NAME.match(name)):
                raise ValueError(
                    f"invalid ECR repository name {name!r}: lowercase letters, digits and "
                    "'.', '_', '-', '/' separators, 2-256 characters"
                )
        return list(dict.fromkeys(value))


class SetupClients(NamedTuple):
    """The boto3 clients setup uses (``from_session`` makes them)."""

    iam: Any
    ecr: Any
    s3: Any
    sts: Any

    @classmethod
    def from_session(cls, session: Any) -> SetupClients:
        """The four clients of ``session`` (in its region)."""
        return cls(*(session.client(name) for name in ("iam", "ecr", "s3", "sts")))


@dataclass
class Step:
    """One thing setup checks: what it found and, for create/update, how to make it so."""

    resource: str
    state: StepState
    detail: str = ""
    apply: Callable[[], None] | None = field(default=None, repr=False)
    done: bool = False


@dataclass
class SetupPlan:
    """The steps, the account they run in and the values SageMakerConfig takes afterwards."""

    cfg: SetupConfig
    account: str
    partition: str
    region: str
    steps: list[Step]
    existing_role_arn: str | None = None

    @property
    def role_arn(self) -> str:
        """The role's ARN (an existing role's own, which may carry a path)."""
        return (
            self.existing_role_arn
            or f"arn:{self.partition}:iam::{self.account}:role/{self.cfg.role_name}"
        )

    def image_uri(self, repository: str) -> str:
        """``<account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>:<tag>``."""
        suffix = ".cn" if self.partition == "aws-cn" else ""
        return (
            f"{self.account}.dkr.ecr.{self.region}.amazonaws.com{suffix}/{repository}:"
            f"{self.cfg.image_tag}"
        )

    @property
    def conflicts(self) -> list[Step]:
        return [s for s in self.steps if s.state == "conflict"]

    def sagemaker_settings(self) -> dict[str, Any]:
        """The ``sagemaker:`` values of a pipeline config that this setup makes valid."""
        return {
            "region": self.region,
            "image_uri": self.image_uri(self.cfg.repositories[0]),
            "role_arn": self.role_arn,
            "bucket": self.cfg.bucket,
            "prefix": self.cfg.prefix,
        }


class SetupConflict(RuntimeError):
    """Something that exists stands in the way; nothing was changed."""


def trust_policy() -> dict[str, Any]:
    """The execution role's trust policy: SageMaker may assume it."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": SAGEMAKER_PRINCIPAL},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def access_policy(cfg: SetupConfig, partition: str, region: str, account: str) -> dict[str, Any]:
    """The role's inline policy: the bucket prefix, image pulls, logs and metrics, nothing else."""
    bucket = f"arn:{partition}:s3:::{cfg.bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListTheBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": bucket,
            },
            {
                "Sid": "ReadWriteThePrefix",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                "Resource": f"{bucket}/{cfg.prefix}/*",
            },
            {
                "Sid": "EcrLogin",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                "Resource": "*",
            },
            {
                "Sid": "PullTheImages",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                ],
                "Resource": [
                    f"arn:{partition}:ecr:{region}:{account}:repository/{name}"
                    for name in cfg.repositories
                ],
            },
            {
                "Sid": "WriteContainerLogs",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                "Resource": f"arn:{partition}:logs:{region}:{account}:log-group:/aws/sagemaker/*",
            },
            {
                "Sid": "PublishMetrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            },
        ],
    }


def lifecycle_rules(cfg: SetupConfig) -> list[dict[str, Any]]:
    """The bucket's expiry rules for old checkpoints and job outputs (ids ``streamguard-*``)."""

    def expire(rule_id: str, folder: str, days: int) -> dict[str, Any]:
        return {
            "ID": rule_id,
            "Filter": {"Prefix": f"{cfg.prefix}/{folder}/"},
            "Status": "Enabled",
            "Expiration": {"Days": days},
            # on a versioned bucket the expired versions go too, not only their current copy
            "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        }

    return [
        expire(RULE_CHECKPOINTS, "checkpoints", cfg.checkpoint_days),
        expire(RULE_OUTPUT, "output", cfg.output_days),
        {
            "ID": RULE_MULTIPART,
            "Filter": {"Prefix": f"{cfg.prefix}/"},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": MULTIPART_DAYS},
        },
    ]


def _policy_dict(document: Any) -> dict[str, Any]:
    """A policy document as a dict (boto3 decodes IAM's URL-encoded JSON; not every stub does)."""
    if isinstance(document, dict):
        return document
    return dict(json.loads(urllib.parse.unquote(str(document))))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def trusted_services(document: Any) -> list[str]:
    """The service principals a trust policy allows to ``sts:AssumeRole`` (sorted)."""
    out: set[str] = set()
    for statement in _as_list(_policy_dict(document).get("Statement") or []):
        if statement.get("Effect") != "Allow":
            continue
        actions = {str(a).lower() for a in _as_list(statement.get("Action") or [])}
        if not actions & {"sts:assumerole", "sts:*", "*"}:
            continue
        principal = statement.get("Principal") or {}
        if isinstance(principal, dict):
            out.update(str(s) for s in _as_list(principal.get("Service") or []))
    return sorted(out)


def _trust_conflict(cfg: SetupConfig, document: Any) -> str:
    services = trusted_services(document)
    wanted = json.dumps(trust_policy(), separators=(",", ":"))
    return (
        f"the role exists, but its trust policy does not let {SAGEMAKER_PRINCIPAL} assume it "
        f"(it trusts: {', '.join(services) or 'no service'}): every training job would fail "
        f"with 'could not assume role'. Add {SAGEMAKER_PRINCIPAL} to it (aws iam "
        f"update-assume-role-policy --role-name {cfg.role_name} --policy-document '{wanted}', "
        "keeping the principals it needs) or choose another --role-name"
    )


def _normalised(policy: dict[str, Any]) -> str:
    """A policy as canonical JSON: lists of actions and resources compared as sets."""

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in sorted(value.items())}
        if isinstance(value, list | tuple):
            items = [norm(v) for v in value]
            return items[0] if len(items) == 1 else sorted(items, key=json.dumps)
        return value

    return json.dumps(norm(policy), sort_keys=True)


def _plan_role(
    c: SetupClients, cfg: SetupConfig, access: dict[str, Any]
) -> tuple[list[Step], str | None]:
    from botocore.exceptions import ClientError

    role = f"IAM role {cfg.role_name}"
    inline = f"IAM role policy {cfg.role_name}/{ACCESS_POLICY_NAME}"

    def create_role() -> None:
        c.iam.create_role(
            RoleName=cfg.role_name,
            AssumeRolePolicyDocument=json.dumps(trust_policy()),
            Description="Execution role of StreamGuard's SageMaker training jobs and endpoints",
            Tags=[CREATED_BY],
        )

    def put_policy() -> None:
        c.iam.put_role_policy(
            RoleName=cfg.role_name, PolicyName=ACCESS_POLICY_NAME, PolicyDocument=json.dumps(access)
        )

    try:
        found = c.iam.get_role(RoleName=cfg.role_name)["Role"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        return [
            Step(role, "create", f"trusted by {SAGEMAKER_PRINCIPAL}", create_role),
            Step(inline, "create", "S3 bucket prefix, ECR pull, CloudWatch Logs", put_policy),
        ], None
    arn = str(found["Arn"])
    if SAGEMAKER_PRINCIPAL not in trusted_services(found.get("AssumeRolePolicyDocument") or {}):
        return [
            Step(role, "conflict", _trust_conflict(cfg, found["AssumeRolePolicyDocument"]))
        ], arn
    steps = [Step(role, "exists", arn)]
    try:
        current = c.iam.get_role_policy(RoleName=cfg.role_name, PolicyName=ACCESS_POLICY_NAME)
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        steps.append(
            Step(inline, "create", "S3 bucket prefix, ECR pull, CloudWatch Logs", put_policy)
        )
        return steps, arn
    if _normalised(_policy_dict(current["PolicyDocument"])) == _normalised(access):
        steps.append(Step(inline, "exists"))
    else:
        steps.append(
            Step(
                inline,
                "update",
                "replaced by the policy for this bucket, prefix and "
                "repositories (its statements differ)",
                put_policy,
            )
        )
    return steps, arn


def _plan_repositories(c: SetupClients, cfg: SetupConfig) -> list[Step]:
    from botocore.exceptions import ClientError

    steps = []
    for name in cfg.repositories:

        def create(name: str = name) -> None:
            c.ecr.create_repository(
                repositoryName=name,
                imageTagMutability="MUTABLE",  # `:latest` is pushed again after a rebuild
                imageScanningConfiguration={"scanOnPush": True},
                tags=[CREATED_BY],
            )

        try:
            found = c.ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        except ClientError as exc:
            if error_code(exc) != "RepositoryNotFoundException":
                raise
            steps.append(Step(f"ECR repository {name}", "create", "scan on push", create))
            continue
        steps.append(Step(f"ECR repository {name}", "exists", str(found.get("repositoryUri"))))
    return steps


def _bucket_region(c: SetupClients, bucket: str) -> str:
    location = c.s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, str(location))


def _plan_bucket(c: SetupClients, cfg: SetupConfig, region: str) -> list[Step]:
    from botocore.exceptions import ClientError

    bucket = f"S3 bucket {cfg.bucket}"
    block = f"S3 public access block of {cfg.bucket}"
    encryption = f"S3 default encryption of {cfg.bucket}"
    lifecycle = f"S3 lifecycle rules of {cfg.bucket}"
    blocked = {
        k: True
        for k in (
            "BlockPublicAcls",
            "IgnorePublicAcls",
            "BlockPublicPolicy",
            "RestrictPublicBuckets",
        )
    }
    ours = lifecycle_rules(cfg)
    rules_text = (
        f"expire {cfg.prefix}/checkpoints/ after {cfg.checkpoint_days} d, "
        f"{cfg.prefix}/output/ after {cfg.output_days} d; abort incomplete uploads "
        f"after {MULTIPART_DAYS} d"
    )

    def create_bucket() -> None:
        kwargs: dict[str, Any] = {"Bucket": cfg.bucket}
        if region != "us-east-1":  # us-east-1 takes no LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        c.s3.create_bucket(**kwargs)

    def put_block() -> None:
        c.s3.put_public_access_block(Bucket=cfg.bucket, PublicAccessBlockConfiguration=blocked)

    def put_encryption() -> None:
        c.s3.put_bucket_encryption(
            Bucket=cfg.bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )

    def put_rules(others: list[dict[str, Any]]) -> Callable[[], None]:
        def put() -> None:
            c.s3.put_bucket_lifecycle_configuration(
                Bucket=cfg.bucket, LifecycleConfiguration={"Rules": [*others, *ours]}
            )

        return put

    try:
        c.s3.head_bucket(Bucket=cfg.bucket)
    except ClientError as exc:
        code = error_code(exc)
        if code in ("403", "AccessDenied", "Forbidden"):
            return [
                Step(
                    bucket,
                    "conflict",
                    "the bucket exists but these credentials may not "
                    "use it (HTTP 403): S3 bucket names are global, so it probably belongs "
                    "to another account; choose another --bucket",
                )
            ]
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
        return [
            Step(bucket, "create", f"in {region}", create_bucket),
            Step(block, "create", "all four settings on", put_block),
            Step(encryption, "create", "SSE-S3 (AES256)", put_encryption),
            Step(lifecycle, "create", rules_text, put_rules([])),
        ]
    where = _bucket_region(c, cfg.bucket)
    if where != region:
        return [
            Step(
                bucket,
                "conflict",
                f"the bucket is in {where}, not {region}: SageMaker "
                f"reads channels and writes models only in its own region; run setup with "
                f"--region {where}, or choose another --bucket",
            )
        ]
    steps = [Step(bucket, "exists", f"in {where}")]
    try:
        current = c.s3.get_public_access_block(Bucket=cfg.bucket)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        current = {}
    if all(current.get(k) for k in blocked):
        steps.append(Step(block, "exists"))
    else:
        off = ", ".join(k for k in blocked if not current.get(k))
        steps.append(Step(block, "update", f"turning on {off}", put_block))
    try:
        rules = c.s3.get_bucket_encryption(Bucket=cfg.bucket)["ServerSideEncryptionConfiguration"][
            "Rules"
        ]
    except ClientError as exc:
        if error_code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        rules = []
    algorithms = [
        r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules
    ]
    if any(algorithms):
        note = (
            ""
            if "AES256" in algorithms
            else (" (a KMS key: the role also needs kms:Decrypt and kms:GenerateDataKey on it)")
        )
        steps.append(Step(encryption, "exists", ", ".join(filter(None, algorithms)) + note))
    else:
        steps.append(Step(encryption, "create", "SSE-S3 (AES256)", put_encryption))
    try:
        existing = c.s3.get_bucket_lifecycle_configuration(Bucket=cfg.bucket)["Rules"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchLifecycleConfiguration":
            raise
        existing = []
    ids = {r["ID"] for r in ours}
    others = [r for r in existing if r.get("ID") not in ids]
    mine = sorted((r for r in existing if r.get("ID") in ids), key=lambda r: r["ID"])
    if _normalised({"r": mine}) == _normalised({"r": sorted(ours, key=lambda r: r["ID"])}):
        steps.append(Step(lifecycle, "exists", rules_text))
    else:
        kept = f"; {len(others)} other rule(s) kept" if others else ""
        state: StepState = "update" if mine or others else "create"
        steps.append(Step(lifecycle, state, rules_text + kept, put_rules(others)))
    return steps


def plan_setup(clients: SetupClients, cfg: SetupConfig, region: str) -> SetupPlan:
    """Read what exists and plan what to create; changes nothing.

    Raises:
        botocore errors: AWS refused a read (credentials, permissions, network).
    """
    identity = clients.sts.get_caller_identity()
    account = str(identity["Account"])
    partition = str(identity["Arn"]).split(":")[1]
    access = access_policy(cfg, partition, region, account)
    role_steps, role_arn = _plan_role(clients, cfg, access)
    steps = [
        *role_steps,
        *_plan_repositories(clients, cfg),
        *_plan_bucket(clients, cfg, region),
    ]
    return SetupPlan(cfg, account, partition, region, steps, existing_role_arn=role_arn)


def apply_plan(plan: SetupPlan) -> SetupPlan:
    """Create and update what the plan says, in order; returns the plan.

    Raises:
        SetupConflict: a step conflicts (then nothing at all is changed).
        botocore errors: AWS refused a change; the steps before it are done, and running setup
            again continues from there.
    """
    if plan.conflicts:
        raise SetupConflict(
            "nothing was changed: " + "; ".join(f"{s.resource}: {s.detail}" for s in plan.conflicts)
        )
    for step in plan.steps:
        if step.apply is not None and step.state in ("create", "update"):
            step.apply()
            step.done = True
    return plan


def settings_yaml(plan: SetupPlan) -> str:
    """The ``sagemaker:`` section this setup made valid, as YAML (checked by SageMakerConfig)."""
    import yaml

    from streamguard_core.aws.config import SageMakerConfig

    settings = plan.sagemaker_settings()
    SageMakerConfig.model_validate(settings)
    return yaml.safe_dump({"sagemaker": settings}, sort_keys=False)


# --------------------------------------------------------------------------- the command

SETUP_DESCRIPTION = """\
Create, once, what SageMaker training needs in your AWS account: the execution role
(trusted by sagemaker.amazonaws.com, with an inline policy scoped to the bucket prefix, the ECR
repositories and CloudWatch Logs), the ECR repositories for the training and serving images, and
the S3 bucket (public access blocked, SSE-S3 encryption, lifecycle rules expiring old
checkpoints and job outputs). What exists is left alone and reported as 'exists'; a role that
SageMaker may not assume, or a bucket of another account or region, is reported and nothing is
changed. Then it prints the sagemaker settings for your pipeline config.

  streamguard aws setup --bucket my-streamguard-bucket --region eu-west-1 --dry-run
  streamguard aws setup --bucket my-streamguard-bucket --region eu-west-1 --write-config sm.yaml

Credentials come from the default AWS chain (or --profile); they need IAM, ECR and S3 rights to
create these (an administrator runs it once).
"""

_VERBS = {"create": "created", "update": "updated", "exists": "exists", "conflict": "CONFLICT"}
_DRY = {
    "create": "would create",
    "update": "would update",
    "exists": "exists",
    "conflict": "CONFLICT",
}


def add_setup_parser(aws: argparse.ArgumentParser) -> None:
    """Add ``aws setup`` to the ``aws`` command."""
    from streamguard_core.cli import _Formatter, add_config_flags, subcommands

    sub = subcommands(aws)
    setup = sub.add_parser(
        "setup",
        help="create the SageMaker execution role, ECR repositories and S3 bucket (idempotent)",
        description=SETUP_DESCRIPTION,
        formatter_class=_Formatter,
    )
    add_config_flags(setup, SetupConfig, "setup", names={"repositories": "--repository"})
    setup.add_argument("--profile", default=None, help="AWS profile (default chain otherwise)")
    setup.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (what would be created) and change nothing",
    )
    setup.add_argument(
        "--write-config",
        default=None,
        metavar="PATH",
        help="also write the sagemaker settings as YAML to PATH",
    )
    setup.add_argument("--json", action="store_true", help="print the result as JSON")
    setup.set_defaults(func=cmd_setup)


def _write_config(path: Path, text: str) -> str:
    """Write the snippet; an existing file is kept unless it holds exactly this text."""
    from streamguard_core.io import atomic_write_text

    if path.exists():
        if path.read_text(encoding="utf-8", errors="replace") == text:
            return "exists"
        raise SetupConflict(
            f"{path} exists with other content; not overwritten (the settings "
            "are printed above: copy them, or choose another --write-config)"
        )
    atomic_write_text(path, text)
    return "written"


def cmd_setup(args: argparse.Namespace) -> int:
    """``streamguard aws setup``: 0 done (or planned), 1 conflict or AWS error, 2 bad settings."""
    from botocore.exceptions import BotoCoreError, ClientError

    from streamguard_core.cli import config_values

    # invalid settings: cli.main prints the ValidationError (redacted) and returns 2
    cfg = SetupConfig(**config_values(args, "setup"))
    try:
        import boto3

        session = boto3.session.Session(region_name=cfg.region, profile_name=args.profile)
        if not session.region_name:
            return _fail(
                "no AWS region: pass --region or set AWS_DEFAULT_REGION (or a region in "
                "your AWS profile); SageMaker, ECR and the bucket live in one region"
            )
        plan = plan_setup(SetupClients.from_session(session), cfg, session.region_name)
    except (ClientError, BotoCoreError) as exc:
        return _fail(f"reading the account failed: {exc}")
    failed: Exception | None = None
    if not args.dry_run and not plan.conflicts:
        try:
            apply_plan(plan)
        except (ClientError, BotoCoreError) as exc:
            failed = exc
    text = None if plan.conflicts else settings_yaml(plan)
    written: str | None = None
    write_error: str | None = None
    if args.write_config and text is not None and not args.dry_run and failed is None:
        try:
            written = _write_config(Path(args.write_config), text)
        except SetupConflict as exc:
            write_error = str(exc)
    if args.json:
        steps = [
            {"resource": s.resource, "state": s.state, "detail": s.detail, "done": s.done}
            for s in plan.steps
        ]
        print(
            json.dumps(
                {
                    "account": plan.account,
                    "region": plan.region,
                    "dry_run": args.dry_run,
                    "steps": steps,
                    "sagemaker": plan.sagemaker_settings(),
                    "serving_images": [plan.image_uri(r) for r in cfg.repositories[1:]],
                    "config_written": written,
                },
                indent=2,
            )
        )
    else:
        _print_plan(plan, args.dry_run)
        if text is not None:
            print(
                "\nThe SageMaker settings for your pipeline config (deployments/params/*.yaml):\n"
            )
            print("  " + text.rstrip().replace("\n", "\n  "))
            _print_next_steps(plan)
        if written is not None:
            print(f"\n{args.write_config}: {written}")
        elif args.write_config and args.dry_run:
            print(f"\n{args.write_config}: not written (dry run)")
    if failed is not None:
        return _fail(
            f"AWS refused a change: {failed}; the steps before it are done, run setup "
            "again to continue"
        )
    if plan.conflicts:
        for s in plan.conflicts:
            print(f"streamguard aws setup: error: {s.resource}: {s.detail}", file=sys.stderr)
        print("streamguard aws setup: nothing was changed", file=sys.stderr)
        return 1
    if write_error is not None:
        return _fail(write_error)
    return 0


def _print_plan(plan: SetupPlan, dry_run: bool) -> None:
    mode = " (dry run: nothing is changed)" if dry_run else ""
    print(f"streamguard aws setup: account {plan.account}, region {plan.region}{mode}")
    width = max(len(s.resource) for s in plan.steps)
    for s in plan.steps:
        # a step not carried out (dry run, a conflict, an earlier failure) says what it would do
        verb = (_VERBS if s.done or s.state in ("exists", "conflict") else _DRY)[s.state]
        detail = "see below" if s.state == "conflict" else s.detail
        print(f"  {s.resource:<{width}}  {verb}" + (f": {detail}" if detail else ""))


def _print_next_steps(plan: SetupPlan) -> None:
    registry = plan.image_uri(plan.cfg.repositories[0]).split("/")[0]
    print(
        "\nNext: build and push the images (docker/README.md), then run a pipeline with these "
        "settings:\n"
    )
    print(
        f"  aws ecr get-login-password --region {plan.region} | docker login --username AWS "
        f"--password-stdin {registry}"
    )
    dockerfiles = {
        "streamguard-train": "docker/Dockerfile.train",
        "streamguard-serve": "docker/Dockerfile.serve",
    }
    for repository in plan.cfg.repositories:
        uri = plan.image_uri(repository)
        dockerfile = dockerfiles.get(repository, "docker/Dockerfile.<kind>")
        print(f"  docker build -f {dockerfile} -t {uri} . && docker push {uri}")
    if len(plan.cfg.repositories) > 1:
        print(
            f"\n  serving image for `streamguard aws deploy --image-uri`: "
            f"{plan.image_uri(plan.cfg.repositories[1])}"
        )
    print(f"  whoever submits jobs needs iam:PassRole on {plan.role_arn}")


def _fail(message: str) -> int:
    print(f"streamguard aws setup: error: {message}", file=sys.stderr)
    return 1
