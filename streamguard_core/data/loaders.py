"""Readers for every supported input; each yields :class:`FunctionRecord` or :class:`Reject`.

Supported: Devign ``function.json`` (JSON array), CodeXGLUE / Devign JSON Lines (with ``idx``),
the Juliet JSONL in ``shared/data`` (``func_anon`` by default), generic JSONL/CSV with configurable
field names, any of them gzip-compressed, and the Hugging Face ``datasets`` route.
Nothing is dropped silently: a record that cannot be read becomes a ``Reject`` naming the file,
the line and the reason.

Every format reads a record's loss weight from ``FieldMap.weight`` (default ``weight``) when the
record has that field: a finite number >= 0, kept as ``FunctionRecord.weight`` (1.0 without it).

Text files are UTF-8; a leading UTF-8 byte-order mark is skipped (Windows editors write one), a
UTF-16/32 file is refused as a whole with a clear error, and a JSON string holding a lone
surrogate escape (``"\\ud800"``: valid JSON, but not Unicode text that can be written back as
UTF-8) rejects its record. ``bench/fuzz.py`` fuzzes every reader.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from streamguard_core.config import FieldMap
from streamguard_core.io import open_binary
from streamguard_core.schema import FunctionRecord, Reject

FORMATS = ("devign", "codexglue", "juliet", "jsonl", "csv", "hf")
HF_DATASET = "google/code_x_glue_cc_defect_detection"
CPP_SUFFIXES = (".cpp", ".cc", ".cxx", ".hpp", ".hh", ".c++")

LoadItem = FunctionRecord | Reject
BOM = codecs.BOM_UTF8
# byte-order marks of encodings we do not read (UTF-32 LE first: it begins with UTF-16 LE's)
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


class DataError(Exception):
    """Input that cannot be used at all (missing file, unreadable format, no valid records)."""


def _preview(raw: Any) -> str:
    text = raw if isinstance(raw, str) else repr(raw)
    return text[:200]


def parse_label(value: Any) -> int | None:
    """0/1 from int, bool, float 0.0/1.0 or the strings '0'/'1'/'true'/'false'; else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("0", "false"):
            return 0
        if v in ("1", "true"):
            return 1
    return None


def language_hint(name: str | None) -> str | None:
    """'cpp' or 'c' from a file name's suffix, else None."""
    if not name:
        return None
    lower = name.lower()
    if lower.endswith(CPP_SUFFIXES):
        return "cpp"
    if lower.endswith(".c") or lower.endswith(".h"):
        return "c"
    return None


def detect_format(path: str | Path) -> str:
    """Guess the format from the name, then from the first JSON object."""
    path = Path(path)
    name = path.name.lower()
    for suffix in (".gz",):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".csv"):
        return "csv"
    if "juliet" in name:
        return "juliet"
    try:
        with open_binary(path) as fh:
            first = fh.readline().removeprefix(BOM)
            while first and not first.strip():
                first = fh.readline()
    except (OSError, EOFError) as exc:  # truncated gzip, unreadable file
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    first = first.lstrip()
    if first.startswith(b"["):
        return "devign"
    try:
        obj = json.loads(first)  # the whole first record, however long
    except (ValueError, RecursionError):
        return "jsonl"
    if isinstance(obj, dict):
        if "func_anon" in obj:
            return "juliet"
        if "func" in obj and "target" in obj:
            return "codexglue"
    return "jsonl"


