"""Read a processed data set: records, token ids with offsets, and graphs as PyG ``Data``.

``ProcessedSplit`` needs only numpy; :class:`GraphDataset` (PyG) and the ``Data`` conversion
import torch lazily, so that data tooling does not pay torch's start-up cost.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.io import read_jsonl

METADATA_FILE = "preprocessing_metadata.json"


class ProcessedSplit:
    """One split (``train``/``valid``/``test``) of a directory written by ``preprocess``."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.split = split
        self.dir = self.root / split
        if not (self.dir / "records.jsonl").exists():
            raise FileNotFoundError(
                f"{self.dir}: no processed split here (expected records.jsonl, tokens.npz, "
                "graphs.npz written by `streamguard data preprocess`)"
            )

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """The kept records, in order, with their token/graph summaries."""
        return list(read_jsonl(self.dir / "records.jsonl"))

    @cached_property
    def _tokens(self) -> dict[str, np.ndarray]:
        with np.load(self.dir / "tokens.npz") as data:
            return {k: data[k] for k in data.files}

    @cached_property
    def _graphs(self) -> dict[str, np.ndarray]:
        with np.load(self.dir / "graphs.npz") as data:
            return {k: data[k] for k in data.files}

    def __len__(self) -> int:
        return len(self._graphs["y"])

    @property
    def labels(self) -> np.ndarray:
        """Labels, shape [num_functions]."""
        return self._graphs["y"].astype(np.int64)

    def input_ids(self, i: int) -> np.ndarray:
        """Token ids of function ``i`` including ``<s>``/``</s>``, shape [seq_len]."""
        ptr = self._tokens["ptr"]
        return self._tokens["input_ids"][ptr[i] : ptr[i + 1]]

    def offsets(self, i: int) -> np.ndarray:
        """Character offsets into ``records[i]['func']`` per token, shape [seq_len, 2]."""
        ptr = self._tokens["ptr"]
        return self._tokens["offsets"][ptr[i] : ptr[i + 1]]

    def graph_arrays(self, i: int) -> dict[str, np.ndarray]:
        """Node types [N], node tokens [N], edge index [2, E] (local), edge types [E]."""
        g = self._graphs
        n0, n1 = g["node_ptr"][i], g["node_ptr"][i + 1]
        e0, e1 = g["edge_ptr"][i], g["edge_ptr"][i + 1]
        return {
            "node_type": g["node_type"][n0:n1],
            "node_token": g["node_token"][n0:n1],
            "edge_index": g["edge_index"][:, e0:e1],
            "edge_type": g["edge_type"][e0:e1],
        }

    def graph(self, i: int) -> Any:
        """Function ``i`` as a ``torch_geometric.data.Data``.

        Attributes: ``x`` [N] long node-type ids, ``node_token`` [N] long hashed names,
        ``edge_index`` [2, E] long, ``edge_type`` [E] long, ``y`` [1] long, ``num_nodes``.
        """
        import torch
        from torch_geometric.data import Data

        a = self.graph_arrays(i)
        return Data(
            x=torch.from_numpy(a["node_type"].astype(np.int64)),
            node_token=torch.from_numpy(a["node_token"].astype(np.int64)),
            edge_index=torch.from_numpy(a["edge_index"].astype(np.int64)),
            edge_type=torch.from_numpy(a["edge_type"].astype(np.int64)),
            y=torch.tensor([int(self._graphs["y"][i])], dtype=torch.long),
            num_nodes=len(a["node_type"]),
        )


class DatasetConfigs(BaseModel):
    """The configurations a data set was built with."""

    model_config = ConfigDict(extra="allow")

    data: DataConfig
    preprocess: PreprocessConfig


class DatasetInputs(BaseModel):
    """The input files and the SHA-256 of their content."""

    model_config = ConfigDict(extra="allow")

    files: list[str] = Field(default_factory=list)
    sha256: str | dict[str, Any] | None = None


