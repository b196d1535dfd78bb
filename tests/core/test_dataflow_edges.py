"""Data-flow edges (last write, def-use) of the tree-sitter graphs, checked on hand-written C."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tree_sitter

from streamguard_core.config import PreprocessConfig
from streamguard_core.preprocess.parse import (
    AST_EDGE_TYPES,
    DEF_USE,
    EDGE_TYPES,
    LANGUAGES,
    LAST_WRITE,
    GraphBuilder,
    node_type_vocab,
)

VOCAB = node_type_vocab()
DEVIGN = Path(__file__).resolve().parents[3] / "shared" / "data" / "devign_valid.jsonl.gz"


def _occurrences(src: str, lang: str = "c") -> list[str]:
    """``name#k`` (k-th occurrence of the variable ``name``) of every ``identifier`` leaf, in
    source order, from an independent tree-sitter parse."""
    tree = tree_sitter.Parser(LANGUAGES[lang]).parse(src.encode())
    seen: Counter[str] = Counter()
    out: list[str] = []

    def visit(node: tree_sitter.Node) -> None:
        if node.type == "identifier":
            name = node.text.decode()  # type: ignore[union-attr]
            out.append(f"{name}#{seen[name]}")
            seen[name] += 1
        for child in node.children:
            visit(child)

    visit(tree.root_node)
    return out


def flow(src: str, kind: str, lang: str = "c") -> set[tuple[str, str]]:
    """The ``kind`` edges of ``src``'s graph between variable occurrences, as name#k pairs."""
    graph = GraphBuilder(language=lang, data_flow_edges=True).build(src)
    identifiers = [i for i, t in enumerate(graph.node_type) if VOCAB[t] == "identifier"]
    labels = _occurrences(src, lang)
    assert len(identifiers) == len(labels), "graph and parse disagree on the identifiers"
    label = dict(zip(identifiers, labels, strict=True))
    code = EDGE_TYPES.index(kind)
    src_row, dst_row = graph.edge_index
    return {
        (label[int(s)], label[int(d)])
        for s, d, t in zip(src_row, dst_row, graph.edge_type, strict=True)
        if t == code
    }


def test_edge_type_ids_are_stable():
    assert EDGE_TYPES[:AST_EDGE_TYPES] == ("ast", "next_sibling", "next_use")
    assert (EDGE_TYPES[LAST_WRITE], EDGE_TYPES[DEF_USE]) == ("last_write", "def_use")
    assert (LAST_WRITE, DEF_USE) == (3, 4)


def test_assignment_then_use_gets_a_last_write_edge():
    src = "int f(void) { int x; x = 5; return x; }"
    assert flow(src, "last_write") == {("x#1", "x#2")}
    # the declaration reaches the write and the read
    assert flow(src, "def_use") == {("x#0", "x#1"), ("x#0", "x#2")}


def test_reassignment_moves_the_last_write():
    src = "void f(int a) { int x = a; g(x); x = 2; g(x); g(a); }"
    last_write = flow(src, "last_write")
    assert ("x#0", "x#1") in last_write and ("x#2", "x#3") in last_write
    assert ("x#0", "x#3") not in last_write
    # a parameter is a write: both reads of a come from it
    assert {("a#0", "a#1"), ("a#0", "a#2")} <= last_write
    # the plain write x#2 reads nothing; g is never written
    assert not {e for e in last_write if e[1] == "x#2" or e[0].startswith("g")}


def test_a_write_takes_effect_after_its_right_hand_side():
    last_write = flow("int f(int n) { int x = n; x = x + 1; return x; }", "last_write")
    # x = x + 1: the right-hand x reads the declaration, the return reads the new write
    assert last_write == {("n#0", "n#1"), ("x#0", "x#2"), ("x#1", "x#3")}
    # int y = y; reads nothing: the declarator's write is not yet in effect
    assert flow("int f(void) { int y = y; return y; }", "last_write") == {("y#0", "y#2")}


def test_compound_increment_and_indirect_writes_also_read():
    src = "void f(int *p, char *buf) { int x = 0; x += 1; x++; buf[x] = 0; *p = 1; g(buf, p, x); }"
    last_write = flow(src, "last_write")
    assert {("x#0", "x#1"), ("x#1", "x#2"), ("x#2", "x#3")} <= last_write  # += and ++ read
    assert ("buf#0", "buf#1") in last_write and ("buf#1", "buf#2") in last_write
    assert ("p#0", "p#1") in last_write and ("p#1", "p#2") in last_write


