"""The ``streamguard`` CLI builds the same job specs as the config tree (issue 9).

Every run here is real (tiny models on a small processed synthetic data set, CPU, one thread).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from streamguard_core.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, build_parser, main
from streamguard_core.cli import preflight_plan as cli_preflight_plan
from streamguard_core.config import (
    DataConfig,
    GNNConfig,
    PipelineConfig,
    PreprocessConfig,
    TrainConfig,
    TrainingPlan,
    TrainJobSpec,
    TransformerConfig,
    save_yaml,
)
from streamguard_core.io import read_jsonl, write_jsonl
from streamguard_core.training.paths import RunPaths

FAST = ["--num-threads", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def data_dir(make_processed) -> Path:
    return make_processed(4, 500, 128)


def _exp_config(run_dir: Path) -> dict:
    saved = json.loads(RunPaths(run_dir).exp_config.read_text())
    saved.pop("resumed")
    return saved


def _printed_spec(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main([*argv, "--print-config"]) == EXIT_OK
    return json.loads(capsys.readouterr().out)


def test_transformer_flags_build_the_tiny_shape(data_dir, tmp_path):
    """Defect 5: --hidden-size N gets the heads and feed-forward size the pipeline gives N."""
    out = tmp_path / "tf"
    argv = ["train", "transformer", "--data", str(data_dir), "--output-dir", str(out),
            "--hidden-size", "48", "--num-layers", "1", "--epochs", "1", "--quick-test",
            *FAST]  # fmt: skip
    assert main(argv) == EXIT_OK
    hf_config = json.loads((out / "model" / "config.json").read_text())
    assert hf_config["hidden_size"] == 48 and hf_config["num_hidden_layers"] == 1
    assert hf_config["intermediate_size"] == 96 and hf_config["num_attention_heads"] == 2
    saved = _exp_config(out)
    # the same model a plan builds from {kind: transformer, hidden_size: 48, num_layers: 1},
    # with max_seq_len filled in from the data set
    expected = TransformerConfig(hidden_size=48, num_layers=1, max_seq_len=128)
    assert saved["model"] == expected.model_dump(mode="json")
    assert saved["train"]["max_steps_per_epoch"] == 8  # --quick-test
    assert json.loads(RunPaths(out).status.read_text())["status"] == "completed"


@pytest.fixture(scope="module")
def gnn_job(data_dir, tmp_path_factory) -> tuple[TrainingPlan, Path, Path]:
    """A GNN job file written from a plan's spec, then run with ``--epochs 2`` on top."""
    root = tmp_path_factory.mktemp("plan_runs")
    plan = TrainingPlan(
        models=[GNNConfig(hidden_dim=16, num_layers=2, name="small_gnn")],
        seeds=[7],
        train=TrainConfig(epochs=1, batch_size=8, num_threads=1, max_steps_per_epoch=4),
    )
    job_file = root / "job.json"
    job_file.write_text(plan.jobs(data_dir, root / "runs")[0].model_dump_json())
    assert main(["train", "--config", str(job_file), "--epochs", "2"]) == EXIT_OK
    return plan, root, job_file


def test_config_file_with_overrides_is_the_plans_job(gnn_job, data_dir):
    plan, root, _ = gnn_job
    expected = plan.model_copy(update={"train": plan.train.model_copy(update={"epochs": 2})})
    spec = expected.jobs(data_dir, root / "runs")[0]
    saved = _exp_config(Path(spec.run_dir))
    assert saved["model"] == spec.model.model_dump(mode="json")
    assert saved["train"] == spec.train.model_dump(mode="json")
    assert saved == spec.model_dump(mode="json")
    meta = json.loads(RunPaths(spec.run_dir).metadata.read_text())
    assert len(meta["history"]) == 2  # the override really trained two epochs


def test_existing_run_needs_resume(gnn_job, capsys):
    _, _, job_file = gnn_job
    capsys.readouterr()
    assert main(["train", "--config", str(job_file)]) == EXIT_FAILURE
    assert "pass --resume" in capsys.readouterr().err