def iter_records(
    path: str | Path,
    fmt: str = "auto",
    fields: FieldMap | None = None,
    juliet_text_field: str = "func_anon",
    split: str | None = None,
    max_records: int | None = None,
) -> Iterator[LoadItem]:
    """Yield records and rejects from one input file (``.gz`` handled transparently).

    Args:
        path: the input file.
        fmt: one of :data:`FORMATS` or ``auto``.
        fields: field names for generic JSONL/CSV; its ``weight`` field is read in every format.
        juliet_text_field: ``func_anon`` (default) or ``func`` (leaks labels; not advised).
        split: an explicit split for every record of this file, stored in ``meta["split"]``.
        max_records: stop after this many yielded records (rejects included).

    Raises:
        DataError: the file does not exist or cannot be read as the given format at all.
    """
    path = Path(path)
    if fmt == "hf":
        yield from iter_hf(split or "train", max_records=max_records)
        return
    if not path.exists():
        raise DataError(f"{path}: input file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    _refuse_foreign_encoding(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    fields = fields or FieldMap()
    if fmt == "devign":
        rows = _iter_json_array(path)
    elif fmt == "csv":
        rows = _iter_csv(path)
    else:
        rows = _iter_jsonl(path)
    stem = path.name.split(".")[0]
    count = 0
    for line, obj in rows:
        if max_records is not None and count >= max_records:
            return
        count += 1
        if isinstance(obj, Reject):
            yield obj
            continue
        if fmt in ("devign", "codexglue"):
            item = _devign_record(obj, path, line, stem, fields.weight)
        elif fmt == "juliet":
            item = _juliet_record(obj, path, line, stem, juliet_text_field, fields.weight)
        else:
            item = _generic_record(obj, path, line, stem, fields)
        if isinstance(item, FunctionRecord) and split is not None:
            item.meta["split"] = split
        yield item


# ---------------------------------------------------------------------------- raw readers


def _refuse_foreign_encoding(path: Path) -> None:
    """A UTF-16/32 byte-order mark: every line would be a reject, so refuse the file."""
    try:
        with open_binary(path) as fh:
            head = fh.read(4)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    for bom, name in _FOREIGN_BOMS:
        if head.startswith(bom):
            raise DataError(
                f"{path}: the file is {name} encoded (byte-order mark {bom.hex(' ')}); "
                "StreamGuard reads UTF-8: convert it, e.g. iconv -f "
                f"{name} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}"
            )


LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone UTF-16 surrogate in a ``str``: what a JSON escape such as ``"\\ud800"`` decodes to;
valid JSON, but no Unicode text (it cannot be encoded as UTF-8)."""
# a JSON escape of a lone surrogate (how one reaches a decoded object)
_SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89a-fA-F]")


def _surrogate_field(obj: dict[str, Any]) -> str | None:
    """The first field of ``obj`` whose name or (nested) value holds a lone surrogate."""
    for key, value in obj.items():
        stack = [key, value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if LONE_SURROGATE.search(item):
                    return repr(key)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


def _surrogate_reject(
    obj: dict[str, Any], path: Path, line: int, raw: bytes | None
) -> Reject | None:
    """A reject when a JSON string of ``obj`` decoded to a lone surrogate (``\\ud800``); the
    preview is the line ``raw`` when given, else ``obj`` itself."""
    field = _surrogate_field(obj)
    if field is None:
        return None
    return Reject(
        str(path),
        line,
        "invalid_unicode",
        f"field {field} holds a lone surrogate escape (\\ud800-\\udfff): not Unicode text",
        preview=_preview(obj) if raw is None else raw[:200].decode("utf-8", "replace"),
    )


def _decode_line(raw: bytes, path: Path, line: int) -> str | Reject:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reject(
            str(path),
            line,
            "invalid_utf8",
            f"bytes are not valid UTF-8 at byte {exc.start} of the line",
            preview=raw[:200].decode("utf-8", "replace"),
        )


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    try:
        with open_binary(path) as fh:
            for line_no, raw in enumerate(fh, start=1):
                if line_no == 1:
                    raw = raw.removeprefix(BOM)
                if not raw.strip():
                    continue  # blank lines hold no record
                try:
                    obj = orjson.loads(raw)  # validates UTF-8 too; ~3x faster than json
                except orjson.JSONDecodeError:
                    # slow path, for the precise reason (or what only the stdlib accepts,
                    # such as lone surrogate escapes and integers beyond 64 bits)
                    text = _decode_line(raw, path, line_no)
                    if isinstance(text, Reject):
                        yield line_no, text
                        continue
                    try:
                        obj = json.loads(text)
                    except (ValueError, RecursionError) as exc:
                        detail = "nested too deeply" if isinstance(exc, RecursionError) else exc
                        yield (
                            line_no,
                            Reject(
                                str(path), line_no, "invalid_json", str(detail), preview=text[:200]
                            ),
                        )
                        continue
                    if isinstance(obj, dict):  # orjson refuses lone surrogates; json not
                        bad = _surrogate_reject(obj, path, line_no, raw)
                        if bad is not None:
                            yield line_no, bad
                            continue
                if not isinstance(obj, dict):
                    yield (
                        line_no,
                        Reject(
                            str(path),
                            line_no,
                            "not_an_object",
                            f"expected a JSON object, got {type(obj).__name__}",
                            preview=raw[:200].decode("utf-8", "replace"),
                        ),
                    )
                    continue
                yield line_no, obj
    except (OSError, EOFError) as exc:  # truncated gzip, unreadable file
        raise DataError(f"{path}: cannot read file: {exc}") from exc


def _iter_json_array(path: Path) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    """Devign ``function.json``: one JSON array; 'line' is the 1-based element number."""
    try:
        with open_binary(path) as fh:
            raw = fh.read()
        data = json.loads(raw.decode("utf-8-sig"))
    except RecursionError:
        raise DataError(f"{path}: not a readable JSON array: nested too deeply") from None
    except (ValueError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable JSON array (Devign function.json): {exc}") from exc
    lone_surrogates = _SURROGATE_ESCAPE_RE.search(raw) is not None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of functions, got {type(data).__name__}")
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            yield (
                i,
                Reject(
                    str(path),
                    i,
                    "not_an_object",
                    f"array element {i} is {type(obj).__name__}",
                    preview=_preview(obj),
                ),
            )
        else:
            bad = _surrogate_reject(obj, path, i, None) if lone_surrogates else None
            if bad is not None:
                yield i, bad
                continue
            obj.setdefault("idx", i - 1)  # function.json position is CodeXGLUE's idx
            yield i, obj


def _iter_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    """CSV rows with the line each record starts on; bad bytes reject only their own row."""
    csv.field_size_limit(1 << 30)
    try:
        with open_binary(path) as fh:
            # surrogateescape keeps undecodable bytes visible per row instead of failing a
            # whole decoding chunk (which would lose the valid rows around it); -sig skips a BOM
            text = fh.read().decode("utf-8-sig", errors="surrogateescape")
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:  # reads the header line; an empty file has no records
        return
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, Reject(str(path), start, "invalid_csv", str(exc))
            return  # the reader cannot resynchronise after a structural error
        # surrogates stand for bytes that are not UTF-8: in a value, a field name (the header)
        # or the extra fields of a long row (a list under the key None)
        bad = _surrogate_field(row)
        if bad is not None:
            yield (
                start,
                Reject(
                    str(path),
                    start,
                    "invalid_utf8",
                    f"field {bad} (name or value) holds bytes that are not UTF-8",
                ),
            )
            continue
        yield start, row


# ---------------------------------------------------------------------------- record builders


def _require_func(obj: dict[str, Any], key: str, path: Path, line: int) -> str | Reject:
    if key not in obj or obj[key] is None:
        return Reject(
            str(path), line, "missing_field", f"field {key!r} is missing", preview=_preview(obj)
        )
    func = obj[key]
    if not isinstance(func, str):
        return Reject(
            str(path),
            line,
            "invalid_type",
            f"field {key!r} must be a string, got {type(func).__name__}",
            preview=_preview(obj),
        )
    if not func.strip():
        return Reject(str(path), line, "empty_function", f"field {key!r} is empty")
    return func


def _require_label(obj: dict[str, Any], key: str, path: Path, line: int) -> int | Reject:
    if key not in obj:
        return Reject(
            str(path),
            line,
            "missing_field",
            f"label field {key!r} is missing",
            preview=_preview(obj)[:200],
        )
    label = parse_label(obj[key])
    if label is None:
        return Reject(
            str(path),
            line,
            "invalid_label",
            f"label {obj[key]!r} in field {key!r} is not 0/1",
            preview=_preview(obj)[:200],
        )
    return label


def _read_weight(obj: dict[str, Any], key: str | None, path: Path, line: int) -> float | Reject:
    """The record's loss weight from field ``key``: 1.0 when absent or empty, else a finite
    number >= 0. Refused: not a number (``invalid_weight``), NaN or infinite
    (``weight_not_finite``), negative (``invalid_weight``)."""
    if not key or obj.get(key) in (None, ""):
        return 1.0
    raw = obj[key]
    try:
        if isinstance(raw, bool):  # JSON true/false is not a weight, though float() takes it
            raise TypeError
        weight = float(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
        return Reject(
            str(path),
            line,
            "invalid_weight",
            f"weight {raw!r} in field {key!r} is not a number",
            preview=_preview(obj),
        )
    if not math.isfinite(weight):
        return Reject(
            str(path),
            line,
            "weight_not_finite",
            f"weight {raw!r} in field {key!r} is not finite",
            preview=_preview(obj),
        )
    if weight < 0:
        return Reject(
            str(path),
            line,
            "invalid_weight",
            f"weight {weight} in field {key!r} is negative",
            preview=_preview(obj),
        )
    return weight


def _optional_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdecimal():
        try:
            return int(value)
        except ValueError:  # beyond int()'s 4,300-digit limit
            return None
    return None


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _devign_record(
    obj: dict[str, Any], path: Path, line: int, stem: str, weight_field: str | None = None
) -> LoadItem:
    func = _require_func(obj, "func", path, line)
    if isinstance(func, Reject):
        return func
    label = _require_label(obj, "target", path, line)
    if isinstance(label, Reject):
        return label
    weight = _read_weight(obj, weight_field, path, line)
    if isinstance(weight, Reject):
        return weight
    idx = _optional_int(obj.get("idx"))
    meta: dict[str, Any] = {"file": str(path), "line": line, "language": "c"}
    if obj.get("commit_date"):
        meta["date"] = str(obj["commit_date"])
    return FunctionRecord(
        id=f"devign:{idx}" if idx is not None else f"{stem}:{line}",
        func=func,
        label=label,
        source="devign",
        project=_optional_str(obj.get("project")),
        commit_id=_optional_str(obj.get("commit_id")),
        idx=idx,
        weight=weight,
        meta=meta,
    )


def _normalize_cwe(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).upper().replace("_", "-")
    if text.startswith("CWE") and not text.startswith("CWE-"):
        text = "CWE-" + text[3:]
    return text


def _juliet_record(
    obj: dict[str, Any],
    path: Path,
    line: int,
    stem: str,
    text_field: str,
    weight_field: str | None = None,
) -> LoadItem:
    func = _require_func(obj, text_field, path, line)
    if isinstance(func, Reject):
        return func
    label = _require_label(obj, "target", path, line)
    if isinstance(label, Reject):
        return label
    weight = _read_weight(obj, weight_field, path, line)
    if isinstance(weight, Reject):
        return weight
    testcase = _optional_str(obj.get("testcase"))
    meta: dict[str, Any] = {
        "file": str(path),
        "line": line,
        "language": language_hint(testcase) or "c",
        "testcase": testcase,
        "flow_variant": obj.get("flow_variant"),
        "text_field": text_field,
    }
    return FunctionRecord(
        id=f"{stem}:{line}",
        func=func,
        label=label,
        source="juliet",
        project="juliet",
        cwe=_normalize_cwe(obj.get("cwe")),
        group=_optional_str(obj.get("group")),
        weight=weight,
        meta=meta,
    )


def _generic_record(
    obj: dict[str, Any], path: Path, line: int, stem: str, fields: FieldMap
) -> LoadItem:
    func = _require_func(obj, fields.func, path, line)
    if isinstance(func, Reject):
        return func
    label = _require_label(obj, fields.label, path, line)
    if isinstance(label, Reject):
        return label

    def get(name: str | None) -> Any:
        return obj.get(name) if name else None

    weight = _read_weight(obj, fields.weight, path, line)
    if isinstance(weight, Reject):
        return weight
    used = {f for f in fields.model_dump().values() if f}
    meta: dict[str, Any] = {"file": str(path), "line": line}
    lang = language_hint(_optional_str(obj.get("file") or obj.get("path")))
    if obj.get("language") in ("c", "cpp"):
        lang = obj["language"]
    if lang:
        meta["language"] = lang
    if get(fields.date):
        meta["date"] = str(get(fields.date))
    meta.update({k: v for k, v in obj.items() if k not in used and k not in meta})
    rid = get(fields.id)
    return FunctionRecord(
        id=f"{stem}:{rid}" if rid not in (None, "") else f"{stem}:{line}",
        func=func,
        label=label,
        source=stem,
        project=_optional_str(get(fields.project)),
        commit_id=_optional_str(get(fields.commit_id)),
        cwe=_normalize_cwe(get(fields.cwe)),
        idx=_optional_int(get(fields.idx)),
        group=_optional_str(get(fields.group)),
        weight=weight,
        meta=meta,
    )


# ---------------------------------------------------------------------------- Hugging Face


def iter_hf(split: str = "train", max_records: int | None = None) -> Iterator[LoadItem]:
    """CodeXGLUE defect detection through ``datasets`` (needs the ``hf`` extra and network).

    Fails fast with a clear :class:`DataError` when offline instead of hanging on the hub.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or os.environ.get(
        "HF_DATASETS_OFFLINE", ""
    ).lower() in ("1", "true", "yes"):
        raise DataError(
            f"hf:{HF_DATASET}: HF_HUB_OFFLINE is set, so the Hugging Face hub cannot be used; "
            "download the CodeXGLUE jsonl files elsewhere and pass them with --input"
        )
    try:
        import httpx

        httpx.head(f"https://huggingface.co/api/datasets/{HF_DATASET}", timeout=5.0)
    except Exception as exc:  # any network failure means "offline" for our purposes
        raise DataError(
            f"hf:{HF_DATASET}: the Hugging Face hub is not reachable ({type(exc).__name__}: "
            f"{exc}); pass local Devign/CodeXGLUE files with --input instead"
        ) from exc
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            "the Hugging Face route needs the 'datasets' package: pip install 'streamguard[hf]'"
        ) from exc
    hf_split = {"valid": "validation"}.get(split, split)
    ds = datasets.load_dataset(HF_DATASET, split=hf_split)
    for i, row in enumerate(ds, start=1):
        if max_records is not None and i > max_records:
            return
        yield _devign_record(
            {**row, "idx": row.get("id")}, Path(f"hf:{HF_DATASET}/{hf_split}"), i, "hf"
        )
