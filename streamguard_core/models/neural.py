"""Saved GNN / transformer detectors scoring raw functions, preprocessed as in training.

A model directory written by ``streamguard train gnn|transformer`` holds the weights, the
tokenizer, ``node_types.json`` and a ``model_card.json`` whose ``preprocess`` entry is the
preprocessing configuration of its training data. :class:`NeuralDetector` runs exactly that
preprocessing (tree-sitter graph, tokens, trimming) on new functions before predicting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamguard_core.config import PreprocessConfig
from streamguard_core.preprocess.run import ChunkResult, process_functions
from streamguard_core.training.loop import Batches, predict


class _ArraySplit:
    """The slice of :class:`ProcessedSplit`'s interface that :class:`Batches` uses, in memory."""

    def __init__(self, chunks: list[ChunkResult], labels: list[int]) -> None:
        def cat(name: str, axis: int = 0) -> np.ndarray:
            return np.concatenate([getattr(c, name) for c in chunks], axis=axis)

        def ptr(name: str) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(cat(name))]).astype(np.int64)

        self.ids, self.tok_ptr = cat("input_ids"), ptr("n_tokens")
        self.node_type, self.node_token = cat("node_type"), cat("node_token")
        self.edge_index, self.edge_type = cat("edge_index", axis=1), cat("edge_type")
        self.node_ptr, self.edge_ptr = ptr("n_nodes"), ptr("n_edges")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.records = [{"weight": 1.0} for _ in labels]

    def input_ids(self, i: int) -> np.ndarray:
        return self.ids[self.tok_ptr[i] : self.tok_ptr[i + 1]]

    def graph(self, i: int) -> Any:
        from torch_geometric.data import Data

        n0, n1 = self.node_ptr[i], self.node_ptr[i + 1]
        e0, e1 = self.edge_ptr[i], self.edge_ptr[i + 1]
        return Data(
            x=torch.from_numpy(self.node_type[n0:n1].astype(np.int64)),
            node_token=torch.from_numpy(self.node_token[n0:n1].astype(np.int64)),
            edge_index=torch.from_numpy(self.edge_index[:, e0:e1].astype(np.int64)),
            edge_type=torch.from_numpy(self.edge_type[e0:e1].astype(np.int64)),
            y=torch.tensor([int(self.labels[i])]),
            num_nodes=int(n1 - n0),
        )


def function_batches(
    funcs: list[str],
    language_hints: list[str | None] | None,
    model_dir: Path,
    preprocess: PreprocessConfig,
    kind: str,
    pad_id: int,
) -> Batches:
    """Raw functions preprocessed as the model in ``model_dir`` was trained, ready to collate
    (shared by the torch and the onnxruntime detectors)."""
    hints = language_hints or [None] * len(funcs)
    parts = {"gnn": "graph", "transformer": "tokens"}.get(kind, "all")
    chunks = process_functions(
        list(zip(funcs, hints, strict=True)), model_dir, preprocess, workers=1, parts=parts
    )
    return Batches(_ArraySplit(chunks, [0] * len(funcs)), kind, pad_id)  # type: ignore[arg-type]


class NeuralDetector:
    """A trained GNN or transformer with its preprocessing and decision threshold."""

    backend = "torch"

    def __init__(self, model_dir: str | Path, device: str | None = None) -> None:
        from streamguard_core.models.adapters import adapter_for, resolve_device
        from streamguard_core.models.registry import (
            check_model_files,
            model_errors,
            read_model_card,
        )

        self.dir = Path(model_dir)
        self.card = read_model_card(self.dir)
        self.kind: str = self.card["kind"]
        check_model_files(self.dir)  # before torch or transformers read a byte of it
        with model_errors(self.dir, self.kind):
            self.threshold = float(self.card["threshold"])
            self.preprocess = PreprocessConfig.model_validate(self.card.get("preprocess", {}))
            self.device = resolve_device(device)
            self.model, self.pad_id = adapter_for(self.kind).load(self.dir, self.device)
            self.model.to(self.device).eval()

    def predict_proba(
        self,
        funcs: list[str],
        language_hints: list[str | None] | None = None,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Probability of the vulnerable class per function, shape [n]."""
        data = function_batches(
            funcs, language_hints, self.dir, self.preprocess, self.kind, self.pad_id
        )
        return predict(self.kind, self.model, data, self.device, batch_size)
