"""tree-sitter graphs, checked by hand on small functions."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from streamguard_core.data.normalize import normalized_key
from streamguard_core.preprocess.parse import (
    EDGE_TYPES,
    GraphBuilder,
    fallback_graph,
    name_bucket,
    node_type_vocab,
)

VOCAB = node_type_vocab()


def _types(graph) -> list[str]:
    return [VOCAB[t] for t in graph.node_type]


def _edges(graph, kind: str) -> set[tuple[int, int]]:
    code = EDGE_TYPES.index(kind)
    src, dst = graph.edge_index
    return {
        (int(s), int(d)) for s, d, t in zip(src, dst, graph.edge_type, strict=True) if t == code
    }


def test_small_function_graph_by_hand():
    g = GraphBuilder().build("int f(int n) { return n + 1; }")
    assert g.status == "ok" and g.language == "c"
    # punctuation ( ) { } ; is dropped, operators and keywords stay
    assert _types(g) == [
        "translation_unit",
        "function_definition",
        "primitive_type",
        "function_declarator",
        "identifier",  # f
        "parameter_list",
        "parameter_declaration",
        "primitive_type",
        "identifier",  # n (parameter)
        "compound_statement",
        "return_statement",
        "return",
        "binary_expression",
        "identifier",  # n (use)
        "+",
        "number_literal",
    ]
    assert _edges(g, "ast") == {
        (0, 1), (1, 2), (1, 3), (1, 9), (3, 4), (3, 5), (5, 6), (6, 7), (6, 8),
        (9, 10), (10, 11), (10, 12), (12, 13), (12, 14), (12, 15),
    }  # fmt: skip
    assert _edges(g, "next_sibling") == {
        (2, 3), (3, 9), (4, 5), (7, 8), (11, 12), (13, 14), (14, 15),
    }  # fmt: skip
    assert _edges(g, "next_use") == {(8, 13)}  # parameter n -> its use
    # identifiers and primitive types carry a hashed name, others 0
    assert g.node_token[8] == g.node_token[13] == name_bucket(b"n")
    assert g.node_token[2] == g.node_token[7] == name_bucket(b"int")
    assert g.node_token[0] == g.node_token[12] == 0


def test_comments_never_become_nodes():
    with_comment = GraphBuilder().build("int f(void) { /* FLAW: overflow */ return 0; // bad\n}")
    without = GraphBuilder().build("int f(void) { return 0; }")
    assert "comment" not in _types(with_comment)
    assert _types(with_comment) == _types(without)
    assert with_comment.normalized_key == without.normalized_key


def test_cpp_retry_when_c_fails_badly():
    src = "template <typename T> T max_of(T a, T b) { return a > b ? a : b; }"
    c_only = GraphBuilder(language="c").build(src)
    auto = GraphBuilder().build(src)
    assert c_only.error_fraction > 0.1  # C grammar chokes on templates
    assert auto.language == "cpp" and auto.status == "ok" and auto.error_fraction == 0.0
    assert "template_declaration" in _types(auto)


def test_language_hint_picks_cpp_first():
    g = GraphBuilder().build("class A { public: int get() const { return v; } int v; };", "cpp")
    assert g.language == "cpp" and g.status == "ok"


def test_error_nodes_tolerated():
    g = GraphBuilder().build("int f(int n) { int x = n +; return x; }")
    assert g.status == "ok_with_errors"
    assert "ERROR" in _types(g) and 0.0 < g.error_fraction < 0.1  # kept, not retried
    assert g.num_nodes > 10


def test_token_chain_fallback_when_unparseable():
    garbage = "int f( { { ] ) @@@ $$ ### ;;; (((( ] ] ] } } ) ) @@ !! ~~"
    g = GraphBuilder().build(garbage)
    assert g.status == "fallback" and g.language == "none"
    assert _types(g)[0] == "<fallback_root>"
    n = g.num_nodes
    # root -> every token, and a chain of n-2 next-token edges
    assert _edges(g, "ast") == {(0, i) for i in range(1, n)}
    assert _edges(g, "next_sibling") == {(i, i + 1) for i in range(1, n - 1)}
    assert g.normalized_key == normalized_key(garbage)


def test_fallback_graph_next_use():
    g = fallback_graph("a = b ; a = a + b ;")
    assert _types(g)[1] == "identifier"
    assert (1, 5) in _edges(g, "next_use")  # first a -> second a


def test_max_nodes_truncates():
    body = " ".join(f"x{i} = {i};" for i in range(500))
    g = GraphBuilder(max_nodes=100).build(f"void f(void) {{ int x; {body} }}")
    assert g.truncated and g.num_nodes == 100
    assert g.edge_index.max() < 100


def test_deep_nesting_does_not_recurse():
    deep = "int f(void) { return " + "(" * 5000 + "1" + ")" * 5000 + "; }"
    g = GraphBuilder().build(deep)
    assert g.num_nodes > 5000


def test_tree_key_matches_regex_normalisation():
    a = 'int f(int len) {\n  /* c */ if (len < 64) return -1;\n  return strlen("x");\n}'
    b = 'int g(int size){ if(size<128) return -2; return strlen("yy"); }'
    ga, gb = GraphBuilder().build(a), GraphBuilder().build(b)
    assert ga.normalized_key == gb.normalized_key == normalized_key(a) == normalized_key(b)
    c = 'int g(int size){ if(size<=128) return -2; return strlen("yy"); }'
    assert GraphBuilder().build(c).normalized_key != ga.normalized_key


@pytest.mark.slow
def test_build_many_equals_build(shared_data):
    with gzip.open(shared_data / "devign_valid.jsonl.gz", "rt") as fh:
        funcs = [json.loads(next(fh))["func"] for _ in range(40)]
    builder = GraphBuilder()
    batch = builder.build_many(funcs)
    for i in (0, 7, 39):
        one, many = builder.build(funcs[i]), batch.graph(i)
        assert np.array_equal(one.node_type, many.node_type)
        assert np.array_equal(one.edge_index, many.edge_index)
        assert np.array_equal(one.edge_type, many.edge_type)
        assert one.normalized_key == many.normalized_key
    assert all(batch.info[i].num_nodes > 5 for i in range(40))
    assert int(batch.num_edges.sum()) == batch.edge_index.shape[1]
