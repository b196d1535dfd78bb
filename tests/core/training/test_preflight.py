"""Preflight checks exactly the planned models: their configs, their training loop, their limits."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from streamguard_core.config import (
    BaselineConfig,
    GNNConfig,
    TrainConfig,
    TrainingPlan,
    TransformerConfig,
)
from streamguard_core.models.adapters import adapter_for
from streamguard_core.preprocess.dataset import ProcessedDataset
from streamguard_core.training import preflight
from streamguard_core.training.batch_size import (
    auto_batch_size,
    recommend_batch_size,
    suggest_batch_size,
)
from streamguard_core.training.preflight import run_preflight

SEED = 7
PLANNED = [
    TransformerConfig(name="tiny3", num_layers=3, hidden_size=48),
    GNNConfig(hidden_dim=24, num_layers=3),
    BaselineConfig(),
]


def _plan(models: list[Any], tmp: Path, **train: Any) -> TrainingPlan:
    train = {"num_threads": 1, "lr_cache_dir": str(tmp / "lr"), **train}
    return TrainingPlan(models=models, seeds=[SEED, SEED + 1], train=TrainConfig(**train))


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _built_parameters(cfg: Any, data_dir: Path) -> int:
    """Parameters of ``cfg`` built by its adapter, as training builds it."""
    model, _ = adapter_for(cfg.kind).build(cfg, data_dir)
    return _parameters(model)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def _save_pretrained(data_dir: Path, out: Path, positions: int) -> int:
    """A small RoBERTa on the data set's tokenizer saved with save_pretrained; its parameters."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from streamguard_core.preprocess.tokens import load_tokenizer

    tok = load_tokenizer(data_dir / "tokenizer")
    config = RobertaConfig(
        vocab_size=len(tok), max_position_embeddings=positions, hidden_size=40,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=80,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, type_vocab_size=1,
    )  # fmt: skip
    config.num_labels = 2
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config)
    model.save_pretrained(str(out))
    return _parameters(model)


class Run(NamedTuple):
    report: dict[str, Any]
    lines: list[str]
    out: Path
    plan: TrainingPlan


@pytest.fixture(scope="module")
def data_dir(make_processed) -> Path:
    return make_processed(4, 500, 128)


@pytest.fixture(scope="module")
def go_run(data_dir, tmp_path_factory) -> Run:
    """The full preflight of a plan whose models are not the kinds' defaults, at batch 16."""
    out = tmp_path_factory.mktemp("preflight")
    plan = _plan(PLANNED, out, batch_size=16)
    lines: list[str] = []
    report = run_preflight(
        data_dir, plan, device="cpu", output=out / "preflight_report.json", echo=lines.append
    )
    return Run(report, lines, out, plan)


def test_models_are_checked_with_their_planned_configs(go_run, data_dir):
    """The report's models are the plan's, resolved (max_seq_len from the data set), and built
    as training builds them (the old preflight built 2-layer defaults of the hidden size)."""
    report = go_run.report
    assert ProcessedDataset(data_dir).max_seq_len == 128
    expected = {
        "tiny3": TransformerConfig(name="tiny3", num_layers=3, hidden_size=48, max_seq_len=128),
        "gnn": GNNConfig(hidden_dim=24, num_layers=3),
    }
    assert set(report["models"]) == {"tiny3", "gnn", "baseline"}
    checks = _checks(report)
    for name, cfg in expected.items():
        entry = report["models"][name]
        assert entry["kind"] == cfg.kind
        assert entry["config"] == cfg.model_dump(mode="json")
        parameters = _built_parameters(cfg, data_dir)
        assert entry["parameters"] == parameters
        assert checks[f"overfit:{name}"]["parameters"] == parameters
        assert checks[f"memory:{name}"]["parameters"] == parameters
    default_tiny = TransformerConfig(max_seq_len=128)
    assert report["models"]["tiny3"]["parameters"] != _built_parameters(default_tiny, data_dir)
    assert report["models"]["baseline"] == {
        "kind": "baseline", "config": BaselineConfig().model_dump(mode="json"), "parameters": None,
    }  # fmt: skip


