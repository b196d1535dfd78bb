"""`streamguard train KIND --train-data/--val-data/--test-data` on raw Devign files or processed
split directories: raw files are preprocessed into OUTPUT/data with the config's defaults."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from streamguard_core.cli import EXIT_USAGE, main
from streamguard_core.config import PreprocessConfig


@pytest.fixture(scope="module")
def raw_splits(shared_data: Path, tmp_path_factory) -> dict[str, Path]:
    """Three small raw Devign-format files cut from the real valid set (60/24/24 functions)."""
    out = tmp_path_factory.mktemp("raw_splits")
    with gzip.open(shared_data / "devign_valid.jsonl.gz", "rt") as f:
        rows = [next(f) for _ in range(108)]
    files = {}
    for name, part in (("train", rows[:60]), ("valid", rows[60:84]), ("test", rows[84:])):
        files[name] = out / f"{name}.jsonl"
        files[name].write_text("".join(part))
    return files


def test_raw_files_are_preprocessed_with_their_splits_then_trained(raw_splits, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "gnn", "--train-data", str(raw_splits["train"]),
            "--val-data", str(raw_splits["valid"]), "--test-data", str(raw_splits["test"]),
            "--output-dir", str(out), "--epochs", "1", "--quick-test", "--hidden-dim", "16",
            "--num-layers", "2", "--batch-size", "8", "--num-threads", "1"]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads((out / "data" / "preprocessing_metadata.json").read_text())
    counts = meta["counts"]
    assert meta["config"]["data"]["split_strategy"] == "explicit"
    # the preprocessing defaults are PreprocessConfig's own, not a copy typed into the CLI
    assert meta["config"]["preprocess"] == PreprocessConfig().model_dump(mode="json")
    # every record of each file is accounted for in its own split
    assert counts["read"] == 108 == counts["kept"] + counts["rejected"] + counts["deduplicated"]
    assert 0 < counts["kept_per_split"]["train"] <= 60
    assert 0 < counts["kept_per_split"]["test"] <= 24
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == counts["kept_per_split"]["test"]
    assert metrics["valid"]["n"] == counts["kept_per_split"]["valid"]
    # a resumed run reuses the processed data instead of rebuilding it
    stamp = (out / "data" / "preprocessing_metadata.json").stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    assert (out / "data" / "preprocessing_metadata.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "kind, flags",
    [
        ("transformer", ["--max-seq-len", "64", "--hidden-size", "16", "--num-layers", "1",
                         "--epochs", "1", "--quick-test", "--num-threads", "1"]),
        ("baseline", ["--min-df", "1"]),
    ],
)  # fmt: skip
def test_every_kind_preprocesses_raw_files_the_same_way(kind, flags, raw_splits, tmp_path):
    """A transformer's max_seq_len sizes the sequences; the baseline takes the same path."""
    out = tmp_path / kind
    argv = ["train", kind, "--train-data", str(raw_splits["train"]), "--val-data",
            str(raw_splits["valid"]), "--test-data", str(raw_splits["test"]), "--output-dir",
            str(out), *flags]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads((out / "data" / "preprocessing_metadata.json").read_text())
    expected = PreprocessConfig(**({"max_seq_len": 64} if kind == "transformer" else {}))
    assert meta["config"]["preprocess"] == expected.model_dump(mode="json")
    spec = json.loads((out / "exp_config.json").read_text())
    assert spec["data_dir"] == str(out / "data") and spec["model"]["kind"] == kind
    assert json.loads((out / "run_status.json").read_text())["status"] == "completed"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == meta["counts"]["kept_per_split"]["test"]


def test_processed_split_dirs_resolve_to_their_data_set(make_processed, tmp_path):
    data = make_processed(pairs=5, vocab_size=400, max_seq_len=96)
    out = tmp_path / "run"
    argv = ["train", "gnn", "--train-data", str(data / "train"), "--val-data",
            str(data / "valid"), "--output-dir", str(out), "--epochs", "1", "--quick-test",
            "--hidden-dim", "16", "--num-layers", "2", "--num-threads", "1"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "exp_config.json").read_text())["data_dir"] == str(data.resolve())
    assert not (out / "data").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give --data DIR, or --train-data and --val-data"),
        (["--data", "x", "--train-data", "y"], "either --data or"),
        (["--train-data", "/nonexistent.jsonl", "--val-data", "/nonexistent2.jsonl"],
         "/nonexistent.jsonl: no such file"),
    ],
)  # fmt: skip
def test_data_flag_errors_are_usage_errors(extra, message, tmp_path, capsys):
    assert main(["train", "gnn", "--output-dir", str(tmp_path / "o"), *extra]) == EXIT_USAGE
    assert message in capsys.readouterr().err
