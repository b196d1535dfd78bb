"""Deploy a saved detector as a SageMaker real-time endpoint, over a caller's boto3 clients.

:func:`deploy` does what the console's "deploy model" does, step by step::

    model dir --pack_model--> model.tar.gz (deterministic: same files, same bytes, same sha256)
              --upload-->     s3://<bucket>/<prefix>/endpoints/models/<sha256[:24]>/model.tar.gz
              CreateModel            image (docker/Dockerfile.serve) + ModelDataUrl + role
              CreateEndpointConfig   one variant: instance type and count
              CreateEndpoint         (or UpdateEndpoint with ``update=True``)
              DescribeEndpoint ...   until InService; Failed -> its FailureReason

Names are derived from the content (``<endpoint>-m-<hash>``, ``<endpoint>-c-<hash>``), so a
retried deploy finds what it already created instead of failing, and deploying the same model
twice uploads nothing. SageMaker starts the image as ``docker run IMAGE serve``: the container
runs ``streamguard serve`` in SageMaker mode (``/ping``, ``/invocations`` on port 8080, the
model in ``/opt/ml/model``), with the :class:`~streamguard_core.config.ServeConfig` limits of
``DeployConfig.container`` in ``$STREAMGUARD_SERVE_CONFIG``.

Commands: ``streamguard aws deploy``, ``streamguard aws invoke``, ``streamguard aws undeploy``.
Point boto3 at the emulator (``AWS_ENDPOINT_URL_SAGEMAKER``,
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``) and S3 at moto to rehearse it offline.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streamguard_core.aws.config import error_code, error_message, redact
from streamguard_core.aws.s3 import s3_uri
from streamguard_core.config import ServeConfig
from streamguard_core.models.registry import MODEL_CARD
from streamguard_core.serve.cli import SERVE_CONFIG_ENV

log = logging.getLogger("streamguard.aws.deploy")

RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag|@sha256:digest]
ECR_IMAGE = re.compile(
    r"^\d{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"
    r"[a-z0-9]+(?:[._/-][a-z0-9]+)*(:[\w][\w.-]{0,127}|@sha256:[a-f0-9]{64})?$"
)
CONTAINER_FIELDS = (
    "max_request_bytes", "max_functions", "max_function_chars", "timeout_s", "concurrency",
    "batch_size", "explain", "top_lines", "ig_steps", "use_onnx",
)  # fmt: skip
"""The ServeConfig fields a deployed container takes (host, port and auth are SageMaker's)."""
CONTAINER_TIMEOUT_S = 50.0
"""The container's default timeout_s: under InvokeEndpoint's 60 s, so a slow request gets the
container's own 503 (ModelError) rather than SageMaker's timeout."""
TERMINAL = ("InService", "Failed", "OutOfService", "UpdateRollbackFailed")
DEPLOY_DESCRIPTION = """\
Deploy a saved detector as a SageMaker real-time endpoint: pack the model directory as
model.tar.gz (deterministic; uploaded once per content to s3://BUCKET/PREFIX/endpoints/models/),
CreateModel (the serving image of docker/Dockerfile.serve + the archive + the role),
CreateEndpointConfig (instance type and count), CreateEndpoint, then wait for InService. With
--update an existing endpoint moves to the new model (UpdateEndpoint); a failed update is
rolled back by SageMaker and reported with its FailureReason.

  streamguard aws deploy --registry runs/registry --endpoint-name streamguard \\
      --image-uri ACCOUNT.dkr.ecr.REGION.amazonaws.com/streamguard-serve:latest \\
      --role-arn arn:aws:iam::ACCOUNT:role/streamguard-sagemaker --bucket BUCKET
  streamguard aws invoke --endpoint-name streamguard src/parse.c
  streamguard aws undeploy --endpoint-name streamguard

Credentials come from the default AWS chain (or --profile). Rehearse offline against the
emulator: python -m streamguard_core.aws.emulator --with-moto --create-bucket BUCKET prints the
AWS_ENDPOINT_URL* variables to export.
"""


class DeployError(RuntimeError):
    """The endpoint could not be deployed (the message says why and what to do)."""


class EndpointFailed(DeployError):
    """The endpoint (or its update) failed; ``reason`` is SageMaker's FailureReason."""

    def __init__(self, endpoint: str, reason: str, update: bool = False) -> None:
        what = "update of endpoint" if update else "endpoint"
        super().__init__(f"SageMaker {what} {endpoint} failed: {reason}")
        self.endpoint, self.reason = endpoint, reason


def _container_default() -> ServeConfig:
    return ServeConfig(timeout_s=CONTAINER_TIMEOUT_S)


class DeployConfig(BaseModel):
    """Where and how a detector is deployed as a SageMaker real-time endpoint."""

    model_config = ConfigDict(extra="forbid")

    endpoint_name: str = Field(description="The endpoint (1-63 of [a-zA-Z0-9-]).")
    image_uri: str = Field(description="ECR URI of the serving image (docker/Dockerfile.serve).")
    role_arn: str = Field(
        description="IAM role SageMaker assumes: reads model.tar.gz from S3, pulls the image."
    )
    bucket: str = Field(description="S3 bucket for model.tar.gz.")
    prefix: str = Field("streamguard", description="Key prefix inside the bucket.")
    region: str | None = Field(None, description="AWS region; empty = the default chain's.")
    instance_type: str = Field("ml.m5.large", description="Instance type of the endpoint.")
    instance_count: int = Field(1, ge=1, description="Instances behind the endpoint.")
    variant_name: str = Field("AllTraffic", description="The production variant's name.")
    wait_timeout_s: float = Field(
        1800.0, gt=0, description="Give up waiting for InService after this (the endpoint "
        "keeps going)."
    )  # fmt: skip
    poll_s: float = Field(15.0, gt=0, description="Seconds between DescribeEndpoint polls.")
    container: ServeConfig = Field(
        default_factory=_container_default,
        description="The container's serving limits (host, port and auth are SageMaker's).",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on every resource.")

    @field_validator("endpoint_name", "variant_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not RESOURCE_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a SageMaker name: 1-63 characters of [a-zA-Z0-9-], starting "
                "with a letter or digit"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _role_and_image_given(cls, data: Any) -> Any:
        # say what to give, rather than pydantic's bare "Field required"
        if isinstance(data, dict):
            if not data.get("role_arn"):
                raise ValueError(
                    "missing role: give --role-arn arn:aws:iam::<account>:role/<name>, a role "
                    "SageMaker can assume with s3:GetObject on the bucket and ECR pull"
                )
            if not data.get("image_uri"):
                raise ValueError(
                    "missing image: give --image-uri <account>.dkr.ecr.<region>.amazonaws.com/"
                    "<repository>:<tag> (build docker/Dockerfile.serve and push it to ECR)"
                )
        return data

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str) -> str:
        if not ROLE_ARN.match(value):
            raise ValueError(
                f"{value!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"
            )
        return value

    @field_validator("image_uri")
    @classmethod
    def _image(cls, value: str) -> str:
        if not ECR_IMAGE.match(value):
            raise ValueError(
                f"{value!r} is not an ECR image URI: SageMaker pulls serving images from ECR, "
                "<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@sha256:digest]"
            )
        return value

    @field_validator("bucket")
    @classmethod
    def _bare_bucket(cls, value: str) -> str:
        if not value or value.startswith("s3://") or "/" in value:
            raise ValueError("bucket is a bare bucket name (put paths in 'prefix')")
        return value

    def container_environment(self) -> dict[str, str]:
        """The container's environment: its ServeConfig fields as JSON."""
        return {SERVE_CONFIG_ENV: self.container.model_dump_json(include=set(CONTAINER_FIELDS))}


@dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy` created or reused, and how long it took."""

    endpoint_name: str
    endpoint_arn: str
    endpoint_config_name: str
    model_name: str
    model_data_url: str
    status: str
    updated: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pack_model(model_dir: str | Path, archive: str | Path) -> str:
    """Write ``model_dir``'s files as a gzipped tar at ``archive``; returns its sha256.

    The archive is deterministic (sorted names, zero times and owners, mode 0644, links
    stored as the files they point to, no names starting with ``.``), so its hash identifies
    the model's content.

    Raises:
        DeployError: ``model_dir`` is not a model directory.
    """
    root = Path(model_dir)
    card = root / MODEL_CARD
    if not card.is_file():
        raise DeployError(f"{root}: not a model directory (no {MODEL_CARD})")
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )  # fmt: skip
    with (
        open(archive, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in files:
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    from streamguard_core.io import sha256_file

    return sha256_file(archive)


def upload_model(s3: Any, model_dir: str | Path, bucket: str, prefix: str) -> str:
    """Pack ``model_dir`` and upload it under its content hash; returns the ``s3://`` URI.

    Nothing is uploaded when that key already holds it (the same model deployed again).
    """
    from botocore.exceptions import ClientError

    with tempfile.TemporaryDirectory(prefix="streamguard-deploy-") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        digest = pack_model(model_dir, archive)
        key = "/".join(p for p in (prefix.strip("/"), "endpoints", "models", digest[:24],
                                   "model.tar.gz") if p)  # fmt: skip
        try:
            s3.head_object(Bucket=bucket, Key=key)
            log.info("model.tar.gz of %s already at s3://%s/%s", model_dir, bucket, key)
        except ClientError as exc:
            if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
            s3.upload_file(str(archive), bucket, key)
            log.info("uploaded %s as s3://%s/%s", model_dir, bucket, key)
    return s3_uri(bucket, key)


def _short_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def resource_names(cfg: DeployConfig, model_data_url: str) -> tuple[str, str]:
    """(model name, endpoint config name): the endpoint's name and a hash of what they hold."""
    base = cfg.endpoint_name[:48].rstrip("-")
    environment = cfg.container_environment()
    model = f"{base}-m-{_short_hash(model_data_url, cfg.image_uri, cfg.role_arn, environment)}"
    settings = _short_hash(model, cfg.instance_type, cfg.instance_count, cfg.variant_name)
    config = f"{base}-c-{settings}"
    return model, config


def _exists(exc: Exception) -> bool:
    already = "already exist" in error_message(exc)
    return error_code(exc) in ("ValidationException", "ResourceInUse") and already


def describe_endpoint(sm: Any, name: str) -> dict[str, Any] | None:
    """DescribeEndpoint, or None when there is no such endpoint."""
    from botocore.exceptions import ClientError

    try:
        return dict(sm.describe_endpoint(EndpointName=name))
    except ClientError as exc:
        if error_code(exc) == "ValidationException" and "Could not find" in error_message(exc):
            return None
        raise


def _create_model(sm: Any, cfg: DeployConfig, name: str, model_data_url: str) -> None:
    from botocore.exceptions import ClientError

    request: dict[str, Any] = {
        "ModelName": name,
        "PrimaryContainer": {
            "Image": cfg.image_uri,
            "ModelDataUrl": model_data_url,
            "Environment": cfg.container_environment(),
        },
        "ExecutionRoleArn": cfg.role_arn,
    }
    if cfg.tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in cfg.tags.items()]
    log.debug("CreateModel %s", redact(request))
    try:
        sm.create_model(**request)
    except ClientError as exc:
        if not _exists(exc):
            raise DeployError(
                f"CreateModel {name} failed: {error_code(exc)}: {error_message(exc)}"
            ) from exc
        log.info("model %s already exists (same content): reused", name)


def _create_endpoint_config(sm: Any, cfg: DeployConfig, name: str, model: str) -> None:
    from botocore.exceptions import ClientError

    request: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [
            {
                "VariantName": cfg.variant_name,
                "ModelName": model,
                "InstanceType": cfg.instance_type,
                "InitialInstanceCount": cfg.instance_count,
                "InitialVariantWeight": 1.0,
            }
        ],
    }
    if cfg.tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in cfg.tags.items()]
    try:
        sm.create_endpoint_config(**request)
    except ClientError as exc:
        if not _exists(exc):
            raise DeployError(
                f"CreateEndpointConfig {name} failed: {error_code(exc)}: {error_message(exc)}"
            ) from exc
        log.info("endpoint config %s already exists (same settings): reused", name)


def wait_for_endpoint(
    sm: Any,
    name: str,
    config_name: str,
    timeout_s: float,
    poll_s: float,
    update: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll DescribeEndpoint until the endpoint serves ``config_name``; the last description.

    Raises:
        EndpointFailed: the endpoint failed, or its update was rolled back (FailureReason).
        DeployError: it is gone, or still not InService after ``timeout_s``.
    """
    deadline = clock() + timeout_s
    last = None
    while True:
        desc = describe_endpoint(sm, name)
        if desc is None:
            raise DeployError(f"endpoint {name} disappeared while it was deployed")
        status = desc["EndpointStatus"]
        if status != last:
            log.info("endpoint %s: %s", name, status)
            last = status
        reason = desc.get("FailureReason") or "no FailureReason given"
        if status in TERMINAL:
            if status == "InService" and desc.get("EndpointConfigName") == config_name:
                return desc
            if status == "InService":  # an update that failed: SageMaker rolled it back
                raise EndpointFailed(name, reason, update=True)
            raise EndpointFailed(name, f"{status}: {reason}", update=update)
        if clock() > deadline:
            raise DeployError(
                f"endpoint {name} is still {status} after {timeout_s:g} s; SageMaker carries on: "
                f"check it with DescribeEndpoint (or raise --wait-timeout-s)"
            )
        sleep(poll_s)


def deploy(
    sm: Any,
    s3: Any,
    model_dir: str | Path,
    cfg: DeployConfig,
    update: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployResult:
    """Deploy ``model_dir`` as endpoint ``cfg.endpoint_name``, or move it there (``update``).

    Raises:
        DeployError: not a model directory, an AWS call refused, the endpoint exists without
            ``update`` or is busy, a timeout.
        EndpointFailed: the endpoint failed (FailureReason) or its update was rolled back.
    """
    started = time.monotonic()
    name = cfg.endpoint_name
    current = describe_endpoint(sm, name)
    if current is not None:
        status = current["EndpointStatus"]
        if not update:
            raise DeployError(
                f"endpoint {name} already exists ({status}, config "
                f"{current.get('EndpointConfigName')}): pass --update to move it to this model, "
                f"or choose another --endpoint-name"
            )
        if status != "InService":
            raise DeployError(
                f"endpoint {name} is {status} and cannot be updated now"
                + (f" ({current['FailureReason']})" if current.get("FailureReason") else "")
                + ("; delete it first: streamguard aws undeploy --endpoint-name " + name
                   if status == "Failed" else "; wait until it is InService")
            )  # fmt: skip
    model_data_url = upload_model(s3, model_dir, cfg.bucket, cfg.prefix)
    model_name, config_name = resource_names(cfg, model_data_url)
    _create_model(sm, cfg, model_name, model_data_url)
    _create_endpoint_config(sm, cfg, config_name, model_name)
    from botocore.exceptions import ClientError

    updated = current is not None
    try:
        if current is None:
            tags = [{"Key": k, "Value": v} for k, v in cfg.tags.items()]
            sm.create_endpoint(EndpointName=name, EndpointConfigName=config_name,
                               **({"Tags": tags} if tags else {}))  # fmt: skip
            log.info("creating endpoint %s (%s)", name, config_name)
        elif current.get("EndpointConfigName") == config_name:
            log.info("endpoint %s already serves %s: nothing to update", name, config_name)
        else:
            sm.update_endpoint(EndpointName=name, EndpointConfigName=config_name)
            log.info("updating endpoint %s to %s", name, config_name)
    except ClientError as exc:
        op = "UpdateEndpoint" if updated else "CreateEndpoint"
        raise DeployError(f"{op} {name} failed: {error_code(exc)}: {error_message(exc)}") from exc
    desc = wait_for_endpoint(sm, name, config_name, cfg.wait_timeout_s, cfg.poll_s,
                             update=updated, sleep=sleep)  # fmt: skip
    return DeployResult(
        endpoint_name=name,
        endpoint_arn=str(desc.get("EndpointArn", "")),
        endpoint_config_name=config_name,
        model_name=model_name,
        model_data_url=model_data_url,
        status=str(desc["EndpointStatus"]),
        updated=updated,
        seconds=round(time.monotonic() - started, 2),
    )


def undeploy(sm: Any, name: str, keep_config: bool = False) -> list[str]:
    """Delete the endpoint (and, unless ``keep_config``, its config and model); what went.

    Raises:
        DeployError: there is no such endpoint.
    """
    from botocore.exceptions import ClientError

    desc = describe_endpoint(sm, name)
    if desc is None:
        raise DeployError(f"no endpoint named {name}")
    config_name = desc.get("EndpointConfigName")
    sm.delete_endpoint(EndpointName=name)
    gone = [f"endpoint {name}"]
    if keep_config or not config_name:
        return gone
    try:
        config = sm.describe_endpoint_config(EndpointConfigName=config_name)
        sm.delete_endpoint_config(EndpointConfigName=config_name)
        gone.append(f"endpoint config {config_name}")
        for variant in config.get("ProductionVariants", []):
            sm.delete_model(ModelName=variant["ModelName"])
            gone.append(f"model {variant['ModelName']}")
    except ClientError as exc:  # already deleted, or shared with another endpoint
        log.warning("endpoint %s deleted; its config/model were not: %s", name, exc)
    return gone


def invoke(
    runtime: Any, name: str, payload: dict[str, Any] | str, content_type: str | None = None
) -> dict[str, Any]:
    """InvokeEndpoint with a /scan body (a dict) or the code of one file (a str).

    Raises:
        DeployError: the container answered an error (its status and message).
    """
    from botocore.exceptions import ClientError

    if isinstance(payload, str):
        body, kind = payload.encode(), content_type or "text/plain"
    else:
        body, kind = json.dumps(payload).encode(), content_type or "application/json"
    try:
        response = runtime.invoke_endpoint(
            EndpointName=name, Body=body, ContentType=kind, Accept="application/json"
        )
    except ClientError as exc:
        original = exc.response.get("OriginalStatusCode")
        detail = exc.response.get("OriginalMessage") or error_message(exc)
        status = f" (container status {original})" if original else ""
        raise DeployError(
            f"InvokeEndpoint {name} failed: {error_code(exc)}{status}: {detail}"
        ) from exc
    return dict(json.loads(response["Body"].read()))


# --------------------------------------------------------------------------- commands


def add_deploy_parsers(aws: argparse.ArgumentParser) -> None:
    """Add ``aws deploy``, ``aws invoke`` and ``aws undeploy`` to the ``aws`` command."""
    from streamguard_core.cli import _Formatter, add_config_flags, subcommands

    sub = subcommands(aws)
    dep = sub.add_parser(
        "deploy",
        help="deploy a saved detector as a SageMaker real-time endpoint",
        description=DEPLOY_DESCRIPTION,
        formatter_class=_Formatter,
    )
    model = dep.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-dir", default=None, help="a saved detector directory")
    model.add_argument("--registry", default=None, help="a model registry: its production model")
    add_config_flags(dep, DeployConfig, "deploy", exclude=("tags",))
    group = dep.add_argument_group("the container's limits (ServeConfig)")
    add_config_flags(group, ServeConfig, "container", include=CONTAINER_FIELDS,
                     flag=lambda n: "--container-" + n.replace("_", "-"))  # fmt: skip
    for action in group._group_actions:
        if action.dest == "container.timeout_s":
            action.help = (f"A request still scoring after this answers 503 (default here: "
                           f"{CONTAINER_TIMEOUT_S:g}, under InvokeEndpoint's 60 s)")  # fmt: skip
    dep.add_argument("--update", action="store_true",
                     help="move an existing endpoint to this model (UpdateEndpoint)")  # fmt: skip
    dep.add_argument("--profile", default=None, help="AWS profile (default chain otherwise)")
    dep.add_argument("--json", action="store_true", help="print the result as JSON")
    dep.set_defaults(func=cmd_deploy)

    inv = sub.add_parser(
        "invoke",
        help="scan a C/C++ file with a deployed endpoint (InvokeEndpoint)",
        formatter_class=_Formatter,
    )
    inv.add_argument("file", help="a C/C++ source file")
    inv.add_argument("--endpoint-name", required=True)
    inv.add_argument("--threshold", type=float, default=None, help="default: the model's own")
    inv.add_argument("--explain", choices=("flagged", "all", "none"), default=None)
    inv.add_argument("--region", default=None)
    inv.add_argument("--profile", default=None)
    inv.set_defaults(func=cmd_invoke)

    und = sub.add_parser(
        "undeploy",
        help="delete an endpoint (and its endpoint config and model)",
        formatter_class=_Formatter,
    )
    und.add_argument("--endpoint-name", required=True)
    und.add_argument("--keep-config", action="store_true",
                     help="delete the endpoint only, not its config and model")  # fmt: skip
    und.add_argument("--region", default=None)
    und.add_argument("--profile", default=None)
    und.set_defaults(func=cmd_undeploy)


def _session(region: str | None, profile: str | None) -> Any:
    import boto3

    return boto3.session.Session(region_name=region, profile_name=profile)


def _fail(message: str) -> int:
    print(f"streamguard aws: error: {message}", file=sys.stderr)
    return 1


def cmd_deploy(args: argparse.Namespace) -> int:
    """``streamguard aws deploy``: 0 InService, 1 failed, 2 invalid settings."""
    from botocore.exceptions import BotoCoreError, ClientError

    from streamguard_core.cli import config_values
    from streamguard_core.scan.cli import resolve_model_dir

    # invalid settings: cli.main prints the ValidationError (redacted) and returns 2
    container = ServeConfig(**{"timeout_s": CONTAINER_TIMEOUT_S,
                               **config_values(args, "container")})  # fmt: skip
    cfg = DeployConfig(**config_values(args, "deploy"), container=container)
    try:
        model_dir = resolve_model_dir(args.model_dir, args.registry)
        session = _session(cfg.region, args.profile)
        result = deploy(session.client("sagemaker"), session.client("s3"), model_dir, cfg,
                        update=args.update)  # fmt: skip
    except (DeployError, ValueError, ClientError, BotoCoreError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(
            f"endpoint {result.endpoint_name} InService in {result.seconds:g} s "
            f"({'updated' if result.updated else 'created'}; config {result.endpoint_config_name}"
            f", model {result.model_name}, {result.model_data_url})\n"
            f"  streamguard aws invoke --endpoint-name {result.endpoint_name} FILE.c"
        )
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    """``streamguard aws invoke``: print the endpoint's findings for one file as JSON."""
    from botocore.exceptions import BotoCoreError, ClientError

    path = Path(args.file)
    try:
        code = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"{path}: cannot read it as UTF-8 text: {exc}")
    payload: dict[str, Any] = {"code": code, "filename": path.name}
    if args.threshold is not None:
        payload["threshold"] = args.threshold
    if args.explain is not None:
        payload["explain"] = args.explain
    try:
        runtime = _session(args.region, args.profile).client("sagemaker-runtime")
        answer = invoke(runtime, args.endpoint_name, payload)
    except (DeployError, ClientError, BotoCoreError) as exc:
        return _fail(str(exc))
    print(json.dumps(answer, indent=2))
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    """``streamguard aws undeploy``: delete the endpoint (config and model too)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        sm = _session(args.region, args.profile).client("sagemaker")
        gone = undeploy(sm, args.endpoint_name, keep_config=args.keep_config)
    except (DeployError, ClientError, BotoCoreError) as exc:
        return _fail(str(exc))
    print("deleted " + ", ".join(gone))
    return 0
