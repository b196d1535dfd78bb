"""One adapter per neural model kind: build, collate, forward, save and load.

The training loop, the LR finder, preflight and :class:`~streamguard_core.models.neural.
NeuralDetector` call these instead of switching on ``kind``; a new kind (fusion, later) is one
more adapter registered in :data:`ADAPTERS`.
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from streamguard_core.config import TINY, GNNConfig, TransformerConfig
from streamguard_core.training.lr_finder import DEFAULT_LR

TINY_TRANSFORMER_LR = 5e-4
"""2.5e-5 is a fine-tuning rate for a pretrained CodeBERT; a RoBERTa trained from scratch barely
moves at it (Juliet: 5e-4 reached test F1 0.93)."""


class NeuralAdapter(ABC):
    """What the training code needs to know about one neural model kind."""

    kind: ClassVar[str]
    size_unit: ClassVar[str]
    """What :meth:`sizes` counts (preflight's memory test takes the largest examples)."""

    def default_lr(self, cfg: Any) -> tuple[float, str]:
        """The learning rate used when neither ``train.lr`` nor the LR finder sets one."""
        return DEFAULT_LR[self.kind], "default"

    @abstractmethod
    def build(self, cfg: Any, data_dir: Path) -> tuple[torch.nn.Module, int]:
        """A freshly initialised model for the data set and the padding id its batches use."""
        ...

    @abstractmethod
    def collate(self, split: Any, indices: np.ndarray, pad_id: int, cache: dict[str, Any]
                ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Input tensors (CPU) of the examples at ``indices``, in that order."""
        ...

    @abstractmethod
    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, 2]``."""
        ...

    @abstractmethod
    def sizes(self, split: Any) -> np.ndarray:
        """Per-example size in :attr:`size_unit`, shape [n]."""
        ...

    @abstractmethod
    def save(self, model: torch.nn.Module, cfg: Any, data_dir: Path, out: Path) -> None:
        """Weights in the kind's own format (no pickle) into ``out`` (exists, empty)."""
        ...

    @abstractmethod
    def load(self, model_dir: Path, device: torch.device) -> tuple[torch.nn.Module, int]:
        """The saved model (eval mode, on ``device``) and its padding id."""
        ...


class GNNAdapter(NeuralAdapter):
    kind = "gnn"
    size_unit = "graph nodes"

    def build(self, cfg: GNNConfig, data_dir: Path) -> tuple[torch.nn.Module, int]:
        from streamguard_core.models.gnn import build_gnn
        from streamguard_core.preprocess.parse import EDGE_TYPES

        types = json.loads((data_dir / "node_types.json").read_text())
        data_edge_types = tuple(types.get("edge_types", EDGE_TYPES))
        if data_edge_types != EDGE_TYPES[: len(data_edge_types)]:
            raise ValueError(
                f"{data_dir}: edge types {list(data_edge_types)} do not match this version's "
                f"{list(EDGE_TYPES)}; preprocess the data again"
            )
        return build_gnn(cfg, len(types["node_types"])), 0

    def collate(self, split: Any, indices: np.ndarray, pad_id: int, cache: dict[str, Any]
                ) -> dict[str, torch.Tensor]:  # fmt: skip
        from torch_geometric.data import Batch

        if "graphs" not in cache:  # decoded once per split: epochs revisit every graph
            cache["graphs"] = [split.graph(i) for i in range(len(split.labels))]
        batch = Batch.from_data_list([cache["graphs"][i] for i in indices])
        out = {"x": batch.x, "node_token": batch.node_token, "edge_index": batch.edge_index,
               "batch": batch.batch}  # fmt: skip
        edge_type = getattr(batch, "edge_type", None)
        if edge_type is not None:  # RGCN reads it; graphs built without types have none
            out["edge_type"] = edge_type
        return out

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from streamguard_core.models.gnn import GNNClassifier

        args = (batch["x"], batch["node_token"], batch["edge_index"], batch["batch"])
        # the edge types reach the models that take them (also inside DDP's wrapper: .module)
        if isinstance(getattr(model, "module", model), GNNClassifier):
            return model(*args, edge_type=batch.get("edge_type"))
        return model(*args)

    def sizes(self, split: Any) -> np.ndarray:
        return np.diff(split._graphs["node_ptr"]).astype(np.int64)

    def save(self, model: torch.nn.Module, cfg: GNNConfig, data_dir: Path, out: Path) -> None:
        from streamguard_core.models.gnn import GNNClassifier, save_gnn

        assert isinstance(model, GNNClassifier)
        save_gnn(model, cfg, model.num_node_types, out)
        shutil.copy(data_dir / "node_types.json", out / "node_types.json")

    def load(self, model_dir: Path, device: torch.device) -> tuple[torch.nn.Module, int]:
        from streamguard_core.models.gnn import load_gnn

        return load_gnn(model_dir, map_location=device), 0


class TransformerAdapter(NeuralAdapter):
    kind = "transformer"
    size_unit = "tokens"

    def default_lr(self, cfg: TransformerConfig) -> tuple[float, str]:
        if cfg.model_name_or_path == TINY:
            return TINY_TRANSFORMER_LR, "default (tiny transformer from scratch)"
        return DEFAULT_LR[self.kind], "default (pretrained fine-tuning)"

    def build(self, cfg: TransformerConfig, data_dir: Path) -> tuple[torch.nn.Module, int]:
        from streamguard_core.models.transformer import build_transformer_classifier
        from streamguard_core.preprocess.tokens import load_tokenizer

        if cfg.max_seq_len is None:  # the data set's token budget
            from streamguard_core.preprocess.dataset import ProcessedDataset

            cfg = cfg.model_copy(update={"max_seq_len": ProcessedDataset(data_dir).max_seq_len})
        tokenizer = load_tokenizer(data_dir / "tokenizer")
        model = build_transformer_classifier(cfg, data_dir / "tokenizer")
        return model, int(tokenizer.pad_token_id)

    def collate(self, split: Any, indices: np.ndarray, pad_id: int, cache: dict[str, Any]
                ) -> dict[str, torch.Tensor]:  # fmt: skip
        from streamguard_core.models.transformer import pad_input_ids

        return pad_input_ids([split.input_ids(int(i)) for i in indices], pad_id)

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def sizes(self, split: Any) -> np.ndarray:
        return np.asarray([len(split.input_ids(i)) for i in range(len(split.labels))])

    def save(self, model: torch.nn.Module, cfg: TransformerConfig, data_dir: Path, out: Path
             ) -> None:  # fmt: skip
        model.save_pretrained(str(out))  # type: ignore[operator]

    def load(self, model_dir: Path, device: torch.device) -> tuple[torch.nn.Module, int]:
        from transformers import AutoModelForSequenceClassification

        from streamguard_core.preprocess.tokens import load_tokenizer

        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
        pad_id = int(load_tokenizer(model_dir).pad_token_id)
        return model.to(device).eval(), pad_id


ADAPTERS: dict[str, NeuralAdapter] = {a.kind: a for a in (GNNAdapter(), TransformerAdapter())}


def adapter_for(kind: str) -> NeuralAdapter:
    """The adapter of a neural kind.

    Raises:
        ValueError: ``kind`` has no neural adapter (the baseline is not a torch model).
    """
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(
            f"not a neural model kind: {kind!r} (neural kinds: {sorted(ADAPTERS)})"
        ) from None


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``cuda``/``cpu``/``cuda:1`` as given; None: CUDA when available, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
