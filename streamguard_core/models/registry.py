"""Load any saved detector by its ``model_card.json`` kind, and read labelled data for it.

A model directory may come from elsewhere (a shared registry, a download), so loading it never
executes code from it: weights are safetensors, ``.npz`` read with ``allow_pickle=False`` or
``torch.load(weights_only=True)``, everything else JSON. Before a detector reads anything,
:func:`check_model_files` checks every such file in the directory (a pickle in place of
``model.safetensors``, object arrays in an ``.npz``, a ``.pt`` holding more than tensors,
invalid JSON, a symbolic link leaving the directory), and any fault while loading becomes a
:class:`ModelDirError`: one line naming the file and what is wrong, which the CLI prints
(``streamguard: error: runs/x/model_card.json: not valid JSON (line 2 column 1: Expecting ','
delimiter)``) before exiting with 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streamguard_core.data.loaders import DataError, iter_records
from streamguard_core.io import InvalidFileError, read_json, read_jsonl
from streamguard_core.schema import FunctionRecord, Reject

SUPPORTED_KINDS = ("baseline", "gnn", "transformer", "fusion")
MODEL_CARD = "model_card.json"
PICKLE_NOTE = "pickles are never loaded (unpickling can run code)"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class ModelDirError(DataError, ValueError):
    """A model directory that cannot be loaded (safely); the message is one line naming the
    file and what is wrong. A ValueError too, as the loaders raised before it existed."""


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_model_card(model_dir: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The ``model_card.json`` of ``model_dir`` (a JSON object with a string ``kind``).

    Args:
        model_dir: the model directory.
        kind: the kind the card must name (None: any).

    Raises:
        ModelDirError: no card, one that is not valid JSON or not a model card, or another
            ``kind``.
    """
    card_path = Path(model_dir) / MODEL_CARD
    if not card_path.is_file():
        raise ModelDirError(f"{model_dir}: not a model directory (no {MODEL_CARD})")
    try:
        card = read_json(card_path)
    except InvalidFileError as exc:
        raise ModelDirError(str(exc)) from None
    if not isinstance(card, dict) or not isinstance(card.get("kind"), str):
        raise ModelDirError(f"{card_path}: not a model card (a JSON object with a string 'kind')")
    if kind is not None and card["kind"] != kind:
        raise ModelDirError(f"{card_path}: model kind is {card['kind']!r}, not {kind!r}")
    return card


def base_model_dirs(model_dir: str | Path, card: dict[str, Any]) -> list[Path]:
    """A fusion model's base model directories, ``bases/<name>/`` in its card's order.

    Raises:
        ModelDirError: ``base_models`` is not a list of plain directory names (a name such
            as ``../x`` would reach outside the model directory).
    """
    names = card.get("base_models")
    card_path = Path(model_dir) / MODEL_CARD
    if not isinstance(names, list) or not names:
        raise ModelDirError(f"{card_path}: 'base_models' must be a non-empty list of names")
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise ModelDirError(
                f"{card_path}: base model name {name!r} is not a plain directory name under bases/"
            )
    return [Path(model_dir) / "bases" / name for name in names]


def _pickle_kind(head: bytes) -> str | None:
    """What a file that should hold plain data is, when it is a pickle in disguise."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if head[:1] in (b"c", b"(", b"]", b"}"):  # protocol 0/1 opcodes
        return "a Python pickle (protocol 0/1)"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save's pickle format)"
    return None


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):  # parses and checks the header only
            return
    except Exception as exc:  # SafetensorError and OSError: the file is not usable either way
        error = one_line(exc)
    with open(path, "rb") as fh:  # say what it is instead, when it is a pickle in disguise
        disguised = _pickle_kind(fh.read(16))
    if disguised is not None:
        raise ModelDirError(f"{path}: not a safetensors file but {disguised}; {PICKLE_NOTE}")
    raise ModelDirError(f"{path}: not a valid safetensors file ({error})")


def _check_npz(path: Path) -> None:
    import zipfile

    import numpy as np

    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] != b"PK\x03\x04":
        disguised = _pickle_kind(head)
        what = f"but {disguised}; {PICKLE_NOTE}" if disguised else "(not a zip archive)"
        raise ModelDirError(f"{path}: not a numpy .npz file {what}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            for name in arrays.files:
                arrays[name]  # object arrays (pickles) refuse to load here
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ModelDirError(f"{path}: holds pickled Python objects; {PICKLE_NOTE}") from None
        raise ModelDirError(f"{path}: not a valid .npz file ({one_line(exc)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelDirError(f"{path}: not a valid .npz file ({one_line(exc)})") from None


def _torch_reason(exc: Exception) -> str:
    """The line of torch's long weights-only message that says what was refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    return one_line((reasons or lines or [type(exc).__name__])[-1])


