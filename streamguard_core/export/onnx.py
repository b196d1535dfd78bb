"""Export a saved GNN or transformer detector to ONNX, and check it against torch.

The exported graph is the model's forward pass from collated tensors to the **probability of the
vulnerable class** (softmax of the two logits, class 1), float32 ``[batch]``: probabilities make
the torch/onnxruntime parity a direct comparison of what the detector reports. Preprocessing
(tree-sitter, tokens, graphs, collation) stays in Python and is shared with the torch detector.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + ONNX Script, the default and
the supported path since torch 2.9; the TorchScript exporter is deprecated) with
``dynamic_shapes`` (``torch.export.Dim``), so the batch, sequence-length, node and edge axes are
symbolic. Inputs, per kind:

- transformer: ``input_ids`` and ``attention_mask``, int64 ``[batch, length]``.
- gnn: ``x`` and ``node_token`` int64 ``[nodes]``, ``edges`` int64 ``[2, edges]``, ``batch``
  int64 ``[nodes]`` (graph id per node), ``graph_sizes`` int64 ``[graphs]`` (nodes per graph; its
  length is the number of graphs, which the pooling needs as a shape, not a value), and for
  ``arch: rgcn`` ``relations`` int64 ``[edges]``. ``edges`` are the *message-passing* edges, not
  the raw AST edges: for gcn/ggnn ``to_undirected(edge_index)`` (both directions, duplicates
  merged), for rgcn both directions with their relation ids (``GNNClassifier._relations``).
  Those two steps have data-dependent shapes or checks that ``torch.export`` cannot trace, so
  :func:`gnn_feeds` runs them in torch (the model's own functions) before the session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal
from unittest import mock

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from streamguard_core.data.loaders import DataError
from streamguard_core.io import atomic_write_json
from streamguard_core.models.registry import base_model_dirs, read_model_card

ONNX_FILE = "model.onnx"
INFO_FILE = "onnx_export.json"
OUTPUT_NAME = "probability"
PARITY_TOLERANCE = 1e-4
"""Max |p_onnx - p_torch| accepted at export: float32 kernels differ in summation order (1e-7
to 1e-6 on probabilities in practice); 1e-4 is far below any threshold decision's resolution."""
PARITY_BATCH_SIZE = 3
"""Batch size of the onnxruntime side of the parity check: the export example has 4 functions
and torch scores them 32 at a time, so this checks other batch sizes and padded lengths."""
EXAMPLE_FUNCTIONS = 4
NEURAL_KINDS = ("gnn", "transformer")


class OnnxExportError(DataError):
    """A model directory that cannot be exported, or an export that failed its parity check."""


class OnnxParity(BaseModel):
    """Torch vs onnxruntime on the same functions, measured right after the export."""

    model_config = ConfigDict(extra="forbid")

    functions: int = Field(description="Functions scored by both backends.")
    source: str = Field(description="Where the functions came from.")
    onnx_batch_size: int = Field(description="onnxruntime batch size (torch used 32).")
    max_abs_diff: float = Field(description="max |p_onnx - p_torch| over the functions.")
    tolerance: float = Field(description="The export fails above this.")


class GraphFacts(BaseModel):
    """What the onnxruntime side needs to build a GNN's inputs without the torch model."""

    model_config = ConfigDict(extra="forbid")

    edges: Literal["undirected", "relational"] | None = Field(
        None,
        description="gnn: undirected (gcn/ggnn: to_undirected edges) or relational (rgcn: both "
        "directions plus relation ids); None for the transformer.",
    )
    num_edge_types: int | None = Field(None, description="rgcn: edge types the model knows.")


