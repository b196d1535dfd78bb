"""Preprocessing on Dask (``PreprocessConfig.executor="dask"``): the same files, byte for byte,
as the local process pool; a scheduler that cannot be reached is one clear error."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from streamguard_core.cli import main
from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.preprocess.dataset import METADATA_FILE
from streamguard_core.preprocess.run import preprocess, process_functions

distributed = pytest.importorskip("dask.distributed", reason="the `dask` extra is not installed")

# What may differ between two runs of one data set: wall-clock timings and the executor's name.
RUN_ONLY = ("timings", "functions_per_s")


def _run(out: Path, executor: str) -> dict:
    return preprocess(
        DataConfig(synthetic_pairs_per_cwe=6),
        # chunk_size 16: 10 chunks over 2 workers, so results come back out of order
        PreprocessConfig(workers=2, vocab_size=500, chunk_size=16, executor=executor),
        out,
        show_progress=False,
    )


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != METADATA_FILE
    }


def _metadata_without_run_facts(root: Path) -> dict:
    meta = json.loads((root / METADATA_FILE).read_text())
    for key in RUN_ONLY:
        meta.pop(key)
    assert meta["config"]["preprocess"].pop("executor") in ("local", "dask")
    return meta


def test_dask_local_cluster_writes_the_same_bytes_as_the_pool(tmp_path):
    local, dask = tmp_path / "local", tmp_path / "dask"
    _run(local, "local")
    meta = _run(dask, "dask")  # no dask_address: a LocalCluster of 2 worker processes

    assert meta["config"]["preprocess"]["executor"] == "dask"
    assert meta["workers"] == 2
    local_files, dask_files = _digests(local), _digests(dask)
    assert {"train/graphs.npz", "test/tokens.npz", "valid/records.jsonl"} <= set(local_files)
    assert dask_files == local_files  # every file but the metadata, byte for byte
    # the metadata differs only in timings and the executor's name
    assert _metadata_without_run_facts(dask) == _metadata_without_run_facts(local)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_clear_error(tmp_path, capsys):
    import dask

    address = f"tcp://127.0.0.1:{_closed_port()}"
    argv = ["data", "preprocess", "--output-dir", str(tmp_path / "out"),
            "--synthetic-pairs-per-cwe", "1", "--vocab-size", "300",
            "--executor", "dask", "--dask-address", address, "--no-progress"]  # fmt: skip
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert f"cannot reach the Dask scheduler at '{address}'" in err
    assert "Traceback" not in err


@pytest.mark.integration
@pytest.mark.slow
def test_dask_scheduler_address(tmp_path):
    """A running scheduler named by address (what a team's cluster is): the same arrays as the
    in-process path, chunk by chunk."""
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.preprocess.tokens import train_bpe_tokenizer

    funcs = [(r.func, None) for r in generate_synthetic(pairs_per_cwe=2, seed=3)]
    tok_dir = train_bpe_tokenizer([f for f, _ in funcs], tmp_path / "tok", vocab_size=400)
    cfg = PreprocessConfig(chunk_size=8, data_flow_edges=True)
    expected = process_functions(funcs, tok_dir, cfg, workers=1)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        on_cluster = cfg.model_copy(update={"executor": "dask",
                                            "dask_address": cluster.scheduler_address})  # fmt: skip
        got = process_functions(funcs, tok_dir, on_cluster, workers=0, executor="dask")
    assert len(got) == len(expected) == (len(funcs) + 7) // 8
    for a, b in zip(got, expected, strict=True):
        assert a.info == b.info
        for key in ("input_ids", "offsets", "node_type", "node_token", "edge_index", "edge_type"):
            assert np.array_equal(getattr(a, key), getattr(b, key)), key