def test_an_earlier_runs_exp_config_reruns_with_overrides(gnn_job, data_dir, tmp_path, capsys):
    plan, root, _ = gnn_job
    exp_config = RunPaths(plan.jobs(data_dir, root / "runs")[0].run_dir).exp_config
    spec = _printed_spec(["train", "--config", str(exp_config), "--output-dir",
                          str(tmp_path / "again"), "--seed", "3"], capsys)  # fmt: skip
    assert spec["seed"] == spec["train"]["seed"] == 3
    assert spec["run_dir"] == str(tmp_path / "again")
    assert spec["model"] == plan.models[0].model_dump(mode="json")
    assert spec["train"]["epochs"] == 2


def test_print_config_round_trips(data_dir, tmp_path, capsys):
    argv = ["train", "transformer", "--data", str(data_dir), "--output-dir", str(tmp_path / "o"),
            "--hidden-size", "64", "--lr", "1e-4", "--seed", "5", "--no-use-weights",
            "--mixed-precision", "off"]  # fmt: skip
    printed = _printed_spec(argv, capsys)
    assert TrainJobSpec.model_validate(printed).model.feed_forward_size == 128
    as_json, as_yaml = tmp_path / "job.json", tmp_path / "job.yaml"
    as_json.write_text(json.dumps(printed))
    as_yaml.write_text(yaml.safe_dump(printed))
    assert _printed_spec(["train", "--config", str(as_json)], capsys) == printed
    assert _printed_spec(["train", "--config", str(as_yaml)], capsys) == printed
    assert _printed_spec(["train", "transformer", "--config", str(as_yaml)], capsys) == printed
    # a template without paths takes them from the flags
    template = tmp_path / "template.yaml"
    template.write_text(yaml.safe_dump({"model": printed["model"], "train": printed["train"]}))
    flags = ["--data", str(data_dir), "--output-dir", str(tmp_path / "o"), "--seed", "5"]
    from_template = _printed_spec(["train", "--config", str(template), *flags], capsys)
    assert from_template == printed


def test_overriding_the_width_of_a_saved_transformer_rederives_its_shape(tmp_path, capsys):
    """A saved spec leaves heads/feed-forward sizes derived; they follow a new --hidden-size."""
    saved = TrainJobSpec(model=TransformerConfig(hidden_size=48), data_dir="d", run_dir="r")
    job = tmp_path / "job.json"
    job.write_text(saved.model_dump_json())
    wider = _printed_spec(["train", "--config", str(job), "--hidden-size", "64"], capsys)
    assert wider["model"] == TransformerConfig(hidden_size=64).model_dump(mode="json")
    explicit = TrainJobSpec(model=TransformerConfig(hidden_size=48, num_heads=4,
                                                    intermediate_size=200),
                            data_dir="d", run_dir="r")  # fmt: skip
    job.write_text(explicit.model_dump_json())
    kept = _printed_spec(["train", "--config", str(job), "--hidden-size", "64"], capsys)
    assert (kept["model"]["num_heads"], kept["model"]["intermediate_size"]) == (4, 200)


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--epochs", "0"], "train.epochs"),
        (["--hidden-size", "64", "--num-heads", "3"], "model.transformer"),
        (["--warmup-ratio", "1.5"], "train.warmup_ratio"),
    ],
)
def test_invalid_values_exit_2_naming_the_field(extra, field, tmp_path, capsys):
    argv = ["train", "transformer", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    assert main([*argv, *extra]) == EXIT_USAGE
    assert field in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_choice_and_unknown_key_exit_2(tmp_path, capsys):
    argv = ["train", "gnn", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--mixed-precision", "fp8"])
    assert info.value.code == EXIT_USAGE and "--mixed-precision" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([*argv, "--hidden-size", "8"])  # a transformer field, not a GNN one
    assert info.value.code == EXIT_USAGE
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"kind": "gnn", "hiden_dim": 3}}))
    assert main(["train", "--config", str(bad), *argv[2:]]) == EXIT_USAGE
    assert "model.gnn.hiden_dim" in capsys.readouterr().err
    assert main(["train", "transformer", "--config", str(bad), *argv[2:]]) == EXIT_USAGE
    assert "holds a gnn model, not transformer" in capsys.readouterr().err


