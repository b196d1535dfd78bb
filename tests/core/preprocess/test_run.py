"""The preprocessing driver end to end: outputs, accounting, determinism, real data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streamguard_core.cli import main
from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.preprocess.dataset import ProcessedSplit, graph_dataset, load_metadata
from streamguard_core.preprocess.run import preprocess, recommend_batch_size

OUTPUTS = (
    "preprocessing_metadata.json",
    "leakage_report.json",
    "rejects.jsonl",
    "duplicates.jsonl",
    "node_types.json",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
)


def _synthetic(out, workers: int, pairs: int = 6):
    return preprocess(
        DataConfig(synthetic_pairs_per_cwe=pairs),
        PreprocessConfig(workers=workers, vocab_size=500, chunk_size=16),
        out,
        show_progress=False,
    )


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return out, _synthetic(out, workers=1)


def test_outputs_and_accounting(synthetic_run):
    out, meta = synthetic_run
    for name in OUTPUTS:
        assert (out / name).exists(), name
    for split in ("train", "valid", "test"):
        for name in ("records.jsonl", "tokens.npz", "graphs.npz"):
            assert (out / split / name).exists()
    c = meta["counts"]
    assert c["read"] == 13 * 2 * 6
    assert c["read"] == c["kept"] + c["rejected"] + c["deduplicated"]
    assert sum(c["kept_per_split"].values()) == c["kept"]
    assert meta["split_strategy"] == "group"  # synthetic pairs never straddle splits
    assert meta["ast"]["success_rate"] == 1.0
    assert meta["tokenizer"]["source"] == "trained_bpe"
    assert meta["versions"]["tree-sitter"] != "not installed"
    assert len(meta["inputs"]["files"]) == 1
    assert load_metadata(out) == meta


def test_pairs_stay_in_one_split(synthetic_run):
    out, _ = synthetic_run
    where: dict[str, set[str]] = {}
    for split in ("train", "valid", "test"):
        for r in ProcessedSplit(out, split).records:
            where.setdefault(r["group"], set()).add(split)
    assert all(len(s) == 1 for s in where.values())


def test_processed_split_tokens_and_graphs(synthetic_run):
    out, meta = synthetic_run
    split = ProcessedSplit(out, "train")
    assert len(split) == meta["counts"]["kept_per_split"]["train"] == len(split.records)
    for i in (0, len(split) - 1):
        record = split.records[i]
        ids, offsets = split.input_ids(i), split.offsets(i)
        assert ids[0] == 0 and ids[-1] == 2 and len(ids) == record["n_tokens"]
        # offsets point at the function text: the first real token starts the function
        start, end = offsets[1]
        assert record["func"][start:end].strip() == record["func"][:end].strip()
        g = split.graph_arrays(i)
        assert len(g["node_type"]) == record["graph"]["num_nodes"]
        assert g["edge_index"].shape == (2, record["graph"]["num_edges"])
        assert g["edge_index"].max() < len(g["node_type"])
    assert split.labels.tolist() == [r["label"] for r in split.records]


def test_pyg_dataset_and_batching(synthetic_run):
    from torch_geometric.loader import DataLoader

    out, _ = synthetic_run
    ds = graph_dataset(out, "valid")
    data = ds[0]
    assert data.x.dtype.is_floating_point is False and data.edge_index.shape[0] == 2
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.num_graphs == min(4, len(ds)) and batch.y.shape == (batch.num_graphs,)


@pytest.mark.slow
def test_output_identical_for_any_worker_count(tmp_path, synthetic_run):
    out1, _ = synthetic_run
    out2 = tmp_path / "w2"
    _synthetic(out2, workers=2)
    for split in ("train", "valid", "test"):
        assert (out1 / split / "records.jsonl").read_bytes() == (
            out2 / split / "records.jsonl"
        ).read_bytes()
        for name in ("tokens.npz", "graphs.npz"):
            with np.load(out1 / split / name) as a, np.load(out2 / split / name) as b:
                assert a.files == b.files
                for key in a.files:
                    assert np.array_equal(a[key], b[key]), (split, name, key)


def test_batch_size_recommendation_scales_with_budget():
    small = recommend_batch_size(300, 600, 256)["recommended_batch_size"]
    large = recommend_batch_size(300, 600, 4096)["recommended_batch_size"]
    assert small < large and large & (large - 1) == 0
    assert recommend_batch_size(1e7, 2e7, 1)["recommended_batch_size"] == 1
    assert not recommend_batch_size(1e7, 2e7, 1)["fits_one_graph"]


@pytest.mark.slow
def test_cli_devign_codexglue_split(tmp_path, shared_data):
    out = tmp_path / "devign"
    code = main(
        [
            "data", "preprocess", "--output-dir", str(out), "--no-progress", "--workers", "2",
            "--input", str(shared_data / "devign_train.jsonl.gz"),
            "--input", str(shared_data / "devign_valid.jsonl.gz"),
            "--codexglue-splits", str(shared_data / "codexglue_splits"),
            "--max-records", "300", "--vocab-size", "1000",
        ]
    )  # fmt: skip
    assert code == 0
    meta = load_metadata(out)
    assert meta["split_strategy"] == "codexglue"
    c = meta["counts"]
    assert c["read"] == 600 == c["kept"] + c["rejected"] + c["deduplicated"]
    assert c["kept_per_split"]["valid"] > 250 and c["kept_per_split"]["test"] == 0
    assert any("test" in w for w in meta["warnings"])
    assert meta["ast"]["success_rate"] > 0.9
    valid_idx = {r["idx"] for r in ProcessedSplit(out, "valid").records}
    index = {int(x) for x in (shared_data / "codexglue_splits/valid.txt").read_text().split()}
    assert valid_idx <= index
    report = json.loads((out / "leakage_report.json").read_text())
    assert report["cross_split_overlap_remaining"]["train<-valid"] == 0
    _check_offsets_decode(out, "train")


def _check_offsets_decode(out, split_name):
    """Every kept token's offsets cut its own text out of the function, also when the
    function was trimmed (including long ones cut to windows before encoding)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    split = ProcessedSplit(out, split_name)
    checked_long = 0
    for i, record in enumerate(split.records):
        func = record["func"]
        if not func.isascii():
            continue
        ids, offsets = split.input_ids(i), split.offsets(i)
        assert len(ids) <= 512
        for tid, (start, end) in zip(ids[1:-1].tolist(), offsets[1:-1].tolist(), strict=True):
            # RoBERTa-style offsets leave out a token's leading whitespace
            assert func[start:end].strip() == tok.decode([tid]).strip(), (record["id"], start, end)
        if record["trimmed"]:
            assert record["trim"]["char_spans"] and record["orig_tokens"] > 510
            checked_long += len(func) > 510 * 8
    assert checked_long > 0  # long functions were cut to windows before encoding


