"""Read a processed data set: records, token ids with offsets, and graphs as PyG ``Data``.

``ProcessedSplit`` needs only numpy; :class:`GraphDataset` (PyG) and the ``Data`` conversion
import torch lazily, so that data tooling does not pay torch's start-up cost.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

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


def load_metadata(root: str | Path) -> dict[str, Any]:
    """The data set's ``preprocessing_metadata.json``."""
    path = Path(root) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a processed data set (no {METADATA_FILE})")
    return json.loads(path.read_text())


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
