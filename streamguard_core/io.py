"""Small I/O helpers: atomic JSON, JSON sanitising, safe JSON reading, content hashing,
transparent gzip."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import orjson

from streamguard_core.redact import redact_value


def to_jsonable(value: Any) -> Any:
    """Convert numpy / torch scalars and arrays, paths, sets and NaN/inf into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if hasattr(value, "tolist"):  # numpy arrays/scalars, torch tensors
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    return str(value)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(
    path: str | Path, data: Any, indent: int | None = 2, redact: bool = True
) -> Path:
    """Sanitise ``data`` with :func:`to_jsonable` and write it atomically as JSON.

    ``redact``: credentials in string values (token patterns, URL passwords, webhook paths,
    the values of secret environment variables) become ``***``
    (:func:`streamguard_core.redact.redact_value`), so no artefact written this way carries a
    secret. False only for state that must round-trip byte for byte.
    """
    value = to_jsonable(data)
    if redact:
        value = redact_value(value)
    return atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]], sanitize: bool = True) -> int:
    """Write rows as JSON Lines atomically (``.gz`` suffix compresses); returns the row count.

    ``sanitize=False`` skips :func:`to_jsonable` for rows known to hold plain JSON values only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    count = 0
    try:
        with open_text(tmp, "w", gz=path.suffix == ".gz") as fh:
            for row in rows:
                fh.write(_dumps_line(to_jsonable(row) if sanitize else row))
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _dumps_line(row: dict[str, Any]) -> str:
    try:
        return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE).decode("utf-8")
    except TypeError:  # e.g. lone surrogates or huge ints: the stdlib copes
        return json.dumps(row, ensure_ascii=False) + "\n"


class InvalidFileError(ValueError):
    """A file that cannot be read as what it should be; the message names it and says why."""


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path`` (a UTF-8 BOM is skipped), for files that may come from
    elsewhere (model directories): errors are one line naming the file, line and column.

    Raises:
        InvalidFileError: the file cannot be read, is not UTF-8 or not valid JSON.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # the stdlib accepts a little more (NaN, huge integers) and says where it failed
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InvalidFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidFileError(
            f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise InvalidFileError(f"{path}: not valid JSON (nested too deeply)") from None


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield JSON objects from a trusted JSON Lines file we wrote ourselves (``.gz`` ok)."""
    with open_text(path) as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def is_gzip(path: str | Path) -> bool:
    """True when the file starts with the gzip magic bytes (the suffix is not trusted)."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing gzip transparently."""
    if is_gzip(path):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def open_text(path: str | Path, mode: str = "r", gz: bool | None = None) -> IO[str]:
    """Open UTF-8 text, gzip-compressed when ``gz`` (or, for reading, when the file is gzip)."""
    if "r" in mode:
        gz = is_gzip(path) if gz is None else gz
    if gz:
        raw = cast(IO[bytes], gzip.open(path, mode.replace("t", "") + "b"))  # noqa: SIM115
        return io.TextIOWrapper(raw, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of a UTF-8 string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_dir(path: str | Path) -> str:
    """Content hash of a directory: sha256 over (relative path, file sha256), sorted."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()
