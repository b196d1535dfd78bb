"""Score a saved GNN or transformer with onnxruntime, and decide when to.

:class:`OnnxDetector` has the torch detector's interface (``predict_proba``, ``threshold``,
``kind``, ``card``, ``dir``) plus ``backend = "onnxruntime"``; the preprocessing is the torch
detector's own (:func:`~streamguard_core.models.neural.function_batches`), only the forward pass
runs in an ``onnxruntime.InferenceSession`` (CPU, ``torch.get_num_threads()`` intra-op threads,
so ``OMP_NUM_THREADS`` and ``TrainConfig.num_threads`` apply to both backends alike).

:func:`load_onnx_detector` (what ``load_detector(..., use_onnx=True)`` calls) returns ``None``,
and the caller scores with torch, when the directory has no ``model.onnx``, when onnxruntime
is not installed (with a warning), or when the export is stale: the model's files changed or
are newer than ``model.onnx`` (with a warning naming the file and the command that re-exports).
A ``model.onnx`` that is there and fresh but cannot be used (corrupt, no or a bad
``onnx_export.json``, another kind, inputs the detector does not feed, a failing run) raises
:class:`OnnxModelError` naming the file: silently scoring with another backend would hide a
broken deployment artefact, and ``--no-onnx`` / ``use_onnx=False`` is the explicit way out.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamguard_core.config import PreprocessConfig
from streamguard_core.export.onnx import (
    INFO_FILE,
    ONNX_FILE,
    OUTPUT_NAME,
    SPECS,
    OnnxExportError,
    OnnxExportInfo,
    model_files,
    read_export_info,
)
from streamguard_core.models.neural import function_batches
from streamguard_core.models.registry import read_model_card

CPU = torch.device("cpu")


class OnnxModelError(OnnxExportError):
    """A ``model.onnx`` that is present but cannot be used; the message names the file."""


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` can be imported (the ``onnx`` extra)."""
    return importlib.util.find_spec("onnxruntime") is not None


def stale_reason(model_dir: Path, onnx_file: Path, info: OnnxExportInfo) -> str | None:
    """Why the export no longer matches the model's files, or None when it does."""
    files = model_files(model_dir)
    if files != info.model_files:
        changed = sorted(set(files.items()) ^ set(info.model_files.items()))
        names = sorted({name for name, _ in changed})
        return f"the model files changed since the export ({', '.join(names)})"
    onnx_mtime = onnx_file.stat().st_mtime
    newer = [n for n in files if (model_dir / n).stat().st_mtime > onnx_mtime]
    if newer:
        return f"older than the model files ({', '.join(newer)})"
    return None


def load_onnx_detector(model_dir: str | Path, threads: int | None = None) -> OnnxDetector | None:
    """The onnxruntime detector of ``model_dir``, or None when torch should score (see the
    module docstring).

    Raises:
        OnnxModelError: a fresh ``model.onnx`` that cannot be used.
    """
    root = Path(model_dir)
    onnx_file = root / ONNX_FILE
    if not onnx_file.exists():
        return None
    if not onnxruntime_available():
        warnings.warn(
            f"{onnx_file}: onnxruntime is not installed (pip install 'streamguard[onnx]'); "
            "scoring with torch",
            UserWarning,
            stacklevel=2,
        )
        return None
    info = _read_info(onnx_file)
    reason = stale_reason(root, onnx_file, info)
    if reason is not None:
        warnings.warn(
            f"{onnx_file}: {reason}; scoring with torch (export again: "
            f"streamguard export onnx --model-dir {root})",
            UserWarning,
            stacklevel=2,
        )
        return None
    return OnnxDetector(root, info=info, threads=threads)


def _read_info(onnx_file: Path) -> OnnxExportInfo:
    try:
        return read_export_info(onnx_file.parent / INFO_FILE)
    except OnnxExportError as exc:
        raise OnnxModelError(f"{onnx_file}: cannot be used: {exc}") from None


class OnnxDetector:
    """A saved GNN or transformer scored by onnxruntime from its ``model.onnx``.

    Args:
        model_dir: the saved detector (its card, tokenizer and preprocessing settings).
        onnx_file: the ONNX file (default ``model_dir/model.onnx``).
        info: its export record (default: read from ``onnx_export.json`` beside it).
        threads: intra-op threads (default ``torch.get_num_threads()``).

    Raises:
        OnnxModelError: the file cannot be loaded or does not fit the detector.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model_dir: str | Path,
        onnx_file: str | Path | None = None,
        info: OnnxExportInfo | None = None,
        threads: int | None = None,
    ) -> None:
        self.dir = Path(model_dir)
        self.onnx_file = Path(onnx_file) if onnx_file is not None else self.dir / ONNX_FILE
        self.card: dict[str, Any] = read_model_card(self.dir)
        self.kind: str = self.card["kind"]
        self.threshold = float(self.card["threshold"])
        self.preprocess = PreprocessConfig.model_validate(self.card.get("preprocess", {}))
        self.info = info if info is not None else _read_info(self.onnx_file)
        if self.info.kind != self.kind or self.kind not in SPECS:
            raise OnnxModelError(
                f"{self.onnx_file}: exported from a {self.info.kind} model, but {self.dir} holds "
                f"a {self.kind} model; export it again"
            )
        self.spec = SPECS[self.kind]
        self.pad_id = self.info.pad_id
        self.session = self._open(threads)
        expected = list(self.spec.input_axes(self.info.graph))
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if not set(self.input_names) <= set(expected) or OUTPUT_NAME not in outputs:
            raise OnnxModelError(
                f"{self.onnx_file}: inputs {self.input_names} / outputs {outputs} do not match "
                f"a {self.kind} export (inputs among {expected}, output {OUTPUT_NAME!r}); "
                "export it again"
            )

    def _open(self, threads: int | None) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only; the exporter's graphs warn about unused ids
        try:
            return ort.InferenceSession(
                str(self.onnx_file), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own pybind types (Fail, InvalidGraph)
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise OnnxModelError(
                f"{self.onnx_file}: onnxruntime cannot load it ({type(exc).__name__}: {first}); "
                "export it again with `streamguard export onnx`, or score with torch "
                "(--no-onnx / use_onnx=False)"
            ) from None

    def feeds(self, batch: dict[str, torch.Tensor], n: int) -> dict[str, np.ndarray]:
        """The session inputs of a collated batch of ``n`` functions (``Batches.make`` output)."""
        tensors = self.spec.feeds(batch, n, self.info.graph)
        return {name: tensors[name].numpy() for name in self.input_names}

    def forward(self, feeds: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Probabilities of one batch, shape [n].

        Raises:
            OnnxModelError: onnxruntime failed or returned another shape.
        """
        try:
            (probs,) = self.session.run([OUTPUT_NAME], feeds)
        except Exception as exc:  # pybind error types; name the file, not a traceback
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise OnnxModelError(
                f"{self.onnx_file}: onnxruntime failed on a batch of {n} functions "
                f"({type(exc).__name__}: {first}); export it again, or score with torch "
                "(--no-onnx / use_onnx=False)"
            ) from None
        if probs.shape != (n,):
            raise OnnxModelError(
                f"{self.onnx_file}: returned shape {list(probs.shape)} for {n} functions "
                f"(expected [{n}]); export it again"
            )
        return np.asarray(probs)

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
        probs = []
        for start in range(0, len(data), batch_size):
            idx = np.arange(start, min(start + batch_size, len(data)))
            probs.append(self.forward(self.feeds(data.make(idx, CPU), len(idx)), len(idx)))
        return np.concatenate(probs) if probs else np.zeros(0)