def test_overfit_runs_the_training_loop_at_the_plans_batch_size(go_run):
    checks = _checks(go_run.report)
    for name, kind in (("tiny3", "transformer"), ("gnn", "gnn")):
        c = checks[f"overfit:{name}"]
        assert c["status"] == "pass", c
        assert c["accuracy"] >= 0.95 and c["final_loss"] is not None
        assert c["samples"] == 32 and c["positives"] == 16
        assert c["lr"] == preflight.OVERFIT_LR[kind]
        # batch 16: two optimizer steps per pass over the 32 examples
        assert c["batch_size"] == 16 and c["steps"] == 2 * c["passes"]
        assert 0 < c["passes"] <= c["max_passes"] == 100
        assert c["amp_dtype"] is None  # CPU
        m = checks[f"memory:{name}"]
        assert m["status"] == "pass" and m["batch_size"] == 16
        assert m["required_mb"] > m["weights_mb"] > 0 and m["method"]
    assert checks["overfit:baseline"]["status"] == "pass"
    assert checks["memory:gnn"]["preprocessing_recommendation"]["hidden_dim"] == 24
    assert not list(go_run.out.glob(".preflight-*"))  # the smoke runs' scratch dirs are gone


def test_go_report(go_run):
    report, lines = go_run.report, go_run.lines
    names = ["device", "data", "overfit:tiny3", "memory:tiny3", "overfit:gnn", "memory:gnn",
             "overfit:baseline", "lr_cache", "disk"]  # fmt: skip
    assert [c["name"] for c in report["checks"]] == names
    assert report["go"] is True
    assert all(c["status"] in ("pass", "warn") for c in report["checks"]), lines
    assert lines == [preflight.format_check(c) for c in report["checks"]]
    assert (go_run.out / "preflight_report.json").exists()
    assert not list(go_run.out.glob(".preflight_report.json.*"))  # atomic write
    assert report["settings"]["plan"] == go_run.plan.model_dump(mode="json")
    assert report["settings"]["seed"] == SEED
    for key in ("torch_version", "cuda_available", "amp_dtype", "memory_capacity_mb"):
        assert key in report["device"]


def test_trimmed_twins_warn_without_blocking(go_run):
    """At max_seq_len 128 some vulnerable/fixed pairs encode to the same tokens: a warning, and
    the transformer's smoke test leaves them out."""
    checks = _checks(go_run.report)
    conflicts = checks["data"]["train_label_conflicts"]["tokens"]
    assert conflicts > 0 and checks["data"]["status"] == "warn"
    assert checks["overfit:tiny3"]["excluded_conflicting"] == conflicts
    assert checks["overfit:gnn"]["excluded_conflicting"] == 0


def test_a_local_pretrained_directory_is_checked_as_that_model(data_dir, tmp_path):
    saved = _save_pretrained(data_dir, tmp_path / "local_model", positions=128 + 2)
    cfg = TransformerConfig(name="local", model_name_or_path=str(tmp_path / "local_model"))
    report = run_preflight(
        data_dir, _plan([cfg], tmp_path), device="cpu", output=tmp_path / "r.json",
        overfit_steps=1,
    )  # fmt: skip
    entry = report["models"]["local"]
    assert entry["config"]["model_name_or_path"] == str(tmp_path / "local_model")
    assert entry["config"]["max_seq_len"] == 128
    assert entry["parameters"] == saved
    assert saved != _built_parameters(TransformerConfig(max_seq_len=128), data_dir)
    checks = _checks(report)
    assert checks["memory:local"]["status"] == "pass"
    assert checks["memory:local"]["parameters"] == saved
    assert checks["overfit:local"]["lr"] == preflight.PRETRAINED_OVERFIT_LR


