"""Checkpoints that resume exactly: model, optimizer, scheduler, scaler, RNG states, position.

A checkpoint is a directory holding ``state.pt`` (loaded with ``torch.load(weights_only=True)``,
so it can hold tensors and plain Python values only) and ``meta.json``. It is written to a
temporary sibling directory and renamed into place, so a run killed while saving leaves the
previous checkpoint intact and never a partial one under the real name.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamguard_core.io import atomic_write_json

STATE_FILE = "state.pt"
META_FILE = "meta.json"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as weights_only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, np.asarray(keys).tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``state`` (torch.save) and ``meta`` (JSON) atomically as a directory."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with open(tmp / STATE_FILE, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    atomic_write_json(tmp / META_FILE, meta)
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The state of a checkpoint directory (``weights_only=True``: no code is unpickled)."""
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no {STATE_FILE}; not a checkpoint")
    return torch.load(path, map_location=map_location, weights_only=True)


def is_valid_checkpoint(directory: str | Path) -> bool:
    """True when the directory holds a complete checkpoint (state and meta)."""
    d = Path(directory)
    return (d / STATE_FILE).is_file() and (d / META_FILE).is_file()
