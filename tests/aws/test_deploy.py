"""``streamguard aws deploy``: a saved detector as a SageMaker real-time endpoint, rehearsed
against the emulator (endpoints run as real ``streamguard serve`` processes) and moto's S3,
invoked through boto3's own ``sagemaker-runtime`` client. Everything is real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from _aws_testkit import BUCKET, IMAGE_URI, ROLE_ARN
from botocore.exceptions import ClientError
from pydantic import ValidationError

from streamguard_core.aws.deploy import (
    DeployConfig,
    DeployError,
    EndpointFailed,
    deploy,
    describe_endpoint,
    invoke,
    pack_model,
    undeploy,
    upload_model,
)
from streamguard_core.aws.tarsafe import safe_extract
from streamguard_core.collect.functions import extract_file_functions
from streamguard_core.config import ServeConfig
from streamguard_core.data.synthetic import generate_synthetic
from streamguard_core.models.baseline import BaselineDetector
from streamguard_core.models.registry import load_detector

CODE = """\
static int add(int a, int b)
{
    return a + b;
}

int copy_name(char *dst, const char *src)
{
    char buf[16];
    strcpy(buf, src);
    strcpy(dst, buf);
    return 0;
}
"""
NEVER_PINGS = [sys.executable, "-c", "import time; time.sleep(600)"]


def baseline(root: Path, seed: int) -> Path:
    records = generate_synthetic(pairs_per_cwe=4, seed=seed)
    det = BaselineDetector(seed=seed)
    det.fit([r.func for r in records], [r.label for r in records])
    return det.save(root / f"baseline-{seed}")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny real baselines trained on different synthetic draws."""
    root = tmp_path_factory.mktemp("models")
    return baseline(root, 3), baseline(root, 9)


def config(name: str, **kw: Any) -> DeployConfig:
    fields = {"image_uri": IMAGE_URI, "role_arn": ROLE_ARN, "bucket": BUCKET, "poll_s": 0.2,
              "wait_timeout_s": 300, **kw}  # fmt: skip
    return DeployConfig(endpoint_name=name, **fields)


def expected(model_dir: Path, code: str = CODE) -> list[float]:
    defs, _, _ = extract_file_functions("x.c", code)
    return [float(p) for p in load_detector(model_dir).predict_proba([d.text for d in defs])]


# --------------------------------------------------------------------------- offline


def test_settings_name_what_is_missing_or_wrong() -> None:
    with pytest.raises(ValidationError, match="missing role: give --role-arn"):
        DeployConfig(endpoint_name="e", image_uri=IMAGE_URI, bucket=BUCKET)
    with pytest.raises(ValidationError, match="is not an IAM role ARN"):
        DeployConfig(endpoint_name="e", image_uri=IMAGE_URI, bucket=BUCKET, role_arn="admin")
    with pytest.raises(ValidationError, match="missing image"):
        DeployConfig(endpoint_name="e", role_arn=ROLE_ARN, bucket=BUCKET)
    for image in ("streamguard-serve:latest", "docker.io/library/python:3.11",
                  "123456789012.dkr.ecr.us-east-1.amazonaws.com/Upper:tag"):  # fmt: skip
        with pytest.raises(ValidationError, match="is not an ECR image URI"):
            DeployConfig(endpoint_name="e", role_arn=ROLE_ARN, bucket=BUCKET, image_uri=image)
    with pytest.raises(ValidationError, match="is not a SageMaker name"):
        config("my_endpoint")
    with pytest.raises(ValidationError, match="bare bucket name"):
        DeployConfig(endpoint_name="e", image_uri=IMAGE_URI, role_arn=ROLE_ARN,
                     bucket="s3://b/p")  # fmt: skip
    digest = IMAGE_URI.split(":")[0] + "@sha256:" + "a" * 64
    assert config("e", image_uri=digest).image_uri == digest
    env = json.loads(config("e").container_environment()["STREAMGUARD_SERVE_CONFIG"])
    assert env["timeout_s"] == 50.0 and "host" not in env and "port" not in env


