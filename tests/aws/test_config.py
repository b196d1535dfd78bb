"""Hyperparameter encoding, SageMakerConfig checks, prices, secret redaction, import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from streamguard_core.aws.config import (
    REDACTED,
    SageMakerConfig,
    TrainHyperparameters,
    parse_hyperparameter,
    price_per_hour,
    redact,
)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("0.001", 0.001),
        ("1e-3", 0.001),
        ("true", True),
        ("False", False),
        ("null", None),
        ("None", None),
        ('"gnn"', "gnn"),
        ("gnn", "gnn"),
        ("microsoft/codebert-base", "microsoft/codebert-base"),
        (4, 4),
    ],
)
def test_parse_hyperparameter(raw, value):
    assert parse_hyperparameter(raw) == value


def test_hyperparameters_round_trip_as_strings():
    hp = TrainHyperparameters(
        model="transformer", seed=43, lr=5e-4, epochs=3, transformer_model="microsoft/codebert-base"
    )
    wire = hp.to_sagemaker()
    assert all(isinstance(v, str) for v in wire.values())
    assert "max_steps_per_epoch" not in wire  # unset optional values are left out
    assert wire["lr"] == "0.0005" and wire["model"] == "transformer"
    assert TrainHyperparameters.from_sagemaker(wire) == hp


def test_hyperparameters_from_sagemaker_strings_and_sdk_keys():
    hp = TrainHyperparameters.from_sagemaker(
        {
            "model": '"gnn"',
            "epochs": "2",
            "lr": "null",
            "num_threads": "1",
            "mixed_precision": "off",
            "sagemaker_program": '"train.py"',
        }
    )
    assert (hp.model, hp.epochs, hp.lr, hp.num_threads) == ("gnn", 2, None, 1)


def test_hyperparameters_refuse_unknown_and_bad_values():
    with pytest.raises(ValidationError, match="learning_rate"):
        TrainHyperparameters.from_sagemaker({"model": "gnn", "learning_rate": "0.1"})
    with pytest.raises(ValidationError, match="epochs"):
        TrainHyperparameters.from_sagemaker({"model": "gnn", "epochs": "0"})
    with pytest.raises(ValidationError, match="model"):
        TrainHyperparameters.from_sagemaker({"model": "lstm"})


def test_hyperparameters_build_the_model_configs():
    gnn, train = TrainHyperparameters(
        model="gnn", hidden_dim=16, num_layers=2, node_token_dim=0, seed=5
    ).model_and_train_configs()
    assert (gnn.kind, gnn.hidden_dim, gnn.num_layers, gnn.node_token_dim) == ("gnn", 16, 2, 0)
    assert train.seed == 5
    tf, _ = TrainHyperparameters(model="transformer", hidden_dim=32).model_and_train_configs()
    assert (tf.kind, tf.hidden_size, tf.model_name_or_path) == ("transformer", 32, "tiny")


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
        "bad = [m for m in ('prefect', 'torch', 'boto3') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_plan_builds_the_same_model_locally_and_on_sagemaker():
    from streamguard_core.aws.backend import hyperparameters_for
    from streamguard_core.pipeline.config import TrainingPlan
    from streamguard_core.pipeline.runner import neural_configs

    plan = TrainingPlan(transformer_hidden_dim=32, transformer_layers=1, gnn_hidden_dim=16,
                        gnn_layers=2, epochs=2)  # fmt: skip
    for kind in ("transformer", "gnn"):
        local_model, local_train = neural_configs(kind, plan, 42, 128)
        job_model, job_train = hyperparameters_for(kind, 42, plan, 128).model_and_train_configs()
        assert job_model == local_model, kind
        assert (job_train.epochs, job_train.seed, job_train.batch_size) == (
            local_train.epochs, local_train.seed, local_train.batch_size)  # fmt: skip
    assert local_model.hidden_dim == 16