class OnnxExportInfo(BaseModel):
    """``onnx_export.json``: how ``model.onnx`` was made and what it expects."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = Field(1, description="Version of this file's layout.")
    kind: Literal["gnn", "transformer"] = Field(description="The model kind exported.")
    onnx_file: str = Field(ONNX_FILE, description="The ONNX file, beside this one.")
    opset: int = Field(description="Default-domain opset of the exported graph.")
    exporter: str = Field(description="The export call.")
    torch_version: str = Field(description="torch that exported it.")
    onnx_version: str = Field(description="onnx at export.")
    onnxscript_version: str = Field(description="onnxscript at export.")
    onnxruntime_version: str | None = Field(description="onnxruntime the parity ran on.")
    inputs: list[str] = Field(description="Graph input names, in order.")
    input_axes: dict[str, list[str]] = Field(
        description="Per input, its axes (symbolic names, or the fixed size as a string)."
    )
    output: str = Field(OUTPUT_NAME, description="The output name.")
    output_description: str = Field(
        "probability of the vulnerable class, float32 [batch]",
        description="What the output holds.",
    )
    pad_id: int = Field(description="Padding id of the collated batches (transformer tokens).")
    graph: GraphFacts = Field(default_factory=GraphFacts, description="GNN input details.")
    model_files: dict[str, int] = Field(
        description="Size in bytes of every model file the export was made from (weights, "
        "configs, tokenizer); the runtime refuses an export whose files have changed."
    )
    parity: OnnxParity = Field(description="Torch vs onnxruntime right after the export.")
    export_seconds: float = Field(description="Wall time of the export and its check.")
    exported_at: str = Field(description="UTC time of the export (ISO 8601).")


_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".bin")
_ARCHITECTURE_FILES = ("config.json", "gnn_config.json", "node_types.json")
_TOKENIZER_PREFIXES = ("tokenizer", "vocab", "merges", "special_tokens")


def model_files(model_dir: Path) -> dict[str, int]:
    """Sizes of the files an export depends on: the weights, the architecture and node types,
    the tokenizer. Not the model card or bookkeeping files: re-tuning the threshold or
    registering the model (``registration.json``) changes nothing the graph computes."""
    return {
        p.name: p.stat().st_size
        for p in sorted(model_dir.iterdir())
        if p.is_file()
        and (
            p.suffix in _WEIGHT_SUFFIXES
            or p.name in _ARCHITECTURE_FILES
            or p.name.startswith(_TOKENIZER_PREFIXES)
        )
    }


def read_export_info(path: Path) -> OnnxExportInfo:
    """``onnx_export.json`` as its typed model.

    Raises:
        OnnxExportError: missing, not JSON, or not the expected fields.
    """
    if not path.exists():
        raise OnnxExportError(f"{path}: missing (write it with `streamguard export onnx`)")
    try:
        return OnnxExportInfo.model_validate(json.loads(path.read_text()))
    except (ValueError, OSError) as exc:
        raise OnnxExportError(
            f"{path}: not a valid export record ({str(exc).splitlines()[0][:200]}); "
            "export the model again with `streamguard export onnx`"
        ) from None


# --------------------------------------------------------------------------- per-kind graphs


class _TransformerProbability(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Shapes: ``[B, L]`` ids and mask -> ``[B]`` probabilities."""
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return torch.softmax(logits.float(), dim=-1)[:, 1]


class _GNNProbability(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        x: Tensor,
        node_token: Tensor,
        edges: Tensor,
        batch: Tensor,
        graph_sizes: Tensor,
        relations: Tensor | None = None,
    ) -> Tensor:
        """Shapes: nodes ``[N]``, message edges ``[2, E]`` (relations ``[E]``), graph sizes
        ``[B]`` -> ``[B]`` probabilities."""
        with _precomputed_edges(self.model, edges, relations):
            logits = self.model(x, node_token, edges, batch, num_graphs=graph_sizes.shape[0],
                                edge_type=relations)  # fmt: skip
        return torch.softmax(logits.float(), dim=-1)[:, 1]


@contextlib.contextmanager
def _precomputed_edges(model: nn.Module, edges: Tensor, relations: Tensor | None) -> Iterator[None]:
    """While tracing, the model's edge preprocessing returns the graph inputs instead (see the
    module docstring: :func:`gnn_feeds` runs those steps in torch)."""
    from streamguard_core.models import gnn

    with (
        mock.patch.object(gnn, "to_undirected", lambda edge_index, num_nodes=None: edges),
        mock.patch.object(model, "_relations", lambda edge_index, edge_type: (edges, relations)),
    ):
        yield


