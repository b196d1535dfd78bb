"""Preprocessing driver, in named stages: :func:`read_stage` (read + validate) ->
:func:`split_stage` -> :func:`tokenizer_stage` -> :func:`process_stage` (parse, graph,
encode, trim) -> :func:`dedup_stage` -> :func:`write_stage` -> :func:`metadata_stage`.

Output directory (self-describing; see the README's "Processed data set" section)::

    <out>/train/records.jsonl   one kept function a line: record fields + token/graph summary
    <out>/train/tokens.npz      input_ids, offsets, ptr (CSR layout over functions)
    <out>/train/graphs.npz      node_type, node_token, node_ptr, edge_index, edge_type, edge_ptr, y
    <out>/valid/..., <out>/test/...
    <out>/tokenizer/            from_pretrained-loadable fast tokenizer
    <out>/node_types.json       node-type vocabulary (id order) and edge types
    <out>/preprocessing_metadata.json   counts, AST success, trimming, graph stats, timings ...
    <out>/leakage_report.json   dedup / cross-split overlap report
    <out>/rejects.jsonl         every refused record: file, line, reason
    <out>/duplicates.jsonl      every record removed as a duplicate, and of what

Every input record is accounted for: ``read == kept + rejected + deduplicated``.

Executors (``PreprocessConfig.executor``): ``local`` is a spawned process pool on this machine,
started before the BPE trains so that its workers build the graphs meanwhile (graphs need no
tokenizer); ``dask`` sends the same chunks as tasks to a Dask cluster. The files written are
byte-identical either way and for any worker count.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import platform
import random
import re
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core import __version__
from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.data.loaders import DataError, iter_records
from streamguard_core.data.splits import (
    SPLITS,
    DedupResult,
    SplitResult,
    assign_splits,
    deduplicate,
    load_codexglue_index,
)
from streamguard_core.io import atomic_write_json, sha256_file, write_jsonl
from streamguard_core.preprocess import parse, tokens
from streamguard_core.preprocess.dataset import METADATA_FILE
from streamguard_core.schema import RECORD_FIELDS, FunctionRecord, Reject
from streamguard_core.training.batch_size import recommend_batch_size

QUICK_TEST_RECORDS = 300
SPLIT_RE = re.compile(r"^(train|valid|test)=(.+)$")
# A function whose characters are more than this fraction control bytes is binary garbage.
MAX_CONTROL_FRACTION = 0.05
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufffd]")
PACKAGES = (
    "tree-sitter",
    "tree-sitter-c",
    "tree-sitter-cpp",
    "tokenizers",
    "transformers",
    "numpy",
)


@dataclass
class _Inputs:
    records: list[FunctionRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    read_per_file: dict[str, int] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)


def parse_input_spec(spec: str) -> tuple[str | None, str]:
    """'valid=path' -> ('valid', 'path'); 'path' -> (None, 'path')."""
    m = SPLIT_RE.match(spec)
    return (m.group(1), m.group(2)) if m else (None, spec)


def read_inputs(cfg: DataConfig, quick_test: bool = False) -> _Inputs:
    """Load every input (or the embedded synthetic set), counting every line read."""
    out = _Inputs()
    max_records = cfg.max_records
    if quick_test:
        max_records = min(max_records or QUICK_TEST_RECORDS, QUICK_TEST_RECORDS)
    if not cfg.inputs:
        from streamguard_core.data.synthetic import generate_synthetic

        pairs = min(cfg.synthetic_pairs_per_cwe, 8) if quick_test else cfg.synthetic_pairs_per_cwe
        records = generate_synthetic(pairs_per_cwe=pairs, seed=cfg.seed)
        for i, record in enumerate(records, start=1):
            record.meta.setdefault("file", "<synthetic>")
            record.meta.setdefault("line", i)
        out.records = records
        out.read_per_file["<synthetic>"] = len(records)
        return out
    specs = [parse_input_spec(s) for s in cfg.inputs]
    explicit = [split for split, _ in specs if split]
    if explicit and len(explicit) != len(specs):
        raise DataError(
            "either every --input carries a SPLIT= prefix (train=, valid=, test=) or none does"
        )
    seen_ids: set[str] = set()
    for split, path in specs:
        if cfg.format != "hf" and not Path(path).is_file():
            raise DataError(f"{path}: input file does not exist")
        if cfg.format != "hf":
            out.sha256[path] = sha256_file(path)
        n = 0
        for item in iter_records(
            path,
            fmt=cfg.format,
            fields=cfg.fields,
            juliet_text_field=cfg.juliet_text_field,
            split=split,
            max_records=max_records,
        ):
            n += 1
            if isinstance(item, Reject):
                out.rejects.append(item)
            elif item.id in seen_ids:
                out.rejects.append(
                    Reject(
                        str(item.meta.get("file", path)),
                        int(item.meta.get("line", 0)),
                        "duplicate_id",
                        f"record id {item.id!r} appears earlier in the inputs",
                        record_id=item.id,
                    )
                )
            else:
                seen_ids.add(item.id)
                out.records.append(item)
        out.read_per_file[path] = n
    return out


_ASCII_NON_CONTROL = bytes(b for b in range(128) if not _CONTROL_RE.match(chr(b)))


def _has_control(func: str) -> bool:
    """``_CONTROL_RE.search(func)``, several times faster on ASCII text (most source code):
    deleting every other ASCII byte is one C loop."""
    if func.isascii():
        return bool(func.encode("ascii").translate(None, _ASCII_NON_CONTROL))
    return _CONTROL_RE.search(func) is not None


def validate_records(
    records: list[FunctionRecord], cfg: PreprocessConfig
) -> tuple[list[FunctionRecord], list[Reject]]:
    """Refuse functions that are too large or binary garbage (decoded, but not source code)."""
    kept: list[FunctionRecord] = []
    rejects: list[Reject] = []
    for r in records:
        reason = detail = None
        if len(r.func) > cfg.max_func_chars:
            reason = "too_large"
            detail = f"function has {len(r.func):,} characters (limit {cfg.max_func_chars:,})"
        elif _has_control(r.func):  # rare: count only when there is one
            controls = len(_CONTROL_RE.findall(r.func))
            if controls > MAX_CONTROL_FRACTION * len(r.func):
                reason = "binary_content"
                detail = f"{controls:,} of {len(r.func):,} characters are control bytes"
        if reason:
            rejects.append(
                Reject(
                    str(r.meta.get("file", "?")),
                    int(r.meta.get("line", 0)),
                    reason,
                    detail or "",
                    record_id=r.id,
                    stage="validate",
                    preview=r.func[:200],
                )
            )
        else:
            kept.append(r)
    return kept, rejects


# --------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}
"""This process's worker state (tokenizer, graph builder, settings), made on first use by
:func:`_init_worker` (in-process runs and :class:`LocalPool` workers); Dask workers keep theirs
per thread (:func:`_dask_state`)."""


PARTS = ("all", "graph", "tokens")
"""What :func:`process_functions` builds: everything (training data), or at inference only
what one model kind reads (a GNN the graph, a transformer the tokens)."""

EXECUTORS = ("local", "dask")


class ExecutorError(OSError):
    """The configured executor cannot run (dask not installed, its scheduler unreachable)."""


def _init_worker(tokenizer_dir: str, cfg_json: str, parts: str = "all") -> None:
    _WORKER["parts"] = parts
    stat = (Path(tokenizer_dir) / tokens.TOKENIZER_JSON).stat()
    key = (tokenizer_dir, cfg_json, stat.st_mtime_ns, stat.st_size)
    if _WORKER.get("key") == key:  # in-process inference calls this once per batch
        return
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / tokens.TOKENIZER_JSON))
    _set_state(_WORKER, key, tokenizer, tokens.special_ids(tokenizer_dir), cfg_json)


def _set_state(
    state: dict[str, Any], key: Any, tokenizer: Any, special: tokens.SpecialIds, cfg_json: str
) -> None:
    cfg = PreprocessConfig.model_validate_json(cfg_json)
    state["key"] = key
    state["cfg"] = cfg
    state["tokenizer"] = tokenizer
    state["special"] = special
    state["builder"] = parse.GraphBuilder(cfg.language, cfg.max_nodes, cfg.data_flow_edges)


@dataclass
class ChunkResult:
    """Arrays for a run of consecutive functions, plus one info dict per function."""

    input_ids: np.ndarray
    offsets: np.ndarray
    n_tokens: np.ndarray
    node_type: np.ndarray
    node_token: np.ndarray
    n_nodes: np.ndarray
    edge_index: np.ndarray
    edge_type: np.ndarray
    n_edges: np.ndarray
    info: list[dict[str, Any]]


def _process_chunk(
    items: Sequence[tuple[str, str | None]], state: dict[str, Any] | None = None
) -> ChunkResult:
    """Parse, graph, encode and trim a chunk of (function, language hint) pairs with the
    worker ``state`` (default: this process's :data:`_WORKER`)."""
    state = _WORKER if state is None else state
    parts: str = state.get("parts", "all")
    builder: parse.GraphBuilder = state["builder"]
    graphs = _no_graphs(len(items)) if parts == "tokens" else _graph_part(items, builder)
    if parts == "graph":
        return _graph_only(graphs, state["special"])
    return _merge(graphs, _token_part(items, state["cfg"], state["tokenizer"], state["special"]))


def _graph_part(
    items: Sequence[tuple[str, str | None]], builder: parse.GraphBuilder
) -> parse.GraphBatch:
    """The graphs of a chunk (the half of the work that needs no tokenizer)."""
    return builder.build_many([f for f, _ in items], [h for _, h in items])


@dataclass
class _TokenPart:
    """A chunk's token ids and offsets (CSR over functions) and per-function trimming facts."""

    input_ids: np.ndarray
    offsets: np.ndarray
    n_tokens: np.ndarray
    info: list[dict[str, Any]]


def _token_part(
    items: Sequence[tuple[str, str | None]],
    cfg: PreprocessConfig,
    tokenizer: Any,
    special: tokens.SpecialIds,
) -> _TokenPart:
    """Encode and trim a chunk: ``<s>`` ids ``</s>`` per function, offsets into its text."""
    funcs = [f for f, _ in items]
    budget = cfg.max_seq_len - 2
    # long functions: encode only line-aligned windows that trimming could keep
    long_chars = budget * tokens.PREFILTER_CHARS_PER_TOKEN
    pieces: list[str] = []
    piece_of: list[tuple[int, int, list[tuple[int, int]] | None]] = []
    hits_of: list[list[tuple[int, str]] | None] = []  # found once, read by both trimming steps
    for func in funcs:
        hits = None
        if len(func) > long_chars and cfg.trimming != "head":
            hits = tokens.risky_hits(func)
        spans = tokens.prefilter_spans(func, budget, cfg.trimming, hits=hits)
        first = len(pieces)
        pieces.extend([func] if spans is None else [func[a:b] for a, b in spans])
        piece_of.append((first, len(pieces), spans))
        hits_of.append(hits)
    encodings = tokenizer.encode_batch(pieces, add_special_tokens=False)
    piece_ids, piece_offsets, piece_ptr = _encoded_arrays(encodings)
    ids_parts: list[np.ndarray] = []
    off_parts: list[np.ndarray] = []
    n_tok: list[int] = []
    info: list[dict[str, Any]] = []
    cls = np.asarray([special.cls_id], dtype=np.int32)
    sep = np.asarray([special.sep_id], dtype=np.int32)
    no_offset = np.zeros((1, 2), dtype=np.int32)
    for func, (first, last, spans), hits in zip(funcs, piece_of, hits_of, strict=True):
        p0, p1 = piece_ptr[first], piece_ptr[last]
        ids, offsets = piece_ids[p0:p1], piece_offsets[p0:p1]
        if spans is not None:  # piece offsets are relative to their span: shift them
            for k, (a, _) in enumerate(spans):
                if a:
                    offsets[piece_ptr[first + k] - p0 : piece_ptr[first + k + 1] - p0] += a
        trim = tokens.select_tokens(func, offsets[:, 0], budget, cfg.trimming, hits=hits)
        prefiltered = spans is not None
        orig_tokens = trim.orig_tokens
        if spans is not None:  # estimate the whole function's length from the encoded part
            encoded_chars = sum(b - a for a, b in spans)
            orig_tokens = max(orig_tokens, round(orig_tokens * len(func) / encoded_chars))
        if trim.trimmed:
            ids, offsets = ids[trim.keep], offsets[trim.keep]
        ids_parts += (cls, ids, sep)
        off_parts += (no_offset, offsets, no_offset)
        n_tok.append(len(ids) + 2)
        item: dict[str, Any] = {"orig_tokens": orig_tokens, "trimmed": trim.trimmed or prefiltered}
        if item["trimmed"]:
            token_spans = trim.spans() if trim.trimmed else [(0, len(ids))]
            item["trim"] = {
                "token_spans": token_spans,
                "char_spans": _char_spans(offsets),
                "hits": trim.hits,
                "orig_tokens_estimated": prefiltered,
            }
        info.append(item)
    return _TokenPart(
        np.concatenate(ids_parts), np.concatenate(off_parts), np.asarray(n_tok, dtype=np.int64),
        info,
    )  # fmt: skip


def _merge(graphs: parse.GraphBatch, toks: _TokenPart) -> ChunkResult:
    """One chunk's graphs and tokens as a :class:`ChunkResult`."""
    info = [
        {"status": g.status, "language": g.language, "error_fraction": round(g.error_fraction, 4),
         "graph_truncated": g.truncated, "normalized_key": g.normalized_key, **t}
        for g, t in zip(graphs.info, toks.info, strict=True)
    ]  # fmt: skip
    return ChunkResult(
        toks.input_ids,
        toks.offsets,
        toks.n_tokens,
        graphs.node_type,
        graphs.node_token,
        graphs.num_nodes,
        graphs.edge_index,
        graphs.edge_type,
        graphs.num_edges,
        info,
    )


def _no_graphs(n: int) -> parse.GraphBatch:
    """Empty graphs for ``n`` functions (``parts="tokens"``: a transformer reads none)."""
    empty = np.zeros(0, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    info = [parse.GraphInfo(0, "skipped", "none", 0.0, False, "") for _ in range(n)]
    return parse.GraphBatch(
        empty, empty, counts, np.zeros((2, 0), dtype=np.int64), empty, counts, info
    )


def _graph_only(graphs: parse.GraphBatch, special: tokens.SpecialIds) -> ChunkResult:
    """The graphs with CLS SEP as every function's tokens (``parts="graph"``: a GNN reads no
    tokens; tokenising and trimming cost about a third of a GNN's preprocessing)."""
    n = len(graphs.info)
    ids = np.tile(np.asarray([special.cls_id, special.sep_id], dtype=np.int32), n)
    info = [
        {"status": g.status, "language": g.language, "error_fraction": round(g.error_fraction, 4),
         "graph_truncated": g.truncated, "normalized_key": g.normalized_key}
        for g in graphs.info
    ]  # fmt: skip
    return ChunkResult(
        ids,
        np.zeros((2 * n, 2), dtype=np.int32),
        np.full(n, 2, dtype=np.int64),
        graphs.node_type,
        graphs.node_token,
        graphs.num_nodes,
        graphs.edge_index,
        graphs.edge_type,
        graphs.num_edges,
        info,
    )


def _encoded_arrays(encodings: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Token ids [n], character offsets [n, 2] (each into its own piece) of every encoding,
    concatenated, and where each encoding starts (``ptr``, one more than the encodings)."""
    id_lists = [enc.ids for enc in encodings]
    ptr = [0, *accumulate(map(len, id_lists))]
    total = ptr[-1]
    ids = np.fromiter(chain.from_iterable(id_lists), np.int32, count=total)
    flat = chain.from_iterable(chain.from_iterable(enc.offsets for enc in encodings))
    offsets = np.fromiter(flat, np.int32, count=2 * total).reshape(total, 2)
    return ids, offsets, ptr


def _char_spans(kept_offsets: np.ndarray) -> list[tuple[int, int]]:
    """Character ranges covered by the kept tokens (adjacent tokens merged)."""
    if len(kept_offsets) == 0:
        return []
    starts, ends = kept_offsets[:, 0], kept_offsets[:, 1]
    if (starts[1:] < starts[:-1]).any() or (ends < starts).any():
        return _char_spans_loop(kept_offsets)  # never from a tokenizer; kept exact anyway
    # With ascending starts and end >= start, a range's running end is the running maximum of
    # all ends so far, and a token opens a new range when it starts past that end + 1.
    reach = np.maximum.accumulate(ends)
    opens = np.flatnonzero(starts[1:] > reach[:-1] + 1) + 1
    first = np.concatenate([[0], opens])
    last = np.concatenate([opens - 1, [len(starts) - 1]])
    return list(zip(starts[first].tolist(), reach[last].tolist(), strict=True))


def _char_spans_loop(kept_offsets: np.ndarray) -> list[tuple[int, int]]:
    """:func:`_char_spans` for offsets in any order: the plain merge loop."""
    spans: list[tuple[int, int]] = []
    for start, end in kept_offsets.tolist():
        if spans and start <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


# --------------------------------------------------------------------------- main side


def _chunks(
    items: list[tuple[str, str | None]], size: int
) -> Iterator[list[tuple[str, str | None]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def process_functions(
    items: list[tuple[str, str | None]],
    tokenizer_dir: str | Path,
    cfg: PreprocessConfig,
    workers: int,
    progress: Callable[[int], None] | None = None,
    parts: str = "all",
    executor: str = "local",
) -> list[ChunkResult]:
    """Run :func:`_process_chunk` over fixed-size chunks, in order (same output for any workers
    and either executor).

    ``parts``: one of :data:`PARTS`; ``graph`` leaves every function's tokens as CLS SEP,
    ``tokens`` its graph empty (inference for one model kind). ``executor``: ``local`` (this
    process when ``workers <= 1``, else a process pool) or ``dask`` (the chunks as tasks on
    ``cfg.dask_address``, or on a LocalCluster of ``workers`` processes).

    Raises:
        ExecutorError: executor ``dask`` without dask installed, or its scheduler unreachable.
    """
    if parts not in PARTS:
        raise ValueError(f"parts must be one of {PARTS}, got {parts!r}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    cfg_json = cfg.model_dump_json()
    if executor == "dask":
        return _dask_map(items, Path(tokenizer_dir), cfg, workers, progress, parts)[0]
    results: list[ChunkResult] = []
    if workers <= 1:
        _init_worker(str(tokenizer_dir), cfg_json, parts=parts)
        for chunk in _chunks(items, cfg.chunk_size):
            results.append(_process_chunk(chunk))
            if progress:
                progress(len(chunk))
        return results
    with LocalPool(items, cfg, workers, parts) as pool:
        return pool.results(Path(tokenizer_dir), progress)


# --------------------------------------------------------------------------- local pool


def _pool_init() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the pool is the parallelism


def _pool_graph_task(cfg_json: str, items: list[tuple[str, str | None]]) -> parse.GraphBatch:
    """A chunk's graphs in a pool worker (needs no tokenizer: runs while the BPE trains)."""
    builder = _WORKER.get("graph_builder")
    if builder is None or _WORKER.get("graph_cfg") != cfg_json:
        cfg = PreprocessConfig.model_validate_json(cfg_json)
        builder = parse.GraphBuilder(cfg.language, cfg.max_nodes, cfg.data_flow_edges)
        _WORKER["graph_builder"], _WORKER["graph_cfg"] = builder, cfg_json
    return _graph_part(items, builder)


def _pool_token_task(
    tokenizer_dir: str, cfg_json: str, items: list[tuple[str, str | None]]
) -> _TokenPart:
    """A chunk's tokens in a pool worker (loads the tokenizer on its first chunk)."""
    _init_worker(tokenizer_dir, cfg_json)  # TOKENIZERS_PARALLELISM: set by _pool_init
    return _token_part(items, _WORKER["cfg"], _WORKER["tokenizer"], _WORKER["special"])


class LocalPool:
    """A process pool over the chunks of ``items`` that starts building their graphs at once.

    Made before the tokenizer exists (the graphs need none), so that the workers start and
    parse while the parent trains the BPE; :meth:`results` then encodes the chunks and puts
    each chunk's graphs and tokens together, in order.
    """

    def __init__(
        self,
        items: list[tuple[str, str | None]],
        cfg: PreprocessConfig,
        workers: int,
        parts: str = "all",
    ) -> None:
        self.chunks = list(_chunks(items, cfg.chunk_size))
        self.cfg, self.parts = cfg, parts
        self.cfg_json = cfg.model_dump_json()
        # spawn, not fork: the parent runs the tokenizers thread pool (BPE training). An
        # executor (not mp.Pool) so that a worker that dies fails the run instead of respawning.
        self.pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_pool_init
        )
        self.graphs: list[Future[parse.GraphBatch]] | None = None
        if parts != "tokens":
            self.graphs = [
                self.pool.submit(_pool_graph_task, self.cfg_json, c) for c in self.chunks
            ]

    def results(
        self, tokenizer_dir: Path, progress: Callable[[int], None] | None = None
    ) -> list[ChunkResult]:
        """Every chunk's :class:`ChunkResult`, in order."""
        toks: list[Future[_TokenPart]] | None = None
        if self.parts != "graph":
            toks = [
                self.pool.submit(_pool_token_task, str(tokenizer_dir), self.cfg_json, c)
                for c in self.chunks
            ]
        special = tokens.special_ids(tokenizer_dir)
        results: list[ChunkResult] = []
        for i, chunk in enumerate(self.chunks):
            graphs = _no_graphs(len(chunk)) if self.graphs is None else self.graphs[i].result()
            if toks is None:
                results.append(_graph_only(graphs, special))
            else:
                results.append(_merge(graphs, toks[i].result()))
            if progress:
                progress(len(chunk))
        self.pool.shutdown(wait=False)  # the workers exit while the caller writes; close() joins
        return results

    def close(self) -> None:
        """Stop the workers (pending chunks are cancelled)."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- Dask executor


@dataclass(frozen=True)
class _DaskSpec:
    """What a Dask worker needs to process chunks, sent once to every worker: the tokenizer
    travels as its JSON text, since a remote worker need not see this machine's files."""

    key: str  # unique per run: a worker (thread) re-initialises when it changes
    tokenizer_json: str
    special: tokens.SpecialIds
    cfg_json: str
    parts: str


_DASK_LOCAL = threading.local()


def _dask_state(spec: _DaskSpec) -> dict[str, Any]:
    """This Dask worker thread's state for ``spec``, made on its first chunk (a worker with
    several threads gets one parser and tokenizer per thread: tree-sitter parsers are not
    thread-safe)."""
    state: dict[str, Any] | None = getattr(_DASK_LOCAL, "state", None)
    if state is not None and state["key"] == spec.key:
        return state
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the cluster is the parallelism
    from tokenizers import Tokenizer

    state = {"parts": spec.parts}
    _set_state(state, spec.key, Tokenizer.from_str(spec.tokenizer_json), spec.special,
               spec.cfg_json)  # fmt: skip
    _DASK_LOCAL.state = state
    return state


def _dask_chunk(spec: _DaskSpec, items: list[tuple[str, str | None]]) -> ChunkResult:
    """One chunk on a Dask worker (the task :func:`_dask_map` submits)."""
    return _process_chunk(items, _dask_state(spec))


@contextmanager
def dask_client(address: str | None, workers: int) -> Iterator[Any]:
    """A ``dask.distributed.Client`` on the scheduler at ``address``, or on a LocalCluster of
    ``workers`` single-threaded processes (loopback only, no dashboard) when it is empty.

    Raises:
        ExecutorError: dask.distributed is not installed, or the scheduler cannot be reached.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise ExecutorError(
            "executor 'dask' needs dask.distributed: pip install 'streamguard[dask]'"
        ) from exc
    with ExitStack() as stack:
        if address:
            try:
                # connect timeout: dask config distributed.comm.timeouts.connect (30s;
                # env DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)
                client = Client(address, set_as_default=False)
            except Exception as exc:  # OSError (timeout, refused), ValueError (bad address) ...
                raise ExecutorError(
                    f"cannot reach the Dask scheduler at {address!r} (--dask-address): "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        else:
            try:
                cluster = LocalCluster(
                    n_workers=max(1, workers),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            except Exception as exc:  # a worker process that cannot start, no free port ...
                raise ExecutorError(
                    f"cannot start a Dask LocalCluster of {workers} workers: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            stack.enter_context(cluster)
            client = Client(cluster, set_as_default=False)
        stack.enter_context(client)
        yield client


def _dask_map(
    items: list[tuple[str, str | None]],
    tokenizer_dir: Path,
    cfg: PreprocessConfig,
    workers: int,
    progress: Callable[[int], None] | None,
    parts: str,
) -> tuple[list[ChunkResult], int]:
    """The chunks as Dask tasks, a bounded number in flight, results put back in order;
    returns them and the cluster's worker threads."""
    from dask.distributed import as_completed

    chunks = list(_chunks(items, cfg.chunk_size))
    with dask_client(cfg.dask_address, workers) as client:
        spec = _DaskSpec(
            f"streamguard-preprocess-{uuid.uuid4().hex}",
            (tokenizer_dir / tokens.TOKENIZER_JSON).read_text(encoding="utf-8"),
            tokens.special_ids(tokenizer_dir),
            cfg.model_dump_json(),
            parts,
        )
        [spec_future] = client.scatter([spec], broadcast=True)  # sent once per worker
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
        in_flight = max(2, 2 * threads)  # keeps every worker busy without shipping all text
        results: dict[int, ChunkResult] = {}
        pending = as_completed(loop=client.loop)
        position: dict[str, int] = {}

        def submit(i: int) -> None:
            future = client.submit(
                _dask_chunk, spec_future, chunks[i], key=f"{spec.key}-{i}", pure=False
            )
            position[future.key] = i
            pending.add(future)

        next_chunk = min(in_flight, len(chunks))
        for i in range(next_chunk):
            submit(i)
        for future in pending:
            i = position.pop(future.key)
            results[i] = future.result()  # a task's exception is raised here, as in the pool
            future.release()
            if progress:
                progress(len(chunks[i]))
            if next_chunk < len(chunks):
                submit(next_chunk)
                next_chunk += 1
    # as_completed ends only when every future has: every chunk is here
    return [results[i] for i in range(len(chunks))], threads


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "streamguard": __version__}
    for name in PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def graph_stats(n_nodes: np.ndarray, n_edges: np.ndarray) -> dict[str, float]:
    """Mean/p50/p95/max of nodes and edges per graph."""
    if len(n_nodes) == 0:
        return {"graphs": 0}
    stats: dict[str, float] = {"graphs": len(n_nodes)}
    for name, arr in (("nodes", n_nodes), ("edges", n_edges)):
        stats[f"{name}_mean"] = round(float(arr.mean()), 2)
        stats[f"{name}_p50"] = float(np.percentile(arr, 50))
        stats[f"{name}_p95"] = float(np.percentile(arr, 95))
        stats[f"{name}_max"] = int(arr.max())
    return stats


def _tokenizer_sample(records: list[FunctionRecord], limit: int, seed: int) -> list[str]:
    if len(records) <= limit:
        return [r.func for r in records]
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(records)), limit))
    return [records[i].func for i in chosen]