def test_help_is_generated_from_the_model_configs(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "gnn", "--help"])
    assert info.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # no line wrapping, however wide

    def squeezed(s: str) -> str:
        return "".join(s.split())

    field = GNNConfig.model_fields["hidden_dim"]
    assert squeezed(f"--hidden-dim HIDDEN_DIM {field.description} (default: {field.default})"
                    ) in text  # fmt: skip
    for name, field in TrainConfig.model_fields.items():
        if name != "seed":  # the job's --seed
            assert f"--{name.replace('_', '-')}" in text and squeezed(field.description) in text
    # every command's parser builds (a field type the generator cannot map would raise)
    assert build_parser().prog == "streamguard"


def test_weight_field_reaches_the_processed_records(tmp_path, capsys):
    """Defect 3: `data preprocess --weight-field w` reads each record's weight from 'w'."""
    from streamguard_core.data.synthetic import generate_synthetic

    rows = [{"func": r.func, "target": r.label, "w": round(0.25 + (i % 7) * 0.5, 2)}
            for i, r in enumerate(generate_synthetic(pairs_per_cwe=2, seed=3))]  # fmt: skip
    src = tmp_path / "weighted.jsonl"
    write_jsonl(src, rows)
    out = tmp_path / "processed"
    assert main(["data", "preprocess", "--input", str(src), "--output-dir", str(out),
                 "--weight-field", "w", "--workers", "1", "--vocab-size", "400",
                 "--no-progress"]) == EXIT_OK  # fmt: skip
    meta = json.loads((out / "preprocessing_metadata.json").read_text())
    assert meta["config"]["data"]["fields"]["weight"] == "w"
    weight_of = {row["func"]: row["w"] for row in rows}
    kept = [
        r for split in ("train", "valid", "test") for r in read_jsonl(out / split / "records.jsonl")
    ]
    assert len(kept) == meta["counts"]["kept"] > 0
    assert {r["weight"] for r in kept} != {1.0}
    assert all(r["weight"] == weight_of[r["func"]] for r in kept)


def test_preprocess_flags_default_to_the_config(tmp_path):
    """No flag given: the data set is built with exactly the config models' defaults."""
    args = build_parser().parse_args(["data", "preprocess", "--output-dir", str(tmp_path)])
    from streamguard_core.cli import preprocess_configs

    data, prep = preprocess_configs(args)
    assert prep == PreprocessConfig() and data.fields.weight == "weight"
    args = build_parser().parse_args(["data", "preprocess", "--output-dir", str(tmp_path),
                                      "--tokenizer", "none", "--id-field", "key", "--input",
                                      "a.jsonl", "--input", "b.jsonl", "--split-ratios", "0.6",
                                      "0.2", "0.2", "--no-quick-test"])  # fmt: skip
    data, prep = preprocess_configs(args)
    assert prep.tokenizer is None and data.fields.id == "key"
    assert data.inputs == ["a.jsonl", "b.jsonl"] and data.split_ratios == (0.6, 0.2, 0.2)


def test_demo_builds_the_synthetic_set_with_the_config_defaults(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--synthetic-pairs-per-cwe", "2",
                 "--workers", "1", "--vocab-size", "400", "--no-progress"]) == EXIT_OK  # fmt: skip
    meta = json.loads((out / "preprocessing_metadata.json").read_text())
    assert meta["config"]["data"] == DataConfig(synthetic_pairs_per_cwe=2).model_dump(mode="json")
    expected = PreprocessConfig(workers=1, vocab_size=400)
    assert meta["config"]["preprocess"] == expected.model_dump(mode="json")
    assert "[3/3] stats" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the demo reads no files
        main(["demo", "--output-dir", str(out), "--input", "x.jsonl"])


def test_baseline_trains_through_the_same_job_path(data_dir, tmp_path, capsys):
    out = tmp_path / "baseline"
    assert main(["train", "baseline", "--data", str(data_dir), "--output-dir", str(out),
                 "--min-df", "1", "--C", "0.5"]) == EXIT_OK  # fmt: skip
    paths = RunPaths(out)
    status = json.loads(paths.status.read_text())
    assert status["status"] == "completed" and status["kind"] == "baseline"
    metrics = json.loads(paths.metrics.read_text())
    assert set(metrics) == {"valid", "test"} and 0 <= metrics["test"]["f1"] <= 1
    assert (paths.model / "model_card.json").exists()
    assert _exp_config(out)["model"]["C"] == 0.5
    assert "test: accuracy" in capsys.readouterr().out