class GraphSpec(ABC):
    """How one neural kind becomes an ONNX graph and how its inputs are fed."""

    kind: ClassVar[str]

    @abstractmethod
    def facts(self, model: nn.Module) -> GraphFacts:
        """What :meth:`feeds` needs to know about ``model``."""

    @abstractmethod
    def module(self, model: nn.Module) -> nn.Module:
        """``model`` taking the :meth:`input_axes` inputs in order, returning probabilities."""

    @abstractmethod
    def input_axes(self, facts: GraphFacts) -> dict[str, list[str]]:
        """Input names in order, with their axes (symbolic names or fixed sizes)."""

    @abstractmethod
    def feeds(self, batch: dict[str, Tensor], n: int, facts: GraphFacts) -> dict[str, Tensor]:
        """The graph inputs of a collated batch of ``n`` functions (adapter ``collate`` output)."""


class TransformerSpec(GraphSpec):
    kind = "transformer"

    def facts(self, model: nn.Module) -> GraphFacts:
        return GraphFacts()

    def module(self, model: nn.Module) -> nn.Module:
        return _TransformerProbability(model)

    def input_axes(self, facts: GraphFacts) -> dict[str, list[str]]:
        return {"input_ids": ["batch", "length"], "attention_mask": ["batch", "length"]}

    def feeds(self, batch: dict[str, Tensor], n: int, facts: GraphFacts) -> dict[str, Tensor]:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class GNNSpec(GraphSpec):
    kind = "gnn"

    def facts(self, model: nn.Module) -> GraphFacts:
        from streamguard_core.models.gnn import GNNClassifier

        if not isinstance(model, GNNClassifier):
            raise OnnxExportError(f"not a GNNClassifier: {type(model).__name__}")
        if model.relational_convs:
            return GraphFacts(edges="relational", num_edge_types=model.num_edge_types)
        return GraphFacts(edges="undirected")

    def module(self, model: nn.Module) -> nn.Module:
        return _GNNProbability(model)

    def input_axes(self, facts: GraphFacts) -> dict[str, list[str]]:
        axes = {"x": ["nodes"], "node_token": ["nodes"], "edges": ["2", "edges"],
                "batch": ["nodes"], "graph_sizes": ["graphs"]}  # fmt: skip
        if facts.edges == "relational":
            axes["relations"] = ["edges"]
        return axes

    def feeds(self, batch: dict[str, Tensor], n: int, facts: GraphFacts) -> dict[str, Tensor]:
        return gnn_feeds(batch, n, facts)


SPECS: dict[str, GraphSpec] = {s.kind: s for s in (TransformerSpec(), GNNSpec())}


def gnn_feeds(batch: dict[str, Tensor], n: int, facts: GraphFacts) -> dict[str, Tensor]:
    """A collated GNN batch of ``n`` graphs as the exported graph's inputs.

    Shapes:
        - **input:** ``x``, ``node_token``, ``batch`` ``[N]``; ``edge_index`` ``[2, E]``;
          ``edge_type`` ``[E]``
        - **output:** ``edges`` ``[2, E']`` (and ``relations`` ``[E']``), ``graph_sizes`` ``[n]``

    Raises:
        ValueError: rgcn edges without types, or type ids the model has no weights for.
    """
    from streamguard_core.models import gnn

    out = {
        "x": batch["x"].reshape(-1),
        "node_token": batch["node_token"].reshape(-1),
        "batch": batch["batch"],
        "graph_sizes": torch.bincount(batch["batch"], minlength=n),
    }
    if facts.edges == "relational":
        # the model's own relation mapping and type-id checks; it reads only num_edge_types
        owner = SimpleNamespace(num_edge_types=facts.num_edge_types)
        edges, relations = gnn.GNNClassifier._relations(
            owner,  # type: ignore[arg-type]
            batch["edge_index"],
            batch.get("edge_type"),
        )
        out["relations"] = relations
    else:
        edges = gnn.to_undirected(batch["edge_index"], num_nodes=int(out["x"].shape[0]))
    out["edges"] = edges
    return out


def _dims(axes: dict[str, list[str]]) -> dict[str, dict[int, Any]]:
    """``torch.export`` dynamic shapes for ``axes`` (one ``Dim`` per symbolic name)."""
    dims: dict[str, Any] = {}
    shapes: dict[str, dict[int, Any]] = {}
    for name, names in axes.items():
        shapes[name] = {}
        for axis, label in enumerate(names):
            if not label.isdigit():
                shapes[name][axis] = dims.setdefault(label, torch.export.Dim(label))
    return shapes