def _split_writers(
    out_dir: Path, split: str, rows: list[dict[str, Any]], parts: dict[str, list[np.ndarray]]
) -> list[Callable[[], None]]:
    """The three files of one split (tokens.npz, graphs.npz, records.jsonl), one writer each:
    independent, so that write_stage can run them side by side."""
    split_dir = out_dir / split
    split_dir.mkdir(parents=True, exist_ok=True)

    def counts(name: str) -> np.ndarray:
        return np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype=np.int64)

    def cat(name: str, dtype: Any, empty_shape: tuple[int, ...]) -> np.ndarray:
        arrays = parts[name]
        if not arrays:
            return np.zeros(empty_shape, dtype=dtype)
        axis = 1 if name == "edge_index" else 0
        return np.concatenate(arrays, axis=axis).astype(dtype, copy=False)

    def ptr(name: str) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(counts(name))]).astype(np.int64)

    def write_tokens() -> None:
        _savez(
            split_dir / "tokens.npz",
            input_ids=cat("input_ids", np.int32, (0,)),
            offsets=cat("offsets", np.int32, (0, 2)),
            ptr=ptr("n_tokens"),
        )

    def write_graphs() -> None:
        _savez(
            split_dir / "graphs.npz",
            node_type=cat("node_type", np.int16, (0,)),
            node_token=cat("node_token", np.int32, (0,)),
            node_ptr=ptr("n_nodes"),
            edge_index=cat("edge_index", np.int32, (2, 0)),
            edge_type=cat("edge_type", np.int8, (0,)),
            edge_ptr=ptr("n_edges"),
            y=np.asarray([r["label"] for r in rows], dtype=np.int8),
        )

    def write_records() -> None:
        write_jsonl(split_dir / "records.jsonl", rows, sanitize=False)

    return [write_tokens, write_graphs, write_records]