def test_fields_and_types_get_no_data_flow_edges():
    src = "int f(struct s *v) { v->len = 1; size_t n = v->len; return n; }"
    graph = GraphBuilder(data_flow_edges=True).build(src)
    flow_nodes = graph.edge_index[:, graph.edge_type >= AST_EDGE_TYPES].ravel()
    assert flow_nodes.size and {VOCAB[graph.node_type[i]] for i in flow_nodes} == {"identifier"}
    assert ("v#1", "v#2") in flow(src, "last_write")  # v->len = 1 writes through v


def test_no_data_flow_across_functions():
    src = "int f(void) { int x = 1; return x; }\nint g(void) { return x; }"
    assert flow(src, "last_write") == {("x#0", "x#1")}
    assert flow(src, "def_use") == {("x#0", "x#1")}
    # in one batch, each function's edges stay its own and equal its graph built alone
    one, two = "int f(int x) { return x; }", "int g(void) { int x; x = 3; return x; }"
    builder = GraphBuilder(data_flow_edges=True)
    batch = builder.build_many([one, two])
    for i, func in enumerate([one, two]):
        alone, in_batch = builder.build(func), batch.graph(i)
        assert np.array_equal(alone.edge_index, in_batch.edge_index)
        assert np.array_equal(alone.edge_type, in_batch.edge_type)
        assert in_batch.edge_index.max() < in_batch.num_nodes


def test_switch_off_gives_the_ast_graph_unchanged():
    src = "int f(int n) { int s = 0; for (int i = 0; i < n; i++) s += i; return s; }"
    on = GraphBuilder(data_flow_edges=True).build(src)
    off = GraphBuilder(data_flow_edges=False).build(src)
    assert off.edge_type.max() < AST_EDGE_TYPES and (on.edge_type >= AST_EDGE_TYPES).any()
    assert np.array_equal(on.node_type, off.node_type)
    assert np.array_equal(on.node_token, off.node_token)
    assert on.normalized_key == off.normalized_key  # dedup does not depend on the switch
    ast = on.edge_type < AST_EDGE_TYPES
    assert np.array_equal(on.edge_index[:, ast], off.edge_index)
    assert np.array_equal(on.edge_type[ast], off.edge_type)
    # the builder's default is the config's
    default = GraphBuilder().build(src)
    assert PreprocessConfig().data_flow_edges == bool((default.edge_type >= AST_EDGE_TYPES).any())


def test_cpp_retry_and_truncation_keep_edges_valid():
    cpp = (
        "template <typename T> T sum(const std::vector<T> &v) {\n"
        "  T total = 0;\n  for (auto x : v) total += x;\n  return total;\n}"
    )
    auto = GraphBuilder(data_flow_edges=True).build(cpp)  # C first, then the C++ retry kept
    direct = GraphBuilder(language="cpp", data_flow_edges=True).build(cpp)
    assert auto.language == "cpp"
    assert np.array_equal(auto.edge_index, direct.edge_index)
    assert np.array_equal(auto.edge_type, direct.edge_type)
    assert ("x#0", "x#1") in flow(cpp, "last_write", "cpp")  # the range-for variable
    body = " ".join(f"x = x + {i};" for i in range(200))
    cut = GraphBuilder(max_nodes=100, data_flow_edges=True).build(f"void f(int x) {{ {body} }}")
    assert cut.truncated and cut.edge_index.max() < cut.num_nodes == 100
    assert (cut.edge_type == LAST_WRITE).any()


@pytest.mark.skipif(not DEVIGN.exists(), reason=f"{DEVIGN} not present")
def test_real_functions_have_forward_edges_between_variables():
    with gzip.open(DEVIGN, "rt") as f:
        funcs = [json.loads(line)["func"] for _, line in zip(range(60), f, strict=False)]
    batch = GraphBuilder(data_flow_edges=True).build_many(funcs)
    with_flow = 0
    for i in range(len(funcs)):
        graph = batch.graph(i)
        flow_edges = graph.edge_type >= AST_EDGE_TYPES
        src, dst = graph.edge_index[:, flow_edges]
        # writes and declarations come before what they reach; both ends are variables
        assert (src < dst).all()
        ends = np.concatenate([src, dst])
        assert {VOCAB[graph.node_type[j]] for j in ends} <= {"identifier"}
        with_flow += bool(flow_edges.any())
    assert with_flow >= len(funcs) * 0.9