def _onnx_bincount(self: Any, weights: Any = None, minlength: Any = 0) -> Any:
    """``aten::bincount`` for a symbolic ``minlength`` (rgcn: nodes x relations), which the
    ONNX Script library's version takes only as a Python int; same ScatterElements scheme."""
    from onnxscript import INT64, opset18

    op: Any = opset18  # its typed stubs reject the traced values' union types

    if weights is not None:
        raise NotImplementedError("aten::bincount with weights is not exported")
    self = op.Cast(self, to=INT64.dtype)
    axis_0 = op.Constant(value_ints=[0])
    data_max = op.Unsqueeze(
        op.ReduceMax(op.Concat(self, op.Constant(value_ints=[0]), axis=0), keepdims=0), axis_0
    )
    non_empty = op.Unsqueeze(
        op.Cast(op.Greater(op.Size(self), op.Constant(value_int=0)), to=INT64.dtype), axis_0
    )
    depth = op.Mul(op.Add(data_max, op.Constant(value_ints=[1])), non_empty)
    if isinstance(minlength, int):
        if minlength > 0:
            depth = op.Max(depth, op.Constant(value_ints=[minlength]))
    else:
        length = op.Reshape(op.Cast(minlength, to=INT64.dtype), op.Constant(value_ints=[1]))
        depth = op.Max(depth, length)
    zeros = op.Expand(op.Constant(value_int=0), depth)
    ones = op.Expand(op.Constant(value_int=1), op.Shape(self))
    return op.ScatterElements(zeros, self, ones, axis=0, reduction="add")


def _row_ids(index: Any, src: Any) -> Any:
    """``[E, 1]`` row ids when a dim-0 scatter's ``index`` holds one id per row of ``src``: a
    1-D index, or a ``[E, 1]`` index expanded to ``src``'s shape (what PyG's ``scatter``
    builds); None otherwise."""
    from onnxscript import opset18

    op: Any = opset18
    if index.shape is None or src.shape is None:
        return None
    if len(index.shape) == 1 and len(src.shape) == 1:
        return op.Unsqueeze(index, op.Constant(value_ints=[1]))
    producer = index.producer()
    if producer is None or producer.op_type != "Expand" or index.shape != src.shape:
        return None
    rows = producer.inputs[0]
    if rows is None or rows.shape is None or len(rows.shape) != 2 or rows.shape[1] != 1:
        return None
    return rows


def _onnx_scatter_add(self: Any, dim: int, index: Any, src: Any) -> Any:
    """``aten::scatter_add`` as ``ScatterND`` when the index is per row (see :func:`_row_ids`):
    onnxruntime's CPU ``ScatterElements`` costs ~45 ns per element, 13-28x ``ScatterND`` on
    message-passing shapes ([87k, 64]: 571 ms vs 43 ms), and it was 90% of a GCN's time."""
    from onnxscript import opset18

    op: Any = opset18
    rows = _row_ids(index, src) if dim == 0 else None
    if rows is None:
        return op.ScatterElements(self, index, src, axis=dim, reduction="add")
    return op.ScatterND(self, rows, src, reduction="add")


_ONNX_REDUCTIONS = {"sum": "add", "prod": "mul", "amin": "min", "amax": "max"}


def _onnx_scatter_reduce(
    self: Any, dim: int, index: Any, src: Any, reduce: str, include_self: bool = True
) -> Any:
    """``aten::scatter_reduce.two`` as ``ScatterND`` when the index is per row (as
    :func:`_onnx_scatter_add`; PyG's max pooling), else the ONNX Script library's version."""
    import onnx_ir as ir
    from onnxscript import opset18
    from onnxscript.function_libs.torch_lib.ops.core import aten_scatter_reduce

    op: Any = opset18
    rows = _row_ids(index, src) if dim == 0 else None
    dtype = src.dtype or self.dtype
    if rows is None or reduce not in _ONNX_REDUCTIONS or dtype != ir.DataType.FLOAT:
        return aten_scatter_reduce(self, dim, index, src, reduce, include_self=include_self)
    reduction = _ONNX_REDUCTIONS[reduce]
    if not include_self:
        # ONNX always reduces with the existing value: first overwrite the targeted rows with
        # the reduction's neutral value (the library's scheme, row-wise)
        neutrals: dict[str, tuple[float, str]] = {
            "max": (float(np.finfo(np.float32).min), "min"),
            "min": (float(np.finfo(np.float32).max), "max"),
            "add": (0.0, "none"),
            "mul": (1.0, "none"),
        }
        neutral, init = neutrals[reduction]
        fill = op.ConstantOfShape(op.Shape(src), value=ir.tensor([neutral], dtype=dtype))
        self = op.ScatterND(self, rows, fill, reduction=init)
    return op.ScatterND(self, rows, src, reduction=reduction)