def _take(parts: dict[str, list[np.ndarray]], chunk: ChunkResult, fmask: np.ndarray) -> None:
    """Append the arrays of the functions selected by ``fmask``: views of each run of
    consecutive selected functions (chunks are mostly one split with few duplicates, so a
    handful of slices instead of masks over every token, node and edge)."""
    if fmask.all():
        for key in _ARRAY_KEYS:
            parts[key].append(getattr(chunk, key))
        return
    chosen = np.flatnonzero(fmask)
    breaks = np.flatnonzero(np.diff(chosen) != 1)
    firsts = chosen[np.concatenate([[0], breaks + 1])].tolist()
    ends = (chosen[np.concatenate([breaks, [len(chosen) - 1]])] + 1).tolist()
    t_ptr, n_ptr, e_ptr = (
        np.concatenate([[0], np.cumsum(c)]).tolist()
        for c in (chunk.n_tokens, chunk.n_nodes, chunk.n_edges)
    )
    for a, b in zip(firsts, ends, strict=True):
        t0, t1, n0, n1, e0, e1 = t_ptr[a], t_ptr[b], n_ptr[a], n_ptr[b], e_ptr[a], e_ptr[b]
        parts["input_ids"].append(chunk.input_ids[t0:t1])
        parts["offsets"].append(chunk.offsets[t0:t1])
        parts["n_tokens"].append(chunk.n_tokens[a:b])
        parts["node_type"].append(chunk.node_type[n0:n1])
        parts["node_token"].append(chunk.node_token[n0:n1])
        parts["n_nodes"].append(chunk.n_nodes[a:b])
        parts["edge_index"].append(chunk.edge_index[:, e0:e1])
        parts["edge_type"].append(chunk.edge_type[e0:e1])
        parts["n_edges"].append(chunk.n_edges[a:b])