def test_a_max_seq_len_the_model_cannot_take_fails(data_dir, tmp_path):
    _save_pretrained(data_dir, tmp_path / "short_model", positions=64 + 2)
    models = [
        TransformerConfig(name="short_positions", model_name_or_path=str(tmp_path / "short_model")),
        TransformerConfig(name="too_long", hidden_size=16, max_seq_len=256),
        TransformerConfig(name="too_short", hidden_size=16, max_seq_len=64),
    ]
    report = run_preflight(data_dir, _plan(models, tmp_path), device="cpu",
                           output=tmp_path / "r.json")  # fmt: skip
    checks = _checks(report)
    details = {
        "short_positions": "max_seq_len 128 exceeds what",
        "too_long": "max_seq_len 256 is above the data set's 128",
        "too_short": "max_seq_len 64 is below the data set's 128",
    }
    for name, detail in details.items():
        for test in ("overfit", "memory"):
            assert checks[f"{test}:{name}"]["status"] == "fail"
            assert detail in checks[f"{test}:{name}"]["detail"]
    assert "exceeds" in report["models"]["short_positions"]["error"]
    assert report["go"] is False


def _names_only_data(data_dir: Path, out: Path) -> Path:
    """A copy of the data set whose train graphs are one node of one type each, told apart only
    by the node's identifier bucket (every example distinct, labels as before)."""
    shutil.copytree(data_dir, out)
    graphs = out / "train" / "graphs.npz"
    with np.load(graphs) as g:
        labels = g["y"]
    n = len(labels)
    np.savez(
        graphs, node_type=np.zeros(n, np.int16), node_token=np.arange(1, n + 1, dtype=np.int32),
        node_ptr=np.arange(n + 1, dtype=np.int64), edge_index=np.zeros((2, 0), np.int32),
        edge_type=np.zeros(0, np.int8), edge_ptr=np.zeros(n + 1, np.int64), y=labels,
    )  # fmt: skip
    return out


def test_overfit_fails_for_a_model_that_cannot_see_what_tells_examples_apart(data_dir, tmp_path):
    """Same data, two GNN configs: the one that ignores identifier names (node_token_dim=0)
    sees 32 identical graphs and cannot memorise them; the one that reads names can."""
    data = _names_only_data(data_dir, tmp_path / "names_only")
    models = [
        GNNConfig(name="blind", hidden_dim=16, num_layers=2, node_token_dim=0),
        GNNConfig(name="sighted", hidden_dim=16, num_layers=2, node_token_dim=16),
    ]
    report = run_preflight(data, _plan(models, tmp_path), device="cpu",
                           output=tmp_path / "r.json")  # fmt: skip
    checks = _checks(report)
    blind, sighted = checks["overfit:blind"], checks["overfit:sighted"]
    assert blind["status"] == "fail" and "cannot memorise" in blind["detail"]
    assert blind["accuracy"] == 0.5 and blind["passes"] == 100
    assert blind["excluded_conflicting"] == 0  # the graphs differ; this model cannot see how
    assert sighted["status"] == "pass" and sighted["accuracy"] >= 0.95
    assert report["go"] is False


def test_tiny_memory_capacity_fails_with_a_batch_size(data_dir, tmp_path):
    plan = _plan([GNNConfig(hidden_dim=64)], tmp_path, batch_size=32)
    report = run_preflight(data_dir, plan, device="cpu", output=tmp_path / "r.json",
                           overfit_steps=0, memory_capacity_mb=1)  # fmt: skip
    mem = _checks(report)["memory:gnn"]
    assert mem["status"] == "fail" and mem["fraction"] > 1.0
    assert mem["capacity_source"] == "memory_capacity_mb override"
    suggested = mem["suggested_batch_size"]
    assert 1 <= suggested < 32 and suggested & (suggested - 1) == 0  # a smaller power of two
    assert f"batch_size {suggested}" in mem["detail"]
    assert report["go"] is False


