"""Load any saved detector by its ``model_card.json`` kind, and read labelled data for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamguard_core.data.loaders import DataError, iter_records
from streamguard_core.io import read_jsonl
from streamguard_core.schema import FunctionRecord, Reject

SUPPORTED_KINDS = ("baseline", "gnn", "transformer", "fusion")


def load_detector(model_dir: str | Path, use_onnx: bool = False) -> Any:
    """The detector saved in ``model_dir`` (kind read from its model card).

    ``use_onnx``: a GNN or transformer scores with onnxruntime
    (:class:`~streamguard_core.export.runtime.OnnxDetector`) when the directory holds a fresh
    ``model.onnx`` (``streamguard export onnx``) and onnxruntime is installed, otherwise with
    torch; a fusion model passes it to its bases. A present but unusable ``model.onnx`` raises
    :class:`~streamguard_core.export.runtime.OnnxModelError` naming the file.
    """
    card_path = Path(model_dir) / "model_card.json"
    if not card_path.exists():
        raise DataError(f"{model_dir}: not a model directory (no model_card.json)")
    kind = json.loads(card_path.read_text()).get("kind")
    if kind == "baseline":
        from streamguard_core.models.baseline import BaselineDetector

        return BaselineDetector.load(model_dir)
    if kind in ("gnn", "transformer"):
        from streamguard_core.models.neural import NeuralDetector

        if use_onnx:
            from streamguard_core.export.runtime import load_onnx_detector

            onnx_detector = load_onnx_detector(model_dir)
            if onnx_detector is not None:
                return onnx_detector
        return NeuralDetector(model_dir)
    if kind == "fusion":
        from streamguard_core.models.fusion import FusionDetector

        return FusionDetector(model_dir, use_onnx=use_onnx)
    raise DataError(
        f"{model_dir}: model kind {kind!r} cannot be loaded yet (supported: {SUPPORTED_KINDS})"
    )


def load_labelled(path: str | Path) -> tuple[list[FunctionRecord], list[Reject]]:
    """Records from a processed split directory (``records.jsonl``) or any raw input file."""
    path = Path(path)
    if path.is_dir():
        records_file = path / "records.jsonl"
        if not records_file.exists():
            raise DataError(f"{path}: a directory must be a processed split (records.jsonl)")
        # processing fields (split, n_tokens, graph, trim ...) land in meta
        return [FunctionRecord.from_dict(row) for row in read_jsonl(records_file)], []
    records: list[FunctionRecord] = []
    rejects: list[Reject] = []
    for item in iter_records(path):
        (rejects if isinstance(item, Reject) else records).append(item)  # type: ignore[arg-type]
    if not records:
        raise DataError(f"{path}: no valid records ({len(rejects)} rejected)")
    return records, rejects
