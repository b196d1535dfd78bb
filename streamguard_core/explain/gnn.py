"""Line scores of a GNN detector: integrated gradients through the initial node states.

The function is turned into the graph the detector scores (a
:class:`~streamguard_core.preprocess.parse.GraphBuilder` with the model card's preprocessing
settings), built with ``keep_positions=True`` so that every node knows the byte it starts at.
Integrated gradients of the log-odds of "vulnerable" (``logit_1 - logit_0``) run over the
output of ``GNNClassifier.embed_nodes`` (node-type and identifier embeddings,
``[nodes, hidden]``) from an all-zero baseline, with Gauss-Legendre quadrature (Captum's
default); message passing, pooling and the head see the interpolated states. A node's score is
its attribution summed over the hidden dimension and lands on the line the node starts on: a
statement's own node on its first line, the function and block nodes on the line they open.
The root of a token-chain fallback graph (unparseable code) has no place and is left out; its
token nodes are placed like AST nodes.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamguard_core.explain.explainer import Explainer, check_scores, progress_bar
from streamguard_core.explain.ig import gauss_legendre, log_odds, torch_detector
from streamguard_core.explain.lines import char_scores_to_lines, chars_of_bytes
from streamguard_core.preprocess.parse import GraphBatch, GraphBuilder

MAX_BATCH_NODES = {"cpu": 8_192, "cuda": 500_000}
"""Node rows per forward pass (interpolation steps x nodes of the functions explained)."""
FUNCTIONS_PER_GRAPH_BATCH = 64


class GNNExplainer(Explainer):
    """Integrated gradients of a :class:`NeuralDetector` GNN, summed per line."""

    kind = "gnn"

    def __init__(self, detector: Any, ig_steps: int = 16) -> None:
        cfg = detector.preprocess
        self.detector = detector
        self.ig_steps = ig_steps
        self.builder = GraphBuilder(
            cfg.language, cfg.max_nodes, cfg.data_flow_edges, keep_positions=True
        )
        # The model with its first stage replaced by given node states: a shallow copy shares
        # every weight, and the original keeps working for other callers meanwhile.
        self._states_model = copy.copy(detector.model)
        self._states: list[torch.Tensor] = []
        self._states_model.embed_nodes = lambda x, node_token: self._states[0]
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, model_dir: Path, detector: Any | None, ig_steps: int) -> GNNExplainer:
        """Reuse ``detector``'s torch model when it has one, else load ``model_dir``."""
        return cls(torch_detector(model_dir, detector, cls.kind), ig_steps)

    def graphs(self, funcs: list[str]) -> GraphBatch:
        """The graphs ``predict_proba`` scores, with every node's start byte."""
        return self.builder.build_many(funcs)

    def _forward_from(self, states: torch.Tensor, graph: dict[str, torch.Tensor], num_graphs: int
                      ) -> torch.Tensor:  # fmt: skip
        self._states[:] = [states]
        try:
            logits: torch.Tensor = self._states_model(
                graph["x"], graph["node_token"], graph["edge_index"], graph["batch"],
                num_graphs=num_graphs, edge_type=graph["edge_type"],
            )  # fmt: skip
        finally:
            self._states.clear()
        return logits

    def node_attributions(self, graphs: GraphBatch) -> np.ndarray:
        """Integrated-gradients score of every node of ``graphs``, shape [total_nodes].

        Per graph they sum to about :meth:`endpoint_log_odds` input minus baseline
        (completeness).
        """
        det = self.detector
        device = torch.device(det.device)
        n_graphs, n_nodes = len(graphs.num_nodes), int(graphs.num_nodes.sum())
        if n_nodes == 0:
            return np.zeros(0)
        graph = _tensors(graphs, device)
        with torch.no_grad():
            states = det.model.embed_nodes(graph["x"], graph["node_token"]).detach()
        alphas, weights = gauss_legendre(self.ig_steps)
        budget = MAX_BATCH_NODES["cuda" if device.type == "cuda" else "cpu"]
        per_pass = max(1, budget // n_nodes)
        total_grad = torch.zeros_like(states)
        with self._lock, torch.enable_grad():
            for start in range(0, self.ig_steps, per_pass):
                a = torch.as_tensor(alphas[start : start + per_pass], dtype=states.dtype)
                w = torch.as_tensor(weights[start : start + per_pass], dtype=states.dtype)
                k = len(a)
                path = (a.to(device)[:, None, None] * states[None]).reshape(k * n_nodes, -1)
                path.requires_grad_(True)
                logits = self._forward_from(path, _repeat(graph, k, n_nodes, n_graphs),
                                            k * n_graphs)  # fmt: skip
                (grad,) = torch.autograd.grad(log_odds(logits).sum(), path)
                total_grad += (w.to(device)[:, None, None] * grad.view(k, n_nodes, -1)).sum(0)
        # baseline 0: attribution = (states - 0) x average gradient along the path
        return (states * total_grad).sum(-1).double().cpu().numpy()

    def endpoint_log_odds(self, graphs: GraphBatch) -> tuple[np.ndarray, np.ndarray]:
        """The log-odds of every graph at its node states and at the all-zero baseline (the
        two ends of the integration path), shapes ([n_graphs], [n_graphs])."""
        det = self.detector
        graph = _tensors(graphs, torch.device(det.device))
        with self._lock, torch.no_grad():
            states = det.model.embed_nodes(graph["x"], graph["node_token"])
            n = len(graphs.num_nodes)
            ends = [log_odds(self._forward_from(s, graph, n)) for s in (states, 0 * states)]
        at_input, at_baseline = (e.double().cpu().numpy() for e in ends)
        return at_input, at_baseline

    def line_scores(self, funcs: list[str], progress: bool = False) -> list[np.ndarray]:
        """Per-line sums of the node attributions."""
        out: list[np.ndarray] = []
        with progress_bar(len(funcs), progress, "explain") as update:
            for start in range(0, len(funcs), FUNCTIONS_PER_GRAPH_BATCH):
                batch = funcs[start : start + FUNCTIONS_PER_GRAPH_BATCH]
                for sub in _by_nodes(self.graphs(batch), batch, self._group_nodes()):
                    graphs, texts = sub
                    scores = self.node_attributions(graphs)
                    assert graphs.node_start is not None
                    first = 0
                    for text, n in zip(texts, graphs.num_nodes.tolist(), strict=True):
                        starts = chars_of_bytes(text, graphs.node_start[first : first + n])
                        spans = np.stack([starts, starts + 1], axis=1)
                        spans[starts < 0] = 0  # no place (fallback root): ignored
                        out.append(char_scores_to_lines(text, spans, scores[first : first + n]))
                        first += n
                update(len(batch))
        return check_scores(funcs, out)

    def _group_nodes(self) -> int:
        device = torch.device(self.detector.device)
        return max(1, MAX_BATCH_NODES["cuda" if device.type == "cuda" else "cpu"] // self.ig_steps)


def _tensors(graphs: GraphBatch, device: torch.device) -> dict[str, torch.Tensor]:
    """Model inputs of a batch of graphs (global node indices, graph id per node)."""
    counts = graphs.num_nodes.astype(np.int64)
    offsets = np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), graphs.num_edges)
    edge_index = graphs.edge_index.astype(np.int64) + offsets[None, :]
    return {
        "x": torch.from_numpy(graphs.node_type.astype(np.int64)).to(device),
        "node_token": torch.from_numpy(graphs.node_token.astype(np.int64)).to(device),
        "edge_index": torch.from_numpy(edge_index).to(device),
        "edge_type": torch.from_numpy(graphs.edge_type.astype(np.int64)).to(device),
        "batch": torch.from_numpy(np.repeat(np.arange(len(counts)), counts)).to(device),
    }


