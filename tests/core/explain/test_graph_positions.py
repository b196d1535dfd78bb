"""``GraphBuilder(keep_positions=True)``: the same graphs, plus the byte every node starts at
(checked on identifier nodes, whose hashed name must be the name found at that byte)."""

from __future__ import annotations

import gzip
import json
import re
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from streamguard_core.explain.lines import chars_of_bytes
from streamguard_core.preprocess.parse import GraphBatch, GraphBuilder, name_bucket

NAME_RE = re.compile(r"\w+")  # identifiers may hold non-ASCII letters ("caf\u00e9")
ARRAYS = ("node_type", "node_token", "num_nodes", "edge_index", "edge_type", "num_edges")
EXTRA = [
    'int caf\u00e9(int \u00e9t\u00e9) {\n  char *s = "\u00fcber \U0001f600";\n'
    "  return \u00e9t\u00e9 + s[0];\n}",
    # unparseable: the token-chain fallback (with a non-ASCII character before the tokens)
    "\u00e9 ) ) ) ( ( ] ] [ int x y z = = ; ; } } { { while while if if",
    "void f(int n) { int a = n; a += 2; while (a--) g(a); }",
]


def _devign(shared_data: Path, n: int) -> list[str]:
    with gzip.open(shared_data / "devign_valid.jsonl.gz", "rt") as fh:
        return [json.loads(line)["func"] for line in islice(fh, n)]


def _check_names(funcs: list[str], batch: GraphBatch) -> int:
    """Every node with a name bucket starts at a name hashing to that bucket; returns how many
    nodes were checked."""
    assert batch.node_start is not None
    checked, first = 0, 0
    for func, n in zip(funcs, batch.num_nodes.tolist(), strict=True):
        src = func.encode("utf-8", "surrogatepass")
        starts = batch.node_start[first : first + n]
        tokens = batch.node_token[first : first + n]
        assert ((starts >= -1) & (starts < max(len(src), 1))).all()
        for start, token in zip(starts.tolist(), tokens.tolist(), strict=True):
            if token:
                name = NAME_RE.match(src[start:].decode("utf-8", "surrogatepass"))
                # a zero-width node tree-sitter inserted (MISSING identifier) hashes b""
                found = name.group().encode("utf-8", "surrogatepass") if name else b""
                assert token in (name_bucket(found), name_bucket(b"")), (func, start)
                checked += 1
        first += n
    return checked


@pytest.mark.parametrize("data_flow", [False, True])
def test_positions_leave_the_graphs_unchanged(data_flow) -> None:
    funcs = [*EXTRA, "int g(void) { return 0; }"]
    plain = GraphBuilder(data_flow_edges=data_flow).build_many(funcs)
    placed = GraphBuilder(data_flow_edges=data_flow, keep_positions=True).build_many(funcs)
    assert plain.node_start is None
    for name in ARRAYS:
        assert np.array_equal(getattr(plain, name), getattr(placed, name)), name
    assert plain.info == placed.info
    assert placed.node_start is not None and len(placed.node_start) == placed.num_nodes.sum()
    assert [i.status for i in placed.info][1] == "fallback"
    assert _check_names(funcs, placed) > 10


def test_positions_of_fallback_and_truncated_graphs() -> None:
    funcs = EXTRA[1:]
    batch = GraphBuilder(max_nodes=6, keep_positions=True).build_many(funcs)
    assert batch.node_start is not None and batch.num_nodes.tolist() == [6, 6]
    fallback = batch.node_start[:6]
    assert fallback[0] == -1  # the root has no place
    # token nodes start at their token: "\u00e9" (two bytes), then ")" at byte 3 ...
    assert fallback[1:].tolist() == [0, 3, 5, 7, 9]
    assert chars_of_bytes(funcs[0], fallback[1:]).tolist() == [0, 2, 4, 6, 8]
    assert (np.diff(batch.node_start[6:]) >= 0).all()  # depth-first: starts never go back


def test_chars_of_bytes() -> None:
    text = "a\u00e9b\U0001f600c"
    assert chars_of_bytes(text, np.array([0, 1, 2, 3, 4, 8, -1])).tolist() == [0, 1, 1, 2, 3, 4, -1]
    assert chars_of_bytes("abc", np.array([2, -1])).tolist() == [2, -1]


def test_positions_on_real_functions(shared_data) -> None:
    funcs = _devign(shared_data, 300)
    batch = GraphBuilder(keep_positions=True).build_many(funcs)  # asserts types agree inside
    assert _check_names(funcs, batch) > 10_000
