"""Cache keys for the deterministic stages: input *content* hashes plus the configuration.

Prefect's ``INPUTS`` policy hashes the parameters as given, so a path whose file changed would
still hit the cache. These key functions add the SHA-256 of the files a stage reads; the flows
pass ``refresh_cache=True`` when a stage's outputs are gone from disk, so a cache hit always
points at files that exist.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy, CachePolicy

from streamguard_core.config import TrainJobSpec
from streamguard_core.preprocess.dataset import METADATA_FILE
from streamguard_core.preprocess.run import parse_input_spec

_digests: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, memoised on (path, size, mtime) within the process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def preprocess_key(_ctx: Any, params: dict[str, Any]) -> str:
    """Content of every input file (and CodeXGLUE split file) plus both configs."""
    data = params["data"]
    files: dict[str, str] = {}
    for spec in data.inputs:
        path = Path(parse_input_spec(spec)[1])
        files[str(path)] = file_sha256(path) if path.is_file() else "missing"
    if data.codexglue_splits:
        for name in ("train.txt", "valid.txt", "test.txt"):
            path = Path(data.codexglue_splits) / name
            files[str(path)] = file_sha256(path) if path.is_file() else "missing"
    blob = {"files": files, "data": _dump(data), "prep": _dump(params["preprocessing"])}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def training_key(_ctx: Any, params: dict[str, Any]) -> str:
    """The job spec's content (model, train settings, seed, run dir) plus the processed data's
    metadata hash (which holds its inputs' hashes), so the same path with new data retrains.

    The data set's *path* is left out (its content stands in for it), and so is the device: the
    same job on another GPU is the same run.
    """
    spec: TrainJobSpec = params["spec"]
    meta = Path(spec.data_dir) / METADATA_FILE
    blob = {
        "data": file_sha256(meta) if meta.is_file() else "missing",
        "job": spec.model_dump(mode="json", include={"model", "train", "seed", "fold"}),
        "run_dir": str(Path(spec.run_dir).resolve()),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


PREPROCESS_CACHE: CachePolicy = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=preprocess_key)
TRAINING_CACHE: CachePolicy = TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=training_key)