def _repeat(graph: dict[str, torch.Tensor], k: int, n_nodes: int, n_graphs: int
            ) -> dict[str, torch.Tensor]:  # fmt: skip
    """``k`` copies of a batch of graphs as one batch (copy ``j``: one interpolation step)."""
    if k == 1:
        return graph
    steps = torch.arange(k, device=graph["x"].device)
    n_edges = graph["edge_index"].size(1)
    return {
        "x": graph["x"].repeat(k),
        "node_token": graph["node_token"].repeat(k),
        "edge_index": (graph["edge_index"].repeat(1, k)
                       + (steps * n_nodes).repeat_interleave(n_edges)[None]),
        "edge_type": graph["edge_type"].repeat(k),
        "batch": (graph["batch"].repeat(k) + (steps * n_graphs).repeat_interleave(n_nodes)),
    }  # fmt: skip


def _by_nodes(graphs: GraphBatch, texts: list[str], max_nodes: int
              ) -> list[tuple[GraphBatch, list[str]]]:  # fmt: skip
    """Split a batch of graphs into runs of at most ``max_nodes`` nodes (at least one graph)."""
    assert graphs.node_start is not None
    groups: list[tuple[GraphBatch, list[str]]] = []
    node_ptr = np.concatenate([[0], np.cumsum(graphs.num_nodes)]).astype(np.int64)
    edge_ptr = np.concatenate([[0], np.cumsum(graphs.num_edges)]).astype(np.int64)
    first = 0
    while first < len(texts):
        last = first + 1
        while last < len(texts) and node_ptr[last + 1] - node_ptr[first] <= max_nodes:
            last += 1
        n0, n1, e0, e1 = node_ptr[first], node_ptr[last], edge_ptr[first], edge_ptr[last]
        groups.append((GraphBatch(
            graphs.node_type[n0:n1], graphs.node_token[n0:n1], graphs.num_nodes[first:last],
            graphs.edge_index[:, e0:e1], graphs.edge_type[e0:e1], graphs.num_edges[first:last],
            graphs.info[first:last], graphs.node_start[n0:n1],
        ), texts[first:last]))  # fmt: skip
        first = last
    return groups
