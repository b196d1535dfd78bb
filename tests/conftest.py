"""Shared fixtures: the real data folder, offline Hugging Face, tiny functions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No hub calls from tests (a hub lookup otherwise hangs ~23 s here) and no egress.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
# One torch CPU thread (set before anything imports torch; child processes inherit it). The
# test models are tiny, and on a busy 2-core machine torch's spinning worker threads made a
# 60-step GNN test take 20 s instead of 1 s. Export OMP_NUM_THREADS to choose otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason when it is absent."""
    if not (SHARED_DATA / "devign_valid.jsonl.gz").exists():
        pytest.skip(f"real data not present at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def make_processed(tmp_path_factory):
    """Build (once per settings) a small real processed data set from the synthetic generator."""
    from streamguard_core.config import DataConfig, PreprocessConfig
    from streamguard_core.preprocess.run import preprocess

    built: dict[tuple[int, int, int], Path] = {}

    def build(pairs: int, vocab_size: int, max_seq_len: int) -> Path:
        key = (pairs, vocab_size, max_seq_len)
        if key not in built:
            out = tmp_path_factory.mktemp(f"processed_{pairs}_{vocab_size}_{max_seq_len}")
            preprocess(
                DataConfig(synthetic_pairs_per_cwe=pairs),
                PreprocessConfig(workers=1, vocab_size=vocab_size, max_seq_len=max_seq_len),
                out,
                show_progress=False,
            )
            built[key] = out
        return built[key]

    return build


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One Prefect test harness (ephemeral server, temporary database) for every flow test."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