def test_stats_sizes_with_the_gnn_defaults(data_dir, capsys):
    from streamguard_core.preprocess.run import recommend_batch_size

    assert main(["data", "stats", str(data_dir), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    defaults = GNNConfig()
    assert report["gnn_batch_size"]["hidden_dim"] == defaults.hidden_dim
    assert report["gnn_batch_size"]["num_layers"] == defaults.num_layers
    all_stats = report["graph_stats"]["all"]
    budget = PreprocessConfig().gnn_memory_budget_mb  # the data set was built with the default
    assert report["gnn_batch_size"] == recommend_batch_size(
        all_stats["nodes_p95"], all_stats["edges_p95"], budget, defaults.hidden_dim,
        defaults.num_layers)  # fmt: skip
    assert main(["data", "stats", str(data_dir), "--json", "--hidden-dim", "8"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["gnn_batch_size"]["hidden_dim"] == 8


def test_preflight_plan_from_a_plan_file_models_and_flags(tmp_path):
    plan_file = tmp_path / "plan.yaml"
    models = [
        {"kind": "gnn", "name": "narrow", "hidden_dim": 16},
        {"kind": "gnn", "name": "wide", "hidden_dim": 64},
        {"kind": "baseline"},
    ]
    plan_file.write_text(
        yaml.safe_dump(
            {"models": models, "seeds": [1, 2], "train": {"batch_size": 16, "epochs": 3}}
        )
    )
    parse = build_parser().parse_args
    base = ["preflight", "--data", str(tmp_path), "--plan", str(plan_file)]
    plan = cli_preflight_plan(parse([*base, "--models", "wide,transformer", "--batch-size", "4"]))
    assert plan.names == ["wide", "transformer"]
    assert plan.model("wide").hidden_dim == 64
    assert plan.model("transformer") == TransformerConfig()
    assert plan.train == TrainConfig(batch_size=4, epochs=3) and plan.seeds == [1, 2]
    plan = cli_preflight_plan(parse([*base, "--models", "gnn", "--seeds", "9"]))
    assert plan.names == ["narrow", "wide"] and plan.seeds == [9]  # every model of the kind
    assert cli_preflight_plan(parse(["preflight", "--data", "d"])) == TrainingPlan()
    pipeline = PipelineConfig(plan=TrainingPlan(models=["transformer"], seeds=[4]))
    preset = save_yaml(pipeline, tmp_path / "preset.yaml")
    assert cli_preflight_plan(parse(["preflight", "--data", "d", "--config", str(preset)])) == (
        pipeline.plan
    )


def test_preflight_unknown_model_is_a_usage_error(tmp_path, capsys):
    code = main(["preflight", "--data", str(tmp_path), "--models", "gnn,svm", "--output",
                 str(tmp_path / "r.json")])  # fmt: skip
    assert code == EXIT_USAGE and "--models: 'svm' is neither" in capsys.readouterr().err


def test_preflight_checks_exactly_the_planned_model(data_dir, tmp_path, capsys):
    """Runs engineer B's ``run_preflight(data_dir, plan, ...)`` on the model the plan holds."""
    plan_file = tmp_path / "plan.yaml"
    model = GNNConfig(hidden_dim=16, num_layers=2, name="tiny_gnn")
    plan_file.write_text(yaml.safe_dump(TrainingPlan(models=[model]).model_dump(mode="json")))
    report_path = tmp_path / "preflight.json"
    code = main(["preflight", "--data", str(data_dir), "--plan", str(plan_file), "--device",
                 "cpu", "--output", str(report_path), "--overfit-steps", "20", "--batch-size",
                 "8", "--num-threads", "1", "--lr-cache-dir", str(tmp_path / "lr")])  # fmt: skip
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert out.strip().splitlines()[-1] == ("GO" if report["go"] else "NO-GO")
    assert code == (EXIT_OK if report["go"] else EXIT_FAILURE)
    names = {c["name"] for c in report["checks"]}
    assert {"overfit:tiny_gnn", "memory:tiny_gnn"} <= names
    assert not any(n.endswith((":gnn", ":transformer", ":baseline")) for n in names)
    assert report["models"]["tiny_gnn"]["kind"] == "gnn"
    assert report["models"]["tiny_gnn"]["config"] == model.model_dump(mode="json")
