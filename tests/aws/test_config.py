"""The ``spec`` hyperparameter, SageMakerConfig checks, prices, secret redaction, imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _aws_testkit import tiny_gnn
from pydantic import ValidationError

from streamguard_core.aws.config import (
    MAX_HYPERPARAMETER_CHARS,
    REDACTED,
    HyperparameterTooLong,
    SageMakerConfig,
    price_per_hour,
    redact,
    spec_from_hyperparameters,
    spec_hyperparameters,
)
from streamguard_core.config import TrainJobSpec


def test_the_spec_travels_whole_as_one_string_hyperparameter():
    spec = tiny_gnn(lr=5e-4, use_weights=True, lr_finder=True, weight_decay=0.03)
    wire = spec_hyperparameters(spec)
    assert list(wire) == ["spec"] and isinstance(wire["spec"], str)
    assert json.loads(wire["spec"]) == spec.model_dump(mode="json")  # every field, defaults too
    assert spec_from_hyperparameters(wire) == spec


def test_the_sdk_encoding_and_its_keys_are_accepted():
    spec = tiny_gnn()
    sdk_style = {  # the SageMaker Python SDK JSON-encodes every value once more
        "spec": json.dumps(spec.model_dump_json()),
        "sagemaker_program": '"train.py"',
        "sagemaker_region": '"us-east-1"',
    }
    assert spec_from_hyperparameters(sdk_style) == spec


def test_bad_hyperparameters_are_refused_with_the_reason():
    wire = spec_hyperparameters(tiny_gnn())
    with pytest.raises(ValueError, match=r"invalid hyperparameters: unknown key\(s\) \['epochs'\]"):
        spec_from_hyperparameters({**wire, "epochs": "3"})
    with pytest.raises(ValueError, match="invalid hyperparameters: no 'spec'"):
        spec_from_hyperparameters({"sagemaker_program": "x"})
    with pytest.raises(ValueError, match="spec is not JSON"):
        spec_from_hyperparameters({"spec": "{model: gnn"})
    bad = json.loads(wire["spec"])
    bad["train"]["epochs"] = 0
    with pytest.raises(ValueError, match=r"spec\.train\.epochs: Input should be greater"):
        spec_from_hyperparameters({"spec": json.dumps(bad)})
    bad["train"]["epochs"], bad["model"]["kind"] = 2, "lstm"
    with pytest.raises(ValueError, match=r"invalid hyperparameters: spec\.model"):
        spec_from_hyperparameters({"spec": json.dumps(bad)})


def test_a_spec_over_the_hyperparameter_limit_is_a_clear_error():
    spec = TrainJobSpec(
        model={"kind": "transformer", "model_name_or_path": "/models/" + "x" * 2400},
        data_dir="/data",
        run_dir="/run",
    )
    with pytest.raises(HyperparameterTooLong) as info:
        spec_hyperparameters(spec)
    message = str(info.value)
    assert "transformer seed 42" in message and "at most 2,500" in message
    assert f"{len(spec.model_dump_json()):,} characters" in message
    assert isinstance(info.value, ValueError)


def test_the_limit_is_the_one_in_sagemakers_service_model():
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateTrainingJob").input_shape.members["HyperParameters"]
    assert shape.value.metadata["max"] == MAX_HYPERPARAMETER_CHARS


def _config(**kw):
    base = {"image_uri": "img", "role_arn": "arn:aws:iam::123456789012:role/r", "bucket": "b"}
    return SageMakerConfig(**{**base, **kw})


def test_sagemaker_config_checks_the_spot_limits():
    assert _config(max_runtime_s=3600).effective_max_wait_s == 7200
    assert _config(use_spot=False).effective_max_wait_s is None
    with pytest.raises(ValidationError, match="must be >= max_runtime_s"):
        _config(max_runtime_s=3600, max_wait_s=1800)
    with pytest.raises(ValidationError, match="spot training only"):
        _config(use_spot=False, max_wait_s=7200)
    with pytest.raises(ValidationError, match="bare bucket name"):
        _config(bucket="s3://b/prefix")


def test_prices_table_and_overrides():
    assert price_per_hour("ml.g4dn.xlarge") == pytest.approx(0.736)
    assert price_per_hour("ml.g4dn.xlarge", {"ml.g4dn.xlarge": 0.5}) == 0.5
    assert _config(instance_type="ml.x.large", prices={"ml.x.large": 2.0}).price_per_hour() == 2
    with pytest.raises(ValueError, match=r"no price for instance type 'ml\.nope'"):
        price_per_hour("ml.nope")


def test_redact_hides_secrets_at_any_depth():
    config = {
        "region": "us-east-1",
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": "wJalrXUtnFEMI",
        "nested": {
            "SessionToken": "tok",
            "Password": "pw",
            "bucket": "b",
            "items": [{"api_key": "k", "name": "n"}],
        },
        "token_count": None,
    }
    clean = redact(config)
    text = json.dumps(clean)
    for secret in ("AKIAEXAMPLE", "wJalrXUtnFEMI", '"tok"', '"pw"', '"k"'):
        assert secret not in text
    assert clean["aws_secret_access_key"] == REDACTED
    assert clean["nested"]["bucket"] == "b" and clean["nested"]["items"][0]["name"] == "n"
    assert config["aws_secret_access_key"] == "wJalrXUtnFEMI"  # the input is not modified


def test_the_aws_core_imports_neither_prefect_nor_torch_nor_boto3():
    code = (
        "import sys\n"
        "import streamguard_core.aws.config, streamguard_core.aws.jobs, streamguard_core.aws.s3\n"
        "import streamguard_core.aws.cost, streamguard_core.aws.tarsafe\n"
        "import streamguard_core.aws.entrypoint, streamguard_core.aws.emulator\n"
        "import streamguard_core.backends.sagemaker\n"
        "bad = [m for m in ('prefect', 'torch', 'boto3') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_job_receives_exactly_the_plans_spec():
    from streamguard_core.backends.sagemaker import job_spec
    from streamguard_core.config import TrainingPlan

    plan = TrainingPlan(
        models=[{"kind": "transformer", "hidden_size": 32, "num_layers": 1},
                {"kind": "gnn", "hidden_dim": 16, "name": "gnn-small"}, "gnn", "baseline"],
        seeds=[42, 43], train={"epochs": 2, "use_weights": True, "lr_finder": True},
    )  # fmt: skip
    specs = plan.jobs("/here/data", "/here/out")
    cfg = _config()
    names = set()
    for spec in specs:
        job = job_spec(cfg, "run1", spec, "s3://b/data/abc/")
        received = spec_from_hyperparameters(job.hyperparameters)
        assert received.model == spec.model and received.train == spec.train
        assert received.seed == spec.seed == received.train.seed
        assert (received.data_dir, received.run_dir) == (
            "/opt/ml/input/data/data", "/opt/ml/checkpoints/run")  # fmt: skip
        assert (
            job.checkpoint_s3_uri
            == f"s3://b/streamguard/checkpoints/run1/{spec.name}/seed_{spec.seed}/"
        )
        names.add(job.job_name)
    assert len(names) == len(specs)  # one job (and checkpoint prefix) per model name x seed


def test_the_bucket_may_come_from_a_block_but_must_come_from_somewhere():
    cfg = _config(bucket=None)
    assert cfg.bucket is None
    with pytest.raises(ValueError, match=r"no S3 bucket for the SageMaker jobs.*s3_bucket_block"):
        cfg.require_bucket()
    assert _config().require_bucket() == "b"