def _row(record: FunctionRecord, split: str, chunk: ChunkResult, j: int) -> dict[str, Any]:
    """The records.jsonl row of one kept function."""
    info = chunk.info[j]
    # a shallow field copy: asdict's deep copy costs more than the JSON encoding
    row: dict[str, Any] = {name: getattr(record, name) for name in RECORD_FIELDS}
    row["split"] = split
    row["n_tokens"] = int(chunk.n_tokens[j])
    row["graph"] = {
        "status": info["status"],
        "language": info["language"],
        "num_nodes": int(chunk.n_nodes[j]),
        "num_edges": int(chunk.n_edges[j]),
        "error_fraction": info["error_fraction"],
        "truncated": info["graph_truncated"],
    }
    row["orig_tokens"] = info["orig_tokens"]
    row["trimmed"] = info["trimmed"]
    if info["trimmed"]:
        row["trim"] = info["trim"]
    return row


def _savez(path: Path, **arrays: np.ndarray) -> None:
    """np.savez through a temp file and rename (atomic; np.savez itself is not)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds oddly
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the stages
# preprocess() runs these in order: read -> split -> tokenizer -> process -> dedup -> write ->
# metadata. Dedup follows processing because its normalised key comes from the parse.


def read_stage(
    data_cfg: DataConfig, cfg: PreprocessConfig
) -> tuple[_Inputs, list[FunctionRecord], list[Reject]]:
    """Read every input and refuse invalid functions: (inputs, valid records, rejects)."""
    inputs = read_inputs(data_cfg, quick_test=cfg.quick_test)
    records, invalid = validate_records(inputs.records, cfg)
    return inputs, records, inputs.rejects + invalid


def split_stage(records: list[FunctionRecord], data_cfg: DataConfig) -> SplitResult:
    """Assign every record to train/valid/test (or reject it) by the configured strategy.

    Raises:
        DataError: strategy 'codexglue' without index files.
    """
    index = None
    if data_cfg.codexglue_splits and data_cfg.split_strategy in ("auto", "codexglue"):
        index = load_codexglue_index(data_cfg.codexglue_splits)
    elif data_cfg.split_strategy == "codexglue":
        raise DataError("split strategy 'codexglue' needs --codexglue-splits DIR")
    return assign_splits(
        records, data_cfg.split_strategy, data_cfg.split_ratios, data_cfg.seed, index
    )


def _require_records(
    splits: dict[str, list[FunctionRecord]], read_total: int, rejects: list[Reject], out_dir: Path
) -> None:
    """Raise a :class:`DataError` (after writing ``rejects.jsonl``) when nothing can be used."""
    if sum(len(v) for v in splits.values()) == 0:
        write_jsonl(out_dir / "rejects.jsonl", (r.to_dict() for r in rejects))
        reasons = Counter(r.reason for r in rejects).most_common(5)
        raise DataError(
            f"no valid records: {read_total} read, {len(rejects)} rejected "
            f"(top reasons: {reasons}); see {out_dir / 'rejects.jsonl'}"
        )
    if not splits["train"]:
        raise DataError("the train split is empty; check --split-strategy and the inputs")


def tokenizer_stage(
    train: list[FunctionRecord], cfg: PreprocessConfig, seed: int, tok_dir: Path
) -> dict[str, Any]:
    """Write the tokenizer to ``tok_dir`` (the given one, or a byte-level BPE trained on a
    seeded sample of the train split); returns its metadata entry."""
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    if cfg.tokenizer:
        tokens.save_tokenizer(tokens.load_tokenizer(cfg.tokenizer), tok_dir)
        info: dict[str, Any] = {"source": "pretrained", "name_or_path": cfg.tokenizer}
    else:
        sample = _tokenizer_sample(train, cfg.tokenizer_train_max_functions, seed)
        tokens.train_bpe_tokenizer(
            sample, tok_dir, vocab_size=cfg.vocab_size, model_max_length=cfg.max_seq_len
        )
        info = {
            "source": "trained_bpe",
            "trained_on_functions": len(sample),
            "requested_vocab_size": cfg.vocab_size,
        }
    from tokenizers import Tokenizer

    info["vocab_size"] = Tokenizer.from_file(str(tok_dir / tokens.TOKENIZER_JSON)).get_vocab_size()
    info["path"] = "tokenizer"
    return info


@dataclass
class Processed:
    """The process stage's output: (split, record) in processing order and its chunks."""

    ordered: list[tuple[str, FunctionRecord]]
    chunks: list[ChunkResult]
    workers: int