def test_suggest_batch_size_scales_activations_only():
    mb = 1024 * 1024
    # 10 MB fixed + 90 MB of activations at batch 32; 50 MB capacity -> 45 MB target -> 12 fit
    assert suggest_batch_size(32, 100 * mb, 10 * mb, 50 * mb)[0] == 8
    assert suggest_batch_size(32, 100 * mb, 60 * mb, 50 * mb)[0] == 1  # model alone too big


def test_auto_batch_size_sizes_a_gnn_from_the_graph_statistics(data_dir):
    cfg = TrainConfig(auto_batch_size=True, memory_budget_mb=8, batch_size=64)
    gnn = GNNConfig(hidden_dim=32, num_layers=2)
    model, pad_id = adapter_for("gnn").build(gnn, data_dir)
    sized, note = auto_batch_size("gnn", model, gnn, cfg, data_dir, pad_id, "cpu")
    stats = ProcessedDataset(data_dir).metadata.graph_stats["train"]
    expected = recommend_batch_size(stats["nodes_p95"], stats["edges_p95"], 8, 32, 2)
    assert sized.batch_size == note["chosen"] == expected["recommended_batch_size"]
    tiny = TransformerConfig(hidden_size=16, max_seq_len=128)
    model, pad_id = adapter_for("transformer").build(tiny, data_dir)
    kept, note = auto_batch_size("transformer", model, tiny, cfg, data_dir, pad_id, "cpu")
    assert kept.batch_size == 64 and "no probe on CPU" in note["method"]


def test_missing_data_dir_is_no_go(tmp_path):
    report = run_preflight(tmp_path / "nope", _plan(["baseline"], tmp_path),
                           output=tmp_path / "report.json")  # fmt: skip
    checks = _checks(report)
    assert report["go"] is False and checks["data"]["status"] == "fail"
    assert checks["overfit:baseline"]["status"] == "fail" and checks["overfit:baseline"]["skipped"]
    assert (tmp_path / "report.json").exists()


def test_unwritable_lr_cache_is_no_go(data_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    plan = _plan(["baseline"], tmp_path, lr_cache_dir=str(blocker / "lr"))
    report = run_preflight(data_dir, plan, output=tmp_path / "r.json")
    checks = _checks(report)
    assert checks["lr_cache"]["status"] == "fail"
    assert checks["overfit:baseline"]["status"] == "pass"
    assert report["go"] is False


def test_negative_overfit_steps_is_a_usage_error(data_dir, tmp_path):
    with pytest.raises(ValueError, match="overfit_steps"):
        run_preflight(data_dir, _plan(["baseline"], tmp_path), output=tmp_path / "r.json",
                      overfit_steps=-1)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device (torch.cuda.is_available() is False); run on a GPU machine",
)
@pytest.mark.parametrize("mode, dtype", [("fp16", "torch.float16"), ("bf16", "torch.bfloat16")])
def test_cuda_checks_use_the_runs_autocast_dtype(data_dir, tmp_path, mode, dtype):
    """The smoke run and the memory test use the plan's mixed precision, as its runs will."""
    if mode == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    models = [TransformerConfig(name="tiny3", num_layers=3, hidden_size=48),
              GNNConfig(hidden_dim=24, num_layers=3)]  # fmt: skip
    plan = _plan(models, tmp_path, batch_size=16, mixed_precision=mode)
    report = run_preflight(data_dir, plan, device="cuda", output=tmp_path / "r.json")
    checks = _checks(report)
    for name in ("tiny3", "gnn"):
        assert checks[f"overfit:{name}"]["status"] == "pass", checks[f"overfit:{name}"]
        assert checks[f"overfit:{name}"]["amp_dtype"] == dtype
        assert checks[f"memory:{name}"]["status"] == "pass"
        assert checks[f"memory:{name}"]["amp_dtype"] == dtype
        assert checks[f"memory:{name}"]["peak_reserved_mb"] > 0
    assert report["device"]["amp_dtype"] == dtype