class DatasetCounts(BaseModel):
    """Record accounting: read == kept + rejected + deduplicated."""

    model_config = ConfigDict(extra="allow")

    read: int
    kept: int
    rejected: int
    deduplicated: int
    kept_per_split: dict[str, int]
    labels_per_split: dict[str, dict[str, int]] = Field(default_factory=dict)
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)


class DatasetMetadata(BaseModel):
    """``preprocessing_metadata.json``, typed: what every reader of a data set may rely on."""

    model_config = ConfigDict(extra="allow")

    format_version: int = 1
    counts: DatasetCounts
    split_strategy: str
    warnings: list[str] = Field(default_factory=list)
    ast: dict[str, Any] = Field(default_factory=dict)
    trimming: dict[str, Any] = Field(default_factory=dict)
    graph_stats: dict[str, dict[str, Any]] = Field(default_factory=dict)
    gnn_batch_size: dict[str, Any] = Field(default_factory=dict)
    tokenizer: dict[str, Any] = Field(default_factory=dict)
    inputs: DatasetInputs = Field(default_factory=DatasetInputs)
    config: DatasetConfigs
    workers: int | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    functions_per_s: float | None = None


class ProcessedDataset:
    """A directory written by ``streamguard data preprocess``: metadata, splits, vocabularies."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / METADATA_FILE).exists():
            raise FileNotFoundError(
                f"{self.root / METADATA_FILE}: not a processed data set (no {METADATA_FILE}; "
                "write one with `streamguard data preprocess`)"
            )

    @cached_property
    def metadata(self) -> DatasetMetadata:
        """The typed ``preprocessing_metadata.json``.

        Raises:
            ValueError: the file is not valid JSON or lacks a required entry (named).
        """
        path = self.root / METADATA_FILE
        try:
            return DatasetMetadata.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            raise ValueError(f"{path}: not a valid preprocessing metadata file: {exc}") from exc

    @property
    def max_seq_len(self) -> int:
        """The token budget the sequences were encoded with."""
        return self.metadata.config.preprocess.max_seq_len

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data: input file hashes and kept counts per split."""
        return {"inputs_sha256": self.metadata.inputs.sha256,
                "counts": self.metadata.counts.kept_per_split}  # fmt: skip

    def model_preprocess_config(self) -> dict[str, Any]:
        """The preprocessing settings a saved model re-applies to new functions (minus what
        only mattered for building the data set)."""
        return self.metadata.config.preprocess.model_dump(
            mode="json",
            exclude={"tokenizer", "workers", "quick_test", "executor", "dask_address"},
        )

    def has_split(self, name: str) -> bool:
        """True when the split exists and holds records."""
        return (
            self.metadata.counts.kept_per_split.get(name, 0) > 0
            and (self.root / name / "records.jsonl").exists()
        )

    def split(self, name: str) -> ProcessedSplit:
        """One split (``train``/``valid``/``test``)."""
        return ProcessedSplit(self.root, name)


def load_metadata(root: str | Path) -> dict[str, Any]:
    """The data set's ``preprocessing_metadata.json`` as a plain dict (JSON reports); typed
    access goes through :attr:`ProcessedDataset.metadata`."""
    return ProcessedDataset(root).metadata.model_dump(mode="json")


def graph_dataset(root: str | Path, split: str) -> Any:
    """A PyG ``Dataset`` over one split's graphs (see :meth:`ProcessedSplit.graph`)."""
    from torch_geometric.data import Dataset

    class GraphDataset(Dataset):
        """PyG view of a processed split; graphs are decoded on access, nothing is copied."""

        def __init__(self) -> None:
            super().__init__(root=None)
            self.processed = ProcessedSplit(root, split)

        def len(self) -> int:
            return len(self.processed)

        def get(self, idx: int) -> Any:
            return self.processed.graph(idx)

    return GraphDataset()