def processing_order(
    splits: dict[str, list[FunctionRecord]], cfg: PreprocessConfig
) -> tuple[list[tuple[str, FunctionRecord]], list[tuple[str, str | None]], int]:
    """(split, record) pairs in processing order (train, valid, test), their (function,
    language hint) items, and the workers worth starting for them (no more than chunks)."""
    ordered = [(s, r) for s in SPLITS for r in splits[s]]
    items = [(r.func, r.meta.get("language")) for _, r in ordered]
    workers = cfg.workers or os.cpu_count() or 1
    workers = max(1, min(workers, (len(items) + cfg.chunk_size - 1) // cfg.chunk_size))
    return ordered, items, workers


def process_stage(
    splits: dict[str, list[FunctionRecord]],
    tok_dir: Path,
    cfg: PreprocessConfig,
    show_progress: bool,
    pool: LocalPool | None = None,
) -> Processed:
    """Parse, graph, encode and trim every assigned function, in parallel (a local process pool
    or Dask, ``cfg.executor``), in split order. ``pool``: a :class:`LocalPool` over these
    functions started earlier (it has been building their graphs meanwhile)."""
    from tqdm.auto import tqdm

    ordered, items, workers = processing_order(splits, cfg)
    with tqdm(
        total=len(items), desc="preprocess", unit="fn", disable=not show_progress, file=sys.stderr
    ) as bar:
        if pool is not None:
            chunks = pool.results(tok_dir, bar.update)
        elif cfg.executor == "dask":
            chunks, workers = _dask_map(items, tok_dir, cfg, workers, bar.update, "all")
        else:
            chunks = process_functions(items, tok_dir, cfg, workers, bar.update)
    return Processed(ordered, chunks, workers)


def dedup_stage(
    splits: dict[str, list[FunctionRecord]], processed: Processed, mode: str
) -> DedupResult:
    """Remove duplicates on exact text or the normalised token stream of the parse."""
    infos = [info for c in processed.chunks for info in c.info]
    keys = {r.id: info["normalized_key"] for (_, r), info in zip(processed.ordered, infos,
                                                                  strict=True)}  # fmt: skip
    return deduplicate(splits, mode, normalized_keys=keys)


def write_stage(
    out_dir: Path, processed: Processed, dedup: DedupResult, rejects: list[Reject]
) -> dict[str, list[dict[str, Any]]]:
    """Write each split (only kept records' arrays) and the reports; returns the rows per split."""
    removed_ids = {row["id"] for row in dedup.removed}
    split_parts: dict[str, dict[str, list[np.ndarray]]] = {
        s: {k: [] for k in _ARRAY_KEYS} for s in SPLITS
    }
    split_rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    position = 0
    for chunk in processed.chunks:
        n = len(chunk.info)
        members = processed.ordered[position : position + n]
        position += n
        kept = np.asarray([r.id not in removed_ids for _, r in members], dtype=bool)
        split_of = np.asarray([SPLITS.index(split) for split, _ in members])
        for k, split in enumerate(SPLITS):
            fmask = kept & (split_of == k)
            if not fmask.any():
                continue
            _take(split_parts[split], chunk, fmask)
            for j in np.nonzero(fmask)[0]:
                split_rows[split].append(_row(members[j][1], split, chunk, int(j)))
    # threads: numpy's copies, file writes and fsync release the GIL while JSON encoding runs
    with ThreadPoolExecutor(3) as threads:
        writers = [
            threads.submit(write)
            for split in SPLITS
            for write in _split_writers(out_dir, split, split_rows[split], split_parts[split])
        ]
        for writer in writers:
            writer.result()
    write_jsonl(out_dir / "rejects.jsonl", (r.to_dict() for r in rejects))
    write_jsonl(out_dir / "duplicates.jsonl", dedup.removed)
    atomic_write_json(out_dir / "leakage_report.json", dedup.report)
    atomic_write_json(
        out_dir / "node_types.json",
        {
            "node_types": list(parse.node_type_vocab()),
            "edge_types": list(parse.EDGE_TYPES),
            "node_token_buckets": parse.NODE_TOKEN_BUCKETS,
            "fingerprint": parse.vocab_fingerprint(),
        },
    )
    return split_rows


def metadata_stage(
    out_dir: Path,
    data_cfg: DataConfig,
    cfg: PreprocessConfig,
    inputs: _Inputs,
    split_result: SplitResult,
    rejects: list[Reject],
    dedup: DedupResult,
    split_rows: dict[str, list[dict[str, Any]]],
    tokenizer_info: dict[str, Any],
    workers: int,
    timings: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """Statistics, accounting and settings: write ``preprocessing_metadata.json``, return it.

    Raises:
        AssertionError: ``read != kept + rejected + deduplicated`` (a bug, never bad input).
    """
    kept_rows = [row for s in SPLITS for row in split_rows[s]]
    n_kept = len(kept_rows)
    status = Counter(row["graph"]["status"] for row in kept_rows)
    all_nodes = np.asarray([row["graph"]["num_nodes"] for row in kept_rows], dtype=np.int64)
    all_edges = np.asarray([row["graph"]["num_edges"] for row in kept_rows], dtype=np.int64)
    stats = {"all": graph_stats(all_nodes, all_edges)}
    for split in SPLITS:
        rows = split_rows[split]
        stats[split] = graph_stats(
            np.asarray([r["graph"]["num_nodes"] for r in rows], dtype=np.int64),
            np.asarray([r["graph"]["num_edges"] for r in rows], dtype=np.int64),
        )
    sizing = recommend_batch_size(
        stats["all"].get("nodes_p95", 0.0),
        stats["all"].get("edges_p95", 0.0),
        cfg.gnn_memory_budget_mb,
        **({} if cfg.gnn_hidden_dim is None else {"hidden_dim": cfg.gnn_hidden_dim}),
    )
    trimmed = [row for row in kept_rows if row["trimmed"]]
    read_total = sum(inputs.read_per_file.values())
    counts = {
        "read": read_total,
        "read_per_file": inputs.read_per_file,
        "kept": n_kept,
        "rejected": len(rejects),
        "deduplicated": len(dedup.removed),
        "kept_per_split": {s: len(split_rows[s]) for s in SPLITS},
        "labels_per_split": {
            s: dict(Counter(str(r["label"]) for r in split_rows[s])) for s in SPLITS
        },
        # records whose loss weight is not 1.0 (what train.use_weights acts on)
        "weighted_per_split": {
            s: sum(1 for r in split_rows[s] if r["weight"] != 1.0) for s in SPLITS
        },
        "rejected_by_reason": dict(Counter(r.reason for r in rejects)),
    }
    if counts["read"] != n_kept + len(rejects) + len(dedup.removed):
        raise AssertionError(f"record accounting broken: {counts}")
    timings["total_s"] = time.perf_counter() - started
    metadata: dict[str, Any] = {
        "format_version": 1,
        "counts": counts,
        "accounting": "read == kept + rejected + deduplicated",
        "split_strategy": split_result.strategy,
        "warnings": list(split_result.warnings),
        "ast": {
            "ok": status.get("ok", 0),
            "ok_with_errors": status.get("ok_with_errors", 0),
            "fallback": status.get("fallback", 0),
            "success_rate": round((n_kept - status.get("fallback", 0)) / max(n_kept, 1), 4),
            "clean_rate": round(status.get("ok", 0) / max(n_kept, 1), 4),
            "graph_truncated": sum(1 for r in kept_rows if r["graph"]["truncated"]),
            "languages": dict(Counter(r["graph"]["language"] for r in kept_rows)),
        },
        "trimming": {
            "mode": cfg.trimming,
            "max_seq_len": cfg.max_seq_len,
            "trimmed": len(trimmed),
            "trimmed_fraction": round(len(trimmed) / max(n_kept, 1), 4),
            "mean_kept_fraction_of_trimmed": round(
                float(np.mean([(r["n_tokens"] - 2) / r["orig_tokens"] for r in trimmed]))
                if trimmed
                else 1.0,
                4,
            ),
        },
        "graph_stats": stats,
        "gnn_batch_size": sizing,
        "tokenizer": tokenizer_info,
        "node_types": {
            "count": len(parse.node_type_vocab()),
            "fingerprint": parse.vocab_fingerprint(),
        },
        "inputs": {"files": list(inputs.read_per_file), "sha256": inputs.sha256},
        "config": {
            "data": data_cfg.model_dump(mode="json"),
            "preprocess": cfg.model_dump(mode="json"),
        },
        "versions": _versions(),
        "workers": workers,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "functions_per_s": round(read_total / timings["total_s"], 1),
    }
    atomic_write_json(out_dir / METADATA_FILE, metadata)
    return metadata


def preprocess(
    data_cfg: DataConfig,
    cfg: PreprocessConfig,
    output_dir: str | Path,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Turn raw inputs into a processed data set in ``output_dir``; returns the metadata.

    Raises:
        DataError: an input is missing or unreadable, or no valid record is left.
        streamguard_core.preprocess.tokens.TokenizerError: the tokenizer cannot be loaded.
    """
    timings: dict[str, float] = {}
    started = t0 = time.perf_counter()
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    inputs, records, rejects = read_stage(data_cfg, cfg)
    timings["read_s"], t0 = time.perf_counter() - t0, time.perf_counter()

    split_result = split_stage(records, data_cfg)
    rejects += split_result.rejects
    timings["split_s"], t0 = time.perf_counter() - t0, time.perf_counter()
    _require_records(split_result.splits, sum(inputs.read_per_file.values()), rejects, out_dir)

    with ExitStack() as stack:
        _, items, workers = processing_order(split_result.splits, cfg)
        pool = None
        if cfg.executor == "local" and workers > 1:  # its workers parse while the BPE trains
            pool = stack.enter_context(LocalPool(items, cfg, workers))
        tok_dir = out_dir / "tokenizer"
        tokenizer_info = tokenizer_stage(split_result.splits["train"], cfg, data_cfg.seed, tok_dir)
        timings["tokenizer_s"], t0 = time.perf_counter() - t0, time.perf_counter()

        processed = process_stage(split_result.splits, tok_dir, cfg, show_progress, pool)
        # parsing overlaps the tokenizer's training: this is the time after it
        timings["parse_encode_s"], t0 = time.perf_counter() - t0, time.perf_counter()

        dedup = dedup_stage(split_result.splits, processed, data_cfg.dedup)
        timings["dedup_s"], t0 = time.perf_counter() - t0, time.perf_counter()

        split_rows = write_stage(out_dir, processed, dedup, rejects)
        timings["write_s"] = time.perf_counter() - t0

        return metadata_stage(
            out_dir, data_cfg, cfg, inputs, split_result, rejects, dedup, split_rows,
            tokenizer_info, processed.workers, timings, started,
        )  # fmt: skip


_ARRAY_KEYS = (
    "input_ids",
    "offsets",
    "n_tokens",
    "node_type",
    "node_token",
    "n_nodes",
    "edge_index",
    "edge_type",
    "n_edges",
)
