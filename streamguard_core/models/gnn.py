"""Graph neural network classifiers over the preprocessed AST graphs (GCN, Devign-style GGNN and
relational GCN).

A graph comes from :mod:`streamguard_core.preprocess.parse` via
:func:`streamguard_core.preprocess.dataset.graph_dataset`: ``x`` holds node-type ids (the fixed
vocabulary of :func:`~streamguard_core.preprocess.parse.node_type_vocab`), ``node_token`` hashed
identifier-name buckets (0 = no name), ``edge_index`` directed edges and ``edge_type`` their
types (:data:`~streamguard_core.preprocess.parse.EDGE_TYPES`: AST, next sibling, next use, and
with data-flow preprocessing last write and def-use). Every architecture reads the graph in both
directions, so information flows from leaves to the root and back. GCN and GGNN treat all edges
alike; RGCN (Schlichtkrull et al., 2018) gives each (edge type, direction) its own weight.

Saved without pickle: weights as ``model.safetensors`` (or a ``model.pt`` state dict read with
``torch.load(weights_only=True)`` when safetensors is missing) and the settings as
``gnn_config.json``; :func:`load_gnn` rebuilds the exact model.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import GatedGraphConv, GCNConv, global_max_pool, global_mean_pool
from torch_geometric.utils import to_undirected

from streamguard_core.config import GNNConfig
from streamguard_core.io import atomic_write_json
from streamguard_core.preprocess.parse import EDGE_TYPES, vocab_fingerprint

GNN_CONFIG_FILE = "gnn_config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "model.pt"
NUM_CLASSES = 2
__all__ = ["GNNClassifier", "GNNConfig", "RelationalGraphConv", "build_gnn", "load_gnn", "save_gnn"]


class RelationalGraphConv(nn.Module):
    """One relational graph convolution: a self weight plus, per relation, the mean of the
    neighbours' states through that relation's weight (RGCN without basis decomposition).

    :math:`h_i' = W_0 h_i + b + \\sum_r \\frac{1}{|N_r(i)|} \\sum_{j \\in N_r(i)} W_r h_j`

    Written with plain ``index_add_`` (no torch-scatter or pyg-lib): neighbours are averaged per
    (node, relation) first, then all relations' weights apply in one matmul.

    Args:
        dim: input and output size.
        num_relations: number of relations ``R``.

    Shapes:
        - **input:** states :math:`(|\\mathcal{V}|, \\text{dim})`, ``edge_index``
          :math:`(2, |\\mathcal{E}|)` long (source row first), ``relation``
          :math:`(|\\mathcal{E}|)` long in ``[0, R)``
        - **output:** :math:`(|\\mathcal{V}|, \\text{dim})`
    """

    def __init__(self, dim: int, num_relations: int) -> None:
        super().__init__()
        if num_relations < 1:
            raise ValueError(f"num_relations must be >= 1, got {num_relations}")
        self.dim, self.num_relations = dim, num_relations
        self.weight = nn.Parameter(torch.empty(num_relations, dim, dim))
        self.root = nn.Linear(dim, dim)
        # Glorot per relation, shrunk by sqrt(R): a node sums up to R relation means, and at
        # plain Glorot the residual states doubled in norm per layer on Devign graphs (GCN: 1.3x)
        for weight in self.weight:
            nn.init.xavier_uniform_(weight, gain=num_relations**-0.5)

    def forward(self, h: Tensor, edge_index: Tensor, relation: Tensor) -> Tensor:
        """New node states (see the class docstring)."""
        n, r = h.size(0), self.num_relations
        out = self.root(h)
        if edge_index.size(1) == 0:
            return out
        src, dst = edge_index[0], edge_index[1]
        # mean of each node's neighbours per relation first ([N * R, d] slots), then every
        # relation's weight in one [N, R * d] x [R * d, d] matmul: the same sum, less work than
        # transforming every node by every weight and gathering per edge
        slot = dst * r + relation
        count = torch.bincount(slot, minlength=n * r).clamp_(min=1).to(h.dtype)
        mean = h.new_zeros(n * r, self.dim).index_add_(0, slot, h[src] / count[slot, None])
        return out + mean.view(n, r * self.dim) @ self.weight.view(r * self.dim, self.dim)


class GNNClassifier(nn.Module):
    """Node embeddings -> GCN, GGNN or RGCN message passing -> mean+max pooling -> MLP -> 2 logits.

    Args:
        cfg: the architecture.
        num_node_types: rows of the node-type embedding (``len(node_type_vocab())``).
        num_edge_types: edge types the RGCN has weights for (each in both directions, so
            ``2 * num_edge_types`` relations); ``len(EDGE_TYPES)`` by default. Unused by GCN/GGNN.

    Shapes:
        - **input:**
          node types ``x`` :math:`(|\\mathcal{V}|)` (or :math:`(|\\mathcal{V}|, 1)`) long,
          node tokens :math:`(|\\mathcal{V}|)` long (``0`` = none),
          edge indices :math:`(2, |\\mathcal{E}|)` long,
          edge types :math:`(|\\mathcal{E}|)` long (required by RGCN),
          batch vector :math:`(|\\mathcal{V}|)` long (graph id per node, or ``None`` for one
          graph)
        - **output:** logits :math:`(B, 2)`, ``B`` the number of graphs (class 1 = vulnerable)
    """

    def __init__(
        self, cfg: GNNConfig, num_node_types: int, num_edge_types: int = len(EDGE_TYPES)
    ) -> None:
        super().__init__()
        if num_node_types < 1:
            raise ValueError(f"num_node_types must be >= 1, got {num_node_types}")
        if num_edge_types < 1:
            raise ValueError(f"num_edge_types must be >= 1, got {num_edge_types}")
        self.cfg = cfg
        self.num_node_types = num_node_types
        self.num_edge_types = num_edge_types
        h = cfg.hidden_dim
        self.node_type_embedding = nn.Embedding(num_node_types, h)
        self.node_token_embedding: nn.Embedding | None = None
        self.input_projection: nn.Linear | None = None
        if cfg.node_token_dim > 0:
            self.node_token_embedding = nn.Embedding(
                cfg.node_token_buckets, cfg.node_token_dim, padding_idx=0
            )
            self.input_projection = nn.Linear(h + cfg.node_token_dim, h)
        self.convs = nn.ModuleList()
        self.relational_convs = nn.ModuleList()
        self.ggnn: GatedGraphConv | None = None
        if cfg.arch == "gcn":
            self.convs.extend(GCNConv(h, h) for _ in range(cfg.num_layers))
        elif cfg.arch == "rgcn":
            self.relational_convs.extend(
                RelationalGraphConv(h, 2 * num_edge_types) for _ in range(cfg.num_layers)
            )
        else:
            self.ggnn = GatedGraphConv(h, cfg.num_layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Sequential(
            nn.Linear(2 * h, h),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(h, NUM_CLASSES),
        )

    def embed_nodes(self, x: Tensor, node_token: Tensor | None) -> Tensor:
        """Initial node states.

        Shapes:
            - **input:** ``x`` :math:`(|\\mathcal{V}|)`, ``node_token`` :math:`(|\\mathcal{V}|)`
            - **output:** :math:`(|\\mathcal{V}|, \\text{hidden\\_dim})`
        """
        h = self.node_type_embedding(x.reshape(-1))
        if self.node_token_embedding is not None and self.input_projection is not None:
            if node_token is None:
                node_token = torch.zeros_like(x.reshape(-1))
            tok = self.node_token_embedding(node_token.reshape(-1))
            h = torch.relu(self.input_projection(torch.cat([h, tok], dim=-1)))
        return h

    def forward(
        self,
        x: Tensor,
        node_token: Tensor | None,
        edge_index: Tensor,
        batch: Tensor | None = None,
        *,
        num_graphs: int | None = None,
        edge_type: Tensor | None = None,
    ) -> Tensor:
        """Logits per graph.

        Args:
            x: node-type ids.
            node_token: hashed identifier buckets (``None`` = all zero).
            edge_index: directed edges; both directions are used.
            batch: graph id of each node (``None``: all nodes form one graph).
            num_graphs: number of graphs; defaults to ``batch.max() + 1``. Pass it when
                trailing graphs of a batch may be empty (their pooled vector is zero).
            edge_type: type id of each edge; RGCN needs it, GCN and GGNN ignore it.

        Shapes:
            - **input:** ``x``, ``node_token``, ``batch`` :math:`(|\\mathcal{V}|)`;
              ``edge_index`` :math:`(2, |\\mathcal{E}|)`; ``edge_type`` :math:`(|\\mathcal{E}|)`
            - **output:** :math:`(B, 2)`

        Raises:
            ValueError: RGCN without ``edge_type``, or with a type id it has no weight for.
        """
        num_nodes = x.size(0)
        if batch is None:
            batch = torch.zeros(num_nodes, dtype=torch.long, device=x.device)
            num_graphs = 1 if num_graphs is None else num_graphs
        h = self.embed_nodes(x, node_token)
        if len(self.relational_convs):
            edges, relation = self._relations(edge_index, edge_type)
            for rconv in self.relational_convs:
                h = h + self.dropout(torch.relu(rconv(h, edges, relation)))
        elif self.ggnn is not None:
            edges = to_undirected(edge_index, num_nodes=num_nodes)
            h = self.dropout(torch.relu(self.ggnn(h, edges)))
        else:
            edges = to_undirected(edge_index, num_nodes=num_nodes)
            for conv in self.convs:
                h = h + self.dropout(torch.relu(conv(h, edges)))
        pooled = torch.cat(
            [
                global_mean_pool(h, batch, size=num_graphs),
                global_max_pool(h, batch, size=num_graphs),
            ],
            dim=-1,
        )
        logits: Tensor = self.head(pooled)
        return logits

    def _relations(self, edge_index: Tensor, edge_type: Tensor | None) -> tuple[Tensor, Tensor]:
        """Edges in both directions [2, 2E] and their relation [2E]: type t forward is relation
        t, backward ``num_edge_types + t`` (a child reads its parent through other weights
        than a parent its child)."""
        if edge_type is None:
            raise ValueError(
                "arch rgcn needs edge_type for every edge (the graphs given have none)"
            )
        edge_type = edge_type.reshape(-1).long()
        if edge_type.numel() != edge_index.size(1):
            raise ValueError(
                f"edge_type has {edge_type.numel()} entries for {edge_index.size(1)} edges"
            )
        if edge_type.numel() and (
            int(edge_type.min()) < 0 or int(edge_type.max()) >= self.num_edge_types
        ):
            raise ValueError(
                f"edge type ids must be in [0, {self.num_edge_types}) (the model's "
                f"num_edge_types), got [{int(edge_type.min())}, {int(edge_type.max())}]"
            )
        edges = torch.cat([edge_index, edge_index.flip(0)], dim=1)
        relation = torch.cat([edge_type, edge_type + self.num_edge_types])
        return edges, relation

    def forward_data(self, data: Any) -> Tensor:
        """Logits for a PyG ``Data``/``Batch`` with ``x``, ``node_token``, ``edge_index`` (and
        ``edge_type``, which RGCN needs).

        Shapes:
            - **input:** a batch of ``B`` graphs (``batch`` attribute optional for one graph)
            - **output:** :math:`(B, 2)`
        """
        batch = getattr(data, "batch", None)
        num_graphs = getattr(data, "num_graphs", None) if batch is not None else 1
        return self(
            data.x,
            getattr(data, "node_token", None),
            data.edge_index,
            batch,
            num_graphs=num_graphs,
            edge_type=getattr(data, "edge_type", None),
        )

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def build_gnn(
    cfg: GNNConfig, num_node_types: int, num_edge_types: int = len(EDGE_TYPES)
) -> GNNClassifier:
    """A freshly initialised classifier (deterministic under ``torch.manual_seed``).

    Args:
        cfg: the architecture.
        num_node_types: ``len(node_type_vocab())`` of the data the model will read.
        num_edge_types: edge types the RGCN has weights for (``len(EDGE_TYPES)``).
    """
    if cfg.use_edge_types and cfg.arch != "rgcn":
        warnings.warn(
            f"GNNConfig.use_edge_types=True has no effect: the {cfg.arch} model ignores edge "
            "types (arch rgcn is the relational model)",
            UserWarning,
            stacklevel=2,
        )
    return GNNClassifier(cfg, num_node_types, num_edge_types)


def _have_safetensors() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def save_gnn(
    model: GNNClassifier, cfg: GNNConfig, num_node_types: int, directory: str | Path
) -> Path:
    """Write the weights (``model.safetensors``, else ``model.pt``) and ``gnn_config.json``.

    Returns:
        The weights file written.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if _have_safetensors():
        from safetensors.torch import save_file

        weights = out / SAFETENSORS_FILE
        save_file(state, str(weights))
        (out / TORCH_FILE).unlink(missing_ok=True)
    else:
        weights = out / TORCH_FILE
        torch.save(state, weights)
        (out / SAFETENSORS_FILE).unlink(missing_ok=True)
    atomic_write_json(
        out / GNN_CONFIG_FILE,
        {
            "config": cfg.model_dump(mode="json"),
            "num_node_types": num_node_types,
            "num_edge_types": model.num_edge_types,
            "weights": weights.name,
            "node_type_vocab_fingerprint": vocab_fingerprint(),
        },
    )
    return weights


def load_gnn(directory: str | Path, map_location: str | torch.device = "cpu") -> GNNClassifier:
    """Rebuild a model saved by :func:`save_gnn`, in eval mode (no pickle is executed).

    Raises:
        FileNotFoundError: no ``gnn_config.json`` or no weights file in ``directory``.
    """
    root = Path(directory)
    meta_path = root / GNN_CONFIG_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{root}: not a saved GNN (no {GNN_CONFIG_FILE})")
    meta = json.loads(meta_path.read_text())
    cfg = GNNConfig.model_validate(meta["config"])
    # saved before edge types mattered (3 AST types, no RGCN): the current count is harmless
    num_edge_types = int(meta.get("num_edge_types", len(EDGE_TYPES)))
    model = GNNClassifier(cfg, int(meta["num_node_types"]), num_edge_types)
    weights = root / meta.get("weights", SAFETENSORS_FILE)
    if not weights.exists():
        raise FileNotFoundError(f"{root}: weights file {weights.name} is missing")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights), device=str(map_location))
    else:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    model.load_state_dict(state, strict=True)
    model.to(map_location)
    return model.eval()