CUSTOM_TRANSLATIONS: dict[Any, Any] = {
    torch.ops.aten.bincount.default: _onnx_bincount,
    torch.ops.aten.scatter_add.default: _onnx_scatter_add,
    torch.ops.aten.scatter_reduce.two: _onnx_scatter_reduce,
}


# --------------------------------------------------------------------------- export


def parity_functions() -> tuple[list[str], str]:
    """Functions for the export example and the parity check: one vulnerable/fixed pair per
    CWE of the embedded synthetic generator (deterministic, offline, varied lengths)."""
    from streamguard_core.data.synthetic import generate_synthetic

    return [r.func for r in generate_synthetic(pairs_per_cwe=1, seed=0)], "embedded synthetic"


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress logging and deprecation chatter off (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _opset_of(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def export_onnx(
    model_dir: str | Path,
    output: str | Path | None = None,
    opset: int | None = None,
    functions: list[str] | None = None,
) -> OnnxExportInfo:
    """Export the GNN or transformer saved in ``model_dir`` and check it against torch.

    Writes ``output`` (default ``model_dir/model.onnx``; weights over 1.5 GB go to
    ``<output>.data``) and ``onnx_export.json`` beside it, atomically, only after the parity
    check passed.

    Args:
        model_dir: a saved neural detector (``model_card.json`` kind gnn or transformer).
        output: the ONNX file to write.
        opset: ONNX opset (default: torch's; below 18 the exporter converts down, may fail).
        functions: function texts for the example batch and the parity check (default: the
            embedded synthetic pairs, :func:`parity_functions`); at least 5.

    Raises:
        OnnxExportError: not a neural model, the exporter failed, or the parity exceeds
            :data:`PARITY_TOLERANCE`.
    """
    from streamguard_core.export.runtime import OnnxDetector
    from streamguard_core.models.neural import NeuralDetector, function_batches

    root = Path(model_dir)
    kind = read_model_card(root)["kind"]  # a DataError naming the file when it is no card
    if kind not in NEURAL_KINDS:
        raise OnnxExportError(f"{root}: kind {kind!r} is not a neural model (gnn, transformer)")
    source = "given"
    if functions is None:
        functions, source = parity_functions()
    if len(functions) <= EXAMPLE_FUNCTIONS:
        raise ValueError(f"the parity check needs more than {EXAMPLE_FUNCTIONS} functions")
    out = Path(output) if output is not None else root / ONNX_FILE
    started = time.perf_counter()
    detector = NeuralDetector(root, device="cpu")
    spec = SPECS[kind]
    facts = spec.facts(detector.model)
    axes = spec.input_axes(facts)
    data = function_batches(functions, None, root, detector.preprocess, kind, detector.pad_id)
    example_batch = data.make(np.arange(EXAMPLE_FUNCTIONS), torch.device("cpu"))
    feeds = spec.feeds(example_batch, EXAMPLE_FUNCTIONS, facts)
    example = tuple(feeds[name] for name in axes)
    module = spec.module(detector.model).eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=".onnx-export-"))
    try:
        staged = staging / out.name
        try:
            with _quiet_exporter(), torch.no_grad():
                program = torch.onnx.export(
                    module, example, dynamo=True, dynamic_shapes=_dims(axes),
                    input_names=list(axes), output_names=[OUTPUT_NAME], opset_version=opset,
                    custom_translation_table=CUSTOM_TRANSLATIONS,
                    verbose=False,
                )  # fmt: skip
                assert program is not None  # dynamo=True always returns the program
                program.save(str(staged), external_data=False)  # > 1.5 GB goes external anyway
        except Exception as exc:  # the exporter raises many types; name the model and the cause
            raise OnnxExportError(f"{root}: torch.onnx.export failed ({_root_cause(exc)})") from exc
        info = OnnxExportInfo(
            kind=kind, onnx_file=out.name, opset=_opset_of(staged),
            exporter="torch.onnx.export(dynamo=True, dynamic_shapes=...)",
            torch_version=torch.__version__, onnx_version=_version("onnx"),
            onnxscript_version=_version("onnxscript"),
            onnxruntime_version=_version("onnxruntime"), inputs=list(axes), input_axes=axes,
            pad_id=detector.pad_id, graph=facts, model_files=model_files(root),
            parity=OnnxParity(functions=0, source=source, onnx_batch_size=PARITY_BATCH_SIZE,
                              max_abs_diff=float("nan"), tolerance=PARITY_TOLERANCE),
            export_seconds=0.0, exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )  # fmt: skip
        reference = detector.predict_proba(functions)
        scored = OnnxDetector(root, onnx_file=staged, info=info).predict_proba(
            functions, batch_size=PARITY_BATCH_SIZE
        )
        diff = float(np.max(np.abs(scored - reference)))
        info.parity.functions, info.parity.max_abs_diff = len(functions), diff
        if not diff <= PARITY_TOLERANCE:  # NaN fails too
            raise OnnxExportError(
                f"{root}: the ONNX export disagrees with torch: max |p_onnx - p_torch| = "
                f"{diff:.3g} > {PARITY_TOLERANCE:g} over {len(functions)} functions; "
                "nothing was written"
            )
        info.export_seconds = round(time.perf_counter() - started, 2)
        external = (staging / f"{out.name}.data").exists()
        for staged_file in sorted(staging.iterdir(), key=lambda p: p.suffix != ".data"):
            os.replace(staged_file, out.parent / staged_file.name)  # the weights first
        if not external:  # a previous, larger export's weights would linger
            (out.parent / f"{out.name}.data").unlink(missing_ok=True)
        atomic_write_json(out.parent / INFO_FILE, info.model_dump(mode="json"))
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


