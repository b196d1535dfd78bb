"""Data and tiny models for the explainer tests: functions where ``strcpy`` means vulnerable,
and 2-layer models trained on them for a few dozen steps (real preprocessing, real training
steps, saved exactly as ``streamguard train`` saves them)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamguard_core.config import DataConfig, PreprocessConfig, TrainJobSpec
from streamguard_core.io import write_jsonl
from streamguard_core.models.adapters import adapter_for
from streamguard_core.preprocess.dataset import ProcessedDataset
from streamguard_core.preprocess.run import preprocess
from streamguard_core.training.loop import Batches
from streamguard_core.training.run import resolve_spec, save_detector

FILLERS = [
    "    int n = len + 1;",
    "    if (n > limit) return -1;",
    "    total += values[i] * 2;",
    "    for (i = 0; i < count; i++) sum += i;",
    "    ptr = buf + offset;",
    "    memset(out, 0, size);",
    "    flags |= MODE_READ;",
    "    while (k-- > 0) acc ^= k;",
]
PLANTED = "    strcpy(dst, src);"


def planted_function(rng: random.Random, vulnerable: bool, name: str) -> tuple[str, int]:
    """A function of filler lines; the vulnerable ones hold ``strcpy`` on a random line.

    Returns the text and the 1-based line of the planted call (0 when there is none).
    """
    body = rng.sample(FILLERS, 5)
    line = 0
    if vulnerable:
        at = rng.randrange(len(body) + 1)
        body.insert(at, PLANTED)
        line = at + 3  # after the signature and the brace lines
    text = "\n".join([f"int {name}(char *dst, const char *src, int len)", "{", *body,
                      "    return 0;", "}"])  # fmt: skip
    return text, line


def planted_data(n: int, seed: int) -> tuple[list[str], list[int], list[int]]:
    """``n`` functions, every other one vulnerable: (texts, labels, planted lines)."""
    rng = random.Random(seed)
    funcs, labels, lines = [], [], []
    for i in range(n):
        text, line = planted_function(rng, i % 2 == 1, f"f{i}")
        funcs.append(text)
        labels.append(i % 2)
        lines.append(line)
    return funcs, labels, lines


def planted_dataset(root: Path, n: int = 240, seed: int = 1) -> Path:
    """A processed data set (real preprocessing: BPE, graphs) of :func:`planted_data`."""
    funcs, labels, _ = planted_data(n, seed)
    raw = root / "planted.jsonl"
    write_jsonl(raw, ({"func": f, "target": y} for f, y in zip(funcs, labels, strict=True)))
    out = root / "processed"
    preprocess(
        DataConfig(inputs=[str(raw)], split_strategy="random", dedup="exact"),
        PreprocessConfig(workers=1, vocab_size=300, max_seq_len=96),
        out,
        show_progress=False,
    )
    return out


def train_tiny(model_cfg: Any, data_dir: Path, out: Path, steps: int = 60, lr: float = 1e-2,
               seed: int = 0) -> Path:  # fmt: skip
    """Train a neural model for ``steps`` Adam steps on random batches of 16 and save it as a
    detector directory (weights, tokenizer, model card with threshold 0.5)."""
    spec = resolve_spec(
        TrainJobSpec(model=model_cfg, data_dir=str(data_dir), run_dir=str(out.parent / "run"))
    )
    kind = spec.model.kind
    torch.manual_seed(seed)
    adapter = adapter_for(kind)
    model, pad_id = adapter.build(spec.model, data_dir)
    data = ProcessedDataset(data_dir)
    batches = Batches(data.split("train"), kind, pad_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        batch = batches.make(rng.choice(len(batches), 16, replace=False), torch.device("cpu"))
        loss = torch.nn.functional.cross_entropy(adapter.forward(model, batch), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    card = {"kind": kind, "config": spec.model.model_dump(mode="json"), "threshold": 0.5,
            "preprocess": data.model_preprocess_config()}  # fmt: skip
    return save_detector(spec, model, out, card)