def _check_torch_file(path: Path) -> None:
    import torch

    try:
        with warnings.catch_warnings():  # a pickle protocol warning would add stderr lines
            warnings.simplefilter("ignore")
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError ...: unusable
        raise ModelDirError(
            f"{path}: refused by torch.load(weights_only=True): {_torch_reason(exc)}; it is no "
            f"plain tensor file, and {PICKLE_NOTE}"
        ) from None


def check_model_files(model_dir: str | Path) -> None:
    """Check the files of ``model_dir`` that loaders read, before anything deserialises them.

    Every ``*.json`` must be valid JSON without Hugging Face's ``auto_map`` (custom code),
    every ``*.safetensors`` a safetensors file (not a
    pickle), every ``*.npz`` plain arrays, every ``*.pt``/``*.pth``/``*.bin`` loadable with
    ``torch.load(weights_only=True)``; no entry may be a symbolic link leaving the directory,
    and ``gnn_config.json``'s weights file must be a file of the directory. Subdirectories
    (a fusion model's ``bases/<name>/``) are checked when their detector is loaded.

    Raises:
        ModelDirError: the first file at fault, named, with the reason.
    """
    root = Path(model_dir)
    resolved_root = root.resolve()
    for path in sorted(root.iterdir()):
        if path.is_symlink() and not path.resolve().is_relative_to(resolved_root):
            raise ModelDirError(
                f"{path}: a symbolic link to {path.resolve()}, outside the model directory; "
                "refused (copy the file in instead)"
            )
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix == ".json":
            try:
                value = read_json(path)
            except InvalidFileError as exc:
                raise ModelDirError(str(exc)) from None
            if isinstance(value, dict) and "auto_map" in value:
                # Hugging Face would import Python files named here (trust_remote_code), or
                # ask on a terminal whether to: a model directory never brings code
                raise ModelDirError(
                    f"{path}: 'auto_map' asks to run custom code from the model directory; "
                    "StreamGuard models never need it, so it is refused"
                )
            if path.name == "gnn_config.json" and isinstance(value, dict):
                weights = value.get("weights")
                if weights is not None and (
                    not isinstance(weights, str) or Path(weights).name != weights
                ):
                    raise ModelDirError(
                        f"{path}: 'weights' must name a file in the model directory, "
                        f"got {weights!r}"
                    )
        elif suffix == ".safetensors":
            _check_safetensors(path)
        elif suffix == ".npz":
            _check_npz(path)
        elif suffix in TORCH_SUFFIXES:
            _check_torch_file(path)


@contextmanager
def model_errors(model_dir: str | Path, kind: str) -> Iterator[None]:
    """Turn any fault while loading a checked model directory into one :class:`ModelDirError`
    line naming the directory (a :class:`DataError` that already names its file passes)."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:  # a card field missing, shapes that disagree, a file gone ...
        raise ModelDirError(
            f"{model_dir}: cannot load the {kind} model: {type(exc).__name__}: {one_line(exc)}"
        ) from exc


def load_detector(model_dir: str | Path, use_onnx: bool = False) -> Any:
    """The detector saved in ``model_dir`` (kind read from its model card).

    ``use_onnx``: a GNN or transformer scores with onnxruntime
    (:class:`~streamguard_core.export.runtime.OnnxDetector`) when the directory holds a fresh
    ``model.onnx`` (``streamguard export onnx``) and onnxruntime is installed, otherwise with
    torch; a fusion model passes it to its bases. A present but unusable ``model.onnx`` raises
    :class:`~streamguard_core.export.runtime.OnnxModelError` naming the file.

    Raises:
        ModelDirError: the directory holds no loadable detector (see :func:`check_model_files`);
            the message names the file at fault.
    """
    kind = read_model_card(model_dir)["kind"]
    if kind == "baseline":
        from streamguard_core.models.baseline import BaselineDetector

        return BaselineDetector.load(model_dir)
    if kind in ("gnn", "transformer"):
        from streamguard_core.models.neural import NeuralDetector

        if use_onnx:
            from streamguard_core.export.runtime import ONNX_FILE, load_onnx_detector

            # without a model.onnx there is nothing to read here: NeuralDetector checks the
            # files (once) below
            if (Path(model_dir) / ONNX_FILE).exists():
                check_model_files(model_dir)
                with model_errors(model_dir, kind):
                    onnx_detector = load_onnx_detector(model_dir)
                if onnx_detector is not None:
                    return onnx_detector
        return NeuralDetector(model_dir)  # checks the files itself
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