def test_the_cli_refuses_a_deploy_without_a_role(
    models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from streamguard_core.cli import main

    code = main(["aws", "deploy", "--model-dir", str(models[0]), "--endpoint-name", "e",
                 "--image-uri", IMAGE_URI, "--bucket", BUCKET])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "missing role: give --role-arn" in err and "Traceback" not in err


def test_the_archive_is_deterministic_and_extracts_safely(
    tmp_path: Path, models: tuple[Path, Path]
) -> None:
    model = Path(shutil.copytree(models[0], tmp_path / "model"))
    (model / "nested").mkdir()
    (model / "nested" / "notes.txt").write_text("kept")
    (model / ".partial").write_text("skipped: a temp file")
    (model / "card-link.json").symlink_to(model / "model_card.json")
    first = pack_model(model, tmp_path / "a.tar.gz")
    os.utime(model / "model_card.json", (1, 1))  # times are not part of the content
    assert pack_model(model, tmp_path / "b.tar.gz") == first
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = tar.getmembers()
    assert all(m.isfile() and m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)
    out = tmp_path / "out"
    safe_extract(tmp_path / "a.tar.gz", out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        [p.name for p in models[0].iterdir()] + ["card-link.json", "nested/notes.txt"]
    )
    assert (out / "card-link.json").read_bytes() == (model / "model_card.json").read_bytes()
    (model / "nested" / "notes.txt").write_text("changed")
    assert pack_model(model, tmp_path / "c.tar.gz") != first
    with pytest.raises(DeployError, match=r"no model_card.json"):
        pack_model(tmp_path / "out" / "nested", tmp_path / "d.tar.gz")


# --------------------------------------------------------------------------- the emulator


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch, sagemaker_endpoints: None, emulator) -> dict:
    """sagemaker, sagemaker-runtime (both the emulator) and s3 (moto) clients."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator.url)
    return {name: boto3.client(name) for name in ("sagemaker", "sagemaker-runtime", "s3")}


@pytest.mark.integration
def test_the_emulator_checks_models_like_sagemaker(
    clients: dict, models: tuple[Path, Path]
) -> None:
    sm, s3 = clients["sagemaker"], clients["s3"]
    url = upload_model(s3, models[0], BUCKET, "streamguard/test")
    assert upload_model(s3, models[0], BUCKET, "streamguard/test") == url  # content-addressed

    def create(name: str, **container: str) -> None:
        primary = {"Image": IMAGE_URI, "ModelDataUrl": url, **container}
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE_ARN, PrimaryContainer=primary)

    with pytest.raises(ClientError, match="is not an ECR image URI"):
        create("bad-image", Image="python:3.11")
    with pytest.raises(ClientError, match="Could not access model data at s3://"):
        create("no-data", ModelDataUrl=f"s3://{BUCKET}/nothing/model.tar.gz")
    create("emu-check-model")
    with pytest.raises(ClientError, match="Cannot create already existing model"):
        create("emu-check-model")
    assert sm.describe_model(ModelName="emu-check-model")["PrimaryContainer"]["ModelDataUrl"] == url
    with pytest.raises(ClientError, match="Could not find model"):
        sm.create_endpoint_config(EndpointConfigName="c1", ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "nope", "InstanceType": "ml.m5.large",
             "InitialInstanceCount": 1}])  # fmt: skip
    with pytest.raises(ClientError, match="Could not find endpoint configuration"):
        sm.create_endpoint(EndpointName="e1", EndpointConfigName="missing")
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName="never-created")
    runtime = clients["sagemaker-runtime"]
    with pytest.raises(ClientError, match=r"never-created of account .* not found"):
        runtime.invoke_endpoint(EndpointName="never-created", Body=b"{}")
    sm.delete_model(ModelName="emu-check-model")
    with pytest.raises(ClientError, match="Could not find model"):
        sm.describe_model(ModelName="emu-check-model")


@pytest.mark.integration
@pytest.mark.slow
def test_deploy_invoke_update_and_undeploy(
    clients: dict, models: tuple[Path, Path], emulator, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Create through the CLI, invoke through boto3, update to a second model, a failed update
    that SageMaker rolls back, then undeploy: each endpoint a real `streamguard serve`."""
    from streamguard_core.cli import main

    sm, s3, runtime = clients["sagemaker"], clients["s3"], clients["sagemaker-runtime"]
    name = "sg-rehearsal"
    first, second = models
    argv = ["aws", "deploy", "--model-dir", str(first), "--endpoint-name", name,
            "--image-uri", IMAGE_URI, "--role-arn", ROLE_ARN, "--bucket", BUCKET,
            "--poll-s", "0.2", "--container-max-functions", "3", "--json"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    created = json.loads(capsys.readouterr().out)
    assert created["status"] == "InService" and not created["updated"]
    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointConfigName"] == created["endpoint_config_name"]
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert name in [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]

    # boto3's sagemaker-runtime, JSON and raw code
    response = runtime.invoke_endpoint(
        EndpointName=name, ContentType="application/json", Accept="application/json",
        Body=json.dumps({"code": CODE, "filename": "x.c"}),
    )  # fmt: skip
    assert response["InvokedProductionVariant"] == "AllTraffic"
    answer = json.loads(response["Body"].read())
    assert [f["function"] for f in answer["findings"]] == ["add", "copy_name"]
    np.testing.assert_allclose([f["probability"] for f in answer["findings"]], expected(first),
                               rtol=1e-12)  # fmt: skip
    raw = json.loads(runtime.invoke_endpoint(EndpointName=name, ContentType="text/plain",
                                             Body=CODE.encode())["Body"].read())  # fmt: skip
    assert [f["probability"] for f in raw["findings"]] == [
        f["probability"] for f in answer["findings"]
    ]
    # the container's limits came from the deploy (max_functions 3): its 413 is a ModelError
    with pytest.raises(DeployError, match=r"ModelError \(container status 413\).*max_functions"):
        invoke(runtime, name, {"functions": ["int f(void) { return 0; }"] * 4})
    with pytest.raises(ClientError) as bad_json:
        runtime.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=b"{x")
    assert bad_json.value.response["Error"]["Code"] == "ModelError"
    assert bad_json.value.response["OriginalStatusCode"] == 400
    # the CLI's invoke
    source = tmp_path / "x.c"
    source.write_text(CODE)
    assert main(["aws", "invoke", "--endpoint-name", name, str(source), "--threshold", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["threshold"] == 0.0 and all(f["flagged"] for f in printed["findings"])

    # deploying again needs --update
    with pytest.raises(DeployError, match=r"already exists .* pass --update"):
        deploy(sm, s3, second, config(name))
    old_container = emulator.endpoints.endpoints[name].container
    moved = deploy(sm, s3, second, config(name), update=True)
    assert moved.updated and moved.endpoint_config_name != created["endpoint_config_name"]
    assert old_container.process.poll() is not None  # the old instance was stopped
    after = invoke(runtime, name, {"code": CODE, "filename": "x.c"})
    np.testing.assert_allclose([f["probability"] for f in after["findings"]], expected(second),
                               rtol=1e-12)  # fmt: skip
    assert not np.allclose(expected(first), expected(second))

    # an update to a model that cannot load is rolled back: the endpoint keeps serving
    broken = Path(shutil.copytree(first, tmp_path / "broken"))
    (broken / "weights.npz").write_bytes(b"not an npz file")
    with pytest.raises(EndpointFailed, match="did not pass the ping health check") as failed:
        deploy(sm, s3, broken, config(name), update=True)
    assert "cannot load the model" in failed.value.reason
    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointStatus"] == "InService"
    assert desc["EndpointConfigName"] == moved.endpoint_config_name
    assert "Update failed" in desc["FailureReason"]
    still = invoke(runtime, name, {"code": CODE, "filename": "x.c"})
    assert [f["probability"] for f in still["findings"]] == [
        f["probability"] for f in after["findings"]
    ]

    # undeploy: the endpoint, its config and model go, and its process stops
    container = emulator.endpoints.endpoints[name].container
    assert main(["aws", "undeploy", "--endpoint-name", name]) == 0
    assert "deleted endpoint sg-rehearsal, endpoint config" in capsys.readouterr().out
    assert describe_endpoint(sm, name) is None and container.process.poll() is not None
    with pytest.raises(ClientError, match="Could not find endpoint configuration"):
        sm.describe_endpoint_config(EndpointConfigName=moved.endpoint_config_name)
    with pytest.raises(ClientError, match="Could not find model"):
        sm.describe_model(ModelName=moved.model_name)
    with pytest.raises(DeployError, match="no endpoint named"):
        undeploy(sm, name)


@pytest.mark.integration
@pytest.mark.slow
def test_a_model_that_cannot_load_ends_failed_with_the_reason(
    clients: dict, models: tuple[Path, Path], tmp_path: Path
) -> None:
    sm, s3 = clients["sagemaker"], clients["s3"]
    broken = Path(shutil.copytree(models[0], tmp_path / "broken"))
    (broken / "vocabulary.json").unlink()
    with pytest.raises(EndpointFailed, match="exited with code 1") as failed:
        deploy(sm, s3, broken, config("sg-broken"))
    assert "vocabulary.json" in failed.value.reason
    assert sm.describe_endpoint(EndpointName="sg-broken")["EndpointStatus"] == "Failed"
    with pytest.raises(DeployError, match=r"is Failed and cannot be updated now.*undeploy"):
        deploy(sm, s3, models[0], config("sg-broken"), update=True)
    assert undeploy(sm, "sg-broken")[0] == "endpoint sg-broken"


@pytest.fixture
def silent_emulator(moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A second emulator whose "container" never answers /ping (a sleeping process), so the
    endpoint stays Creating, or fails once its 1 s startup limit passes."""
    from streamguard_core.aws.emulator import SageMakerEmulator

    def start(startup_timeout_s: float) -> Any:
        emu = SageMakerEmulator(work_root=tmp_path / f"emu-{startup_timeout_s:g}",
                                s3_endpoint_url=moto_server, serve_command=NEVER_PINGS,
                                endpoint_startup_timeout_s=startup_timeout_s).start()  # fmt: skip
        started.append(emu)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", emu.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
        return emu

    started: list[Any] = []
    yield start
    for emu in started:
        emu.stop()


@pytest.mark.integration
def test_waiting_gives_up_after_the_timeout_and_a_silent_container_fails(
    silent_emulator, models: tuple[Path, Path]
) -> None:
    silent_emulator(600)
    sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
    with pytest.raises(DeployError, match=r"still Creating after 0.5 s"):
        deploy(sm, s3, models[0], config("sg-slow", wait_timeout_s=0.5, poll_s=0.1))
    assert sm.describe_endpoint(EndpointName="sg-slow")["EndpointStatus"] == "Creating"
    undeploy(sm, "sg-slow")  # stops the process mid-creation

    silent_emulator(1)
    sm = boto3.client("sagemaker")
    with pytest.raises(EndpointFailed, match="ping health check within 1 s"):
        deploy(sm, s3, models[0], config("sg-silent", poll_s=0.1))


def test_the_container_limits_reach_the_server(monkeypatch: pytest.MonkeyPatch,
                                                models: tuple[Path, Path]) -> None:  # fmt: skip
    """What deploy puts in the container's environment is what `streamguard serve` reads
    there (SageMaker mode: no model flag, SM_MODEL_DIR)."""
    import argparse

    from streamguard_core.serve.cli import add_serve_parser, resolve_serving

    cfg = config("e", container=ServeConfig(max_functions=5, timeout_s=12, explain="flagged"))
    for key, value in cfg.container_environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SM_MODEL_DIR", str(models[0]))
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    model, serve_cfg, sagemaker = resolve_serving(parser.parse_args(["serve"]))
    assert (model, sagemaker) == (str(models[0]), True)
    assert (serve_cfg.max_functions, serve_cfg.timeout_s, serve_cfg.explain) == (5, 12.0, "flagged")