@pytest.mark.slow
def test_cli_juliet_group_split_uses_func_anon(tmp_path, shared_data):
    out = tmp_path / "juliet"
    code = main(
        [
            "data", "preprocess", "--output-dir", str(out), "--no-progress", "--workers", "1",
            "--input", str(shared_data / "juliet_functions.jsonl.gz"),
            "--split-strategy", "group", "--max-records", "400", "--vocab-size", "800",
        ]
    )  # fmt: skip
    assert code == 0
    meta = load_metadata(out)
    groups: dict[str, set[str]] = {}
    for split in ("train", "valid", "test"):
        for r in ProcessedSplit(out, split).records:
            groups.setdefault(r["group"], set()).add(split)
            assert "FLAW" not in r["func"] and "/*" not in r["func"]  # comments stripped
            assert r["meta"]["text_field"] == "func_anon"
    assert all(len(s) == 1 for s in groups.values())
    assert meta["ast"]["success_rate"] > 0.95


def test_stats_command(synthetic_run, capsys):
    out, meta = synthetic_run
    assert main(["data", "stats", str(out), "--memory-budget-mb", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["graph_stats"]["all"]["graphs"] == meta["counts"]["kept"]
    assert report["gnn_batch_size"]["memory_budget_mb"] == 64


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "preprocess"],
        ["data", "synthesize"],
        ["data", "stats"],
        ["demo"],
        ["train"],
        ["train", "baseline"],
        ["evaluate"],
    ],
)
def test_every_command_has_help(argv):
    proc = subprocess.run(
        [sys.executable, "-m", "streamguard_core", *argv, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert "usage: streamguard" in proc.stdout


def test_inference_parts_build_only_what_one_kind_reads(make_processed) -> None:
    """``parts="graph"`` gives the graphs of ``"all"`` with CLS SEP as tokens, ``"tokens"`` its
    tokens and offsets with empty graphs: a GNN and a transformer score exactly as trained."""
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.preprocess.run import process_functions

    data_dir = make_processed(2, 300, 64)
    cfg = PreprocessConfig(workers=1, vocab_size=300, max_seq_len=64)
    items = [(r.func, None) for r in generate_synthetic(pairs_per_cwe=1, seed=5)][:20]
    tok_dir = data_dir / "tokenizer"
    (full,) = process_functions(items, tok_dir, cfg, workers=1)
    (graph,) = process_functions(items, tok_dir, cfg, workers=1, parts="graph")
    (toks,) = process_functions(items, tok_dir, cfg, workers=1, parts="tokens")
    for name in ("node_type", "node_token", "n_nodes", "edge_index", "edge_type", "n_edges"):
        np.testing.assert_array_equal(getattr(graph, name), getattr(full, name), err_msg=name)
    assert (graph.n_tokens == 2).all() and len(graph.input_ids) == 2 * len(items)
    assert (full.n_tokens > 2).all()
    for name in ("input_ids", "offsets", "n_tokens"):
        np.testing.assert_array_equal(getattr(toks, name), getattr(full, name), err_msg=name)
    assert toks.n_nodes.sum() == 0 and toks.edge_index.shape == (2, 0)
    with pytest.raises(ValueError, match="parts must be one of"):
        process_functions(items, tok_dir, cfg, workers=1, parts="nodes")