class ExportOutcome(BaseModel):
    """One model directory of an export request: exported, or why not."""

    model_dir: str = Field(description="The (base) model directory.")
    kind: str = Field(description="Its kind.")
    onnx_path: str | None = Field(None, description="The ONNX file written, when exported.")
    info: OnnxExportInfo | None = Field(None, description="The export record, when exported.")
    note: str | None = Field(None, description="Why nothing was exported.")


BASELINE_NOTE = (
    "a baseline model needs no ONNX export: it scores with numpy/scikit-learn, no neural "
    "forward pass; nothing written"
)


def export_model_dir(
    model_dir: str | Path, output: str | Path | None = None, opset: int | None = None
) -> list[ExportOutcome]:
    """Export a neural model, or every neural base of a fusion model (``bases/<name>/``);
    a baseline is reported as needing no export.

    Raises:
        ModelDirError: not a model directory, or a fusion card's ``base_models`` naming
            anything but folders under ``bases/``.
        OnnxExportError: an unknown kind, ``output`` with a fusion model, or an export that
            failed (see :func:`export_onnx`).
    """
    root = Path(model_dir)
    card = read_model_card(root)
    kind = card["kind"]
    if kind in NEURAL_KINDS:
        info = export_onnx(root, output=output, opset=opset)
        out = Path(output) if output is not None else root / ONNX_FILE
        return [ExportOutcome(model_dir=str(root), kind=kind, onnx_path=str(out), info=info)]
    if kind == "baseline":
        return [ExportOutcome(model_dir=str(root), kind=kind, note=BASELINE_NOTE)]
    if kind == "fusion":
        if output is not None:
            raise OnnxExportError(
                f"{root}: --output names one file, but a fusion model exports each neural base "
                "to bases/<name>/model.onnx; leave --output out"
            )
        bases = base_model_dirs(root, card)  # only dirs under bases/
        return [o for base in bases for o in export_model_dir(base, opset=opset)]
    raise OnnxExportError(f"{root}: model kind {kind!r} has no ONNX export")
