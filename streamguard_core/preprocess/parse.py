"""tree-sitter C/C++ parsing into compact AST graphs, with a token-chain fallback.

A graph has one node per AST node that carries meaning (named nodes, operators and keywords;
punctuation and comments are dropped) and these edge types (ids are positions in
:data:`EDGE_TYPES`; new types are appended, so an id keeps its meaning):

* ``0`` parent -> child (AST),
* ``1`` next sibling (children of one parent, in source order),
* ``2`` next use (an identifier to the next occurrence of the same name, a simple def-use
  approximation),
* ``3`` last write, ``4`` def-use: data-flow edges, built only with ``data_flow_edges=True``
  (:attr:`~streamguard_core.config.PreprocessConfig.data_flow_edges`).

Data-flow edges (variables, i.e. ``identifier`` nodes; fields and types have none):

* **last write** (``3``): from the identifier node a variable was last written at to each later
  read of it. Writes are ``x = ...`` and compound ``x += ...``, ``x++``/``--x``, a declarator with
  an initialiser (``int x = ...``, ``T x(...)``), a parameter, and a C++ range-for variable. A
  write through ``a[i] = ...``, ``p->f = ...``, ``s.f = ...`` or ``*p = ...`` counts as a read and
  a write of ``a``/``p``/``s``, as do compound assignments and ``++``/``--``. A write takes effect
  where its expression (or declarator) ends, so ``x = x + 1`` reads the previous ``x``.
* **def-use** (``4``): from the declaring identifier (declaration or parameter) to every later
  occurrence of the name, reads and writes.

"Last" is in source order within the function (the state resets at each function definition):
branches are not told apart (a write in a ``then`` block reaches the ``else`` block) and loop
back-edges are not followed (a write at the end of a loop body does not reach its top). That is
the usual straight-line approximation of reaching definitions, made in the same single cursor walk
(no second pass, no control-flow graph).

Node features are a node-type id from a fixed vocabulary (the union of the C and C++ grammars'
node kinds, so the vocabulary does not depend on the data) and, for identifiers and primitive
types, a hashed name bucket (``node_token``; 0 for other nodes).

When tree-sitter cannot make sense of a function (most of its bytes inside ERROR nodes), the
graph is a token chain over a regex lexer with the same vocabulary and edge types.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import tree_sitter
import tree_sitter_c
import tree_sitter_cpp

from streamguard_core.data.normalize import _TOKEN_RE, C_KEYWORDS, normalized_key

EDGE_TYPES = ("ast", "next_sibling", "next_use", "last_write", "def_use")
AST_EDGE_TYPES = 3
"""The first three types, built from the syntax alone (always present)."""
LAST_WRITE, DEF_USE = EDGE_TYPES.index("last_write"), EDGE_TYPES.index("def_use")
PAD, UNK, FALLBACK_ROOT = "<pad>", "<unk>", "<fallback_root>"
SPECIAL_NODE_TYPES = (PAD, UNK, FALLBACK_ROOT)
NODE_TOKEN_BUCKETS = 1 << 14  # hashed identifier names; 0 means "no name"
_BUCKET_MOD = NODE_TOKEN_BUCKETS - 1

PUNCTUATION = frozenset(["(", ")", "[", "]", "{", "}", ";", ",", '"', "'", "\n", "end"])
# Subtrees read as one leaf: comments (which may leak labels), and literals whose insides
# (quotes, escape sequences) carry no structure worth a node.
OPAQUE = frozenset(
    ["comment", "string_literal", "char_literal", "raw_string_literal", "system_lib_string"]
)
IDENTIFIER_KINDS = frozenset(
    [
        "identifier",
        "field_identifier",
        "type_identifier",
        "statement_identifier",
        "namespace_identifier",
    ]
)
NAMED_TOKEN_KINDS = IDENTIFIER_KINDS | {"primitive_type"}
_KEYWORD_BYTES = frozenset(k.encode() for k in C_KEYWORDS)
_SIGNS = frozenset(b"+-")
_NORM_LITERAL = {
    "number_literal": b"NUM",
    "string_literal": b"STR",
    "raw_string_literal": b"STR",
    "system_lib_string": b"STR",
    "char_literal": b"CHR",
}
ERROR_KIND_ID = 65535  # tree-sitter's builtin error symbol

# An AST is "bad" for C when this fraction of its bytes sits in ERROR nodes (then C++ is tried),
# and unusable (token-chain fallback) above the second threshold.
RETRY_ERROR_FRACTION = 0.10
FALLBACK_ERROR_FRACTION = 0.50

LANGUAGES = {
    "c": tree_sitter.Language(tree_sitter_c.language()),
    "cpp": tree_sitter.Language(tree_sitter_cpp.language()),
}


@lru_cache(maxsize=1)
def node_type_vocab() -> tuple[str, ...]:
    """The fixed node-type vocabulary: specials, then every visible C/C++ node kind, sorted."""
    names: set[str] = {"ERROR"}
    for lang in LANGUAGES.values():
        for kind_id in range(lang.node_kind_count):
            name = lang.node_kind_for_id(kind_id)
            if name and lang.node_kind_is_visible(kind_id) and name not in PUNCTUATION:
                names.add(name)
    return SPECIAL_NODE_TYPES + tuple(sorted(names - set(SPECIAL_NODE_TYPES)))


@lru_cache(maxsize=1)
def node_type_index() -> dict[str, int]:
    """Node-type name -> id (cached; do not mutate)."""
    return {name: i for i, name in enumerate(node_type_vocab())}


def vocab_fingerprint() -> str:
    """Short hash of the vocabulary, stored with processed data to catch mismatches."""
    return hashlib.sha256("\n".join(node_type_vocab()).encode()).hexdigest()[:16]


# Walk actions per node kind (one list lookup per node in the hot loop). The data-flow actions
# (_VAR and after) exist only in tables made with data_flow=True; otherwise those kinds are
# _IDENT / _KEEP and the walk is exactly the AST-only one.
_STRUCTURAL, _KEEP, _IDENT, _NAMED_LEAF, _LITERAL, _COMMENT, _ERROR = range(7)
_VAR, _ASSIGN, _UPDATE, _DECL, _PARAM, _RANGE_FOR, _FUNC = range(7, 14)
# Anonymous kinds (the grammar's literal strings: punctuation, keywords, operators) are leaves,
# so the walk does not try to enter them: _PUNCT is a _STRUCTURAL one, _TOKEN a _KEEP one.
_PUNCT, _TOKEN = range(14, 16)
_DATA_FLOW_ACTIONS = {
    "identifier": _VAR,
    "assignment_expression": _ASSIGN,
    "update_expression": _UPDATE,
    "declaration": _DECL,
    "parameter_declaration": _PARAM,
    "optional_parameter_declaration": _PARAM,
    "for_range_loop": _RANGE_FOR,
    "function_definition": _FUNC,
}
# Role flags of a variable occurrence.
_READ, _WRITE, _DEF = 1, 2, 4
# Declarators wrapping the declared name; lvalues whose base variable a write goes through.
_DECLARATOR_WRAPPERS = frozenset(
    [
        "init_declarator",
        "pointer_declarator",
        "array_declarator",
        "function_declarator",
        "parenthesized_declarator",
        "attributed_declarator",
        "reference_declarator",
    ]
)
_LVALUE_BASES = frozenset(["subscript_expression", "field_expression", "pointer_expression"])


@dataclass(frozen=True)
class _KindTable:
    """Per-grammar lookup lists indexed by ``kind_id`` (65536 long, so ERROR indexes too)."""

    action: list[int]
    vocab_id: list[int]
    literal: list[bytes]  # normalised literal token (NUM/STR/CHR)
    name: list[bytes]  # anonymous kinds: their text, for the normalised token stream
    error_vocab: int


@lru_cache(maxsize=4)
def _kind_table(lang_name: str, data_flow: bool = False) -> _KindTable:
    lang = LANGUAGES[lang_name]
    index = node_type_index()
    action = [_STRUCTURAL] * 65536
    vocab_id = [index[UNK]] * 65536
    literal = [b""] * 65536
    names = [b""] * 65536
    for kind_id in range(lang.node_kind_count):
        name = lang.node_kind_for_id(kind_id) or ""
        named = lang.node_kind_is_named(kind_id)
        keep = lang.node_kind_is_visible(kind_id) and name not in PUNCTUATION
        if name == "comment":
            action[kind_id] = _COMMENT
        elif name in _NORM_LITERAL:
            action[kind_id] = _LITERAL
            literal[kind_id] = _NORM_LITERAL[name]
        elif not keep:
            action[kind_id] = _STRUCTURAL
        elif name in IDENTIFIER_KINDS:
            action[kind_id] = _IDENT
        elif name in NAMED_TOKEN_KINDS:
            action[kind_id] = _NAMED_LEAF
        else:
            action[kind_id] = _KEEP
        if data_flow and named and keep and name in _DATA_FLOW_ACTIONS:
            action[kind_id] = _DATA_FLOW_ACTIONS[name]
        if not named and action[kind_id] in (_STRUCTURAL, _KEEP):
            action[kind_id] = _PUNCT if action[kind_id] == _STRUCTURAL else _TOKEN
        if keep:
            vocab_id[kind_id] = index.get(name, index[UNK])
        if not named and name.strip():
            names[kind_id] = name.encode()
    action[ERROR_KIND_ID] = _ERROR
    vocab_id[ERROR_KIND_ID] = index["ERROR"]
    return _KindTable(action, vocab_id, literal, names, index["ERROR"])


def name_bucket(name: bytes) -> int:
    """Stable hashed bucket (1..NODE_TOKEN_BUCKETS-1) of an identifier's bytes."""
    return zlib.crc32(name) % (NODE_TOKEN_BUCKETS - 1) + 1


@dataclass
class FunctionGraph:
    """One function's graph.

    Shapes: ``node_type`` / ``node_token`` [num_nodes] (int16 / int32), ``edge_index``
    [2, num_edges] (int32, source row first), ``edge_type`` [num_edges] (int8).
    """

    node_type: np.ndarray
    node_token: np.ndarray
    edge_index: np.ndarray
    edge_type: np.ndarray
    status: str = "ok"  # ok | ok_with_errors | fallback
    language: str = "c"
    error_fraction: float = 0.0
    truncated: bool = False
    normalized_key: str = ""

    @property
    def num_nodes(self) -> int:
        return int(self.node_type.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_type.shape[0])


@dataclass
class GraphInfo:
    """Per-function facts about how its graph was made."""

    num_nodes: int
    status: str  # ok | ok_with_errors | fallback
    language: str  # c | cpp | none (fallback)
    error_fraction: float
    truncated: bool
    normalized_key: str


@dataclass
class GraphBatch:
    """Graphs of consecutive functions in CSR layout (edge indices local to each graph).

    Shapes: ``node_type``/``node_token`` [total_nodes]; ``num_nodes`` [num_graphs];
    ``edge_index`` [2, total_edges]; ``edge_type`` [total_edges]; ``num_edges`` [num_graphs];
    ``node_start`` [total_nodes] or None.
    """

    node_type: np.ndarray
    node_token: np.ndarray
    num_nodes: np.ndarray
    edge_index: np.ndarray
    edge_type: np.ndarray
    num_edges: np.ndarray
    info: list[GraphInfo]
    node_start: np.ndarray | None = None
    """``GraphBuilder(keep_positions=True)`` only: the byte (UTF-8, surrogatepass) at which each
    node starts in its function; -1 for a node with no place of its own (the fallback root)."""

    def graph(self, i: int) -> FunctionGraph:
        """The ``i``-th function's graph."""
        n0, n1 = int(self.num_nodes[:i].sum()), int(self.num_nodes[: i + 1].sum())
        e0, e1 = int(self.num_edges[:i].sum()), int(self.num_edges[: i + 1].sum())
        inf = self.info[i]
        return FunctionGraph(
            self.node_type[n0:n1],
            self.node_token[n0:n1],
            self.edge_index[:, e0:e1],
            self.edge_type[e0:e1],
            inf.status,
            inf.language,
            inf.error_fraction,
            inf.truncated,
            inf.normalized_key,
        )


_Mark = tuple[int, int, int, int]


class _Lists:
    """Growing per-chunk node lists; node indices are global within the chunk."""

    __slots__ = (
        "flow_dst",
        "flow_src",
        "flow_type",
        "node_type",
        "parent",
        "token_pos",
        "token_val",
        "use_dst",
        "use_src",
    )

    def __init__(self) -> None:
        self.node_type: list[int] = []
        self.parent: list[int] = []
        self.token_pos: list[int] = []
        self.token_val: list[int] = []
        self.use_src: list[int] = []
        self.use_dst: list[int] = []
        self.flow_src: list[int] = []  # data-flow edges, of type flow_type
        self.flow_dst: list[int] = []
        self.flow_type: list[int] = []

    def mark(self) -> _Mark:
        return len(self.node_type), len(self.token_pos), len(self.use_src), len(self.flow_src)

    def rollback(self, mark: _Mark) -> None:
        n, t, u, f = mark
        del self.node_type[n:], self.parent[n:], self.token_pos[t:], self.token_val[t:]
        del self.use_src[u:], self.use_dst[u:]
        del self.flow_src[f:], self.flow_dst[f:], self.flow_type[f:]

    def assemble(
        self, num_nodes: list[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Edge arrays from parents: AST, next-sibling, next-use and data-flow edges, per graph.

        Nodes are in depth-first order, so the children of one parent appear in source order and
        next-sibling edges are adjacent pairs after a stable sort by parent.
        """
        n = len(self.node_type)
        types = np.fromiter(self.node_type, np.int16, count=n)
        tokens = np.zeros(n, dtype=np.int32)
        if self.token_pos:
            k = len(self.token_pos)
            tokens[np.fromiter(self.token_pos, np.int64, count=k)] = np.fromiter(
                self.token_val, np.int32, count=k
            )
        par = np.fromiter(self.parent, np.int64, count=n)
        ast_dst = np.flatnonzero(par >= 0)
        order = np.argsort(par, kind="stable")
        by_parent = par[order]
        same = by_parent[1:] == by_parent[:-1]
        same &= by_parent[1:] >= 0
        n_ast, n_sib, n_use = len(ast_dst), int(same.sum()), len(self.use_src)
        n_flow = len(self.flow_src)
        src = np.concatenate(
            [
                par[ast_dst],
                order[:-1][same],
                np.fromiter(self.use_src, np.int64, count=n_use),
                np.fromiter(self.flow_src, np.int64, count=n_flow),
            ]
        )
        dst = np.concatenate(
            [
                ast_dst,
                order[1:][same],
                np.fromiter(self.use_dst, np.int64, count=n_use),
                np.fromiter(self.flow_dst, np.int64, count=n_flow),
            ]
        )
        etype = np.empty(len(src), dtype=np.int8)
        etype[:n_ast] = 0
        etype[n_ast : n_ast + n_sib] = 1
        etype[n_ast + n_sib : n_ast + n_sib + n_use] = 2
        etype[n_ast + n_sib + n_use :] = np.fromiter(self.flow_type, np.int8, count=n_flow)
        counts = np.asarray(num_nodes, dtype=np.int64)
        base = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(counts[:-1], out=base[1:])
        graph_of_node = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        # Each of the four edge groups is in graph order already: a stable sort by graph merges
        # them into per-graph runs (AST, sibling, use, flow edges within each graph).
        edge_graph = graph_of_node[src]
        by_graph = np.argsort(edge_graph, kind="stable")
        edge_graph = edge_graph[by_graph]
        shift = base[edge_graph]
        local = np.empty((2, len(src)), dtype=np.int32)
        np.subtract(src[by_graph], shift, out=local[0], casting="unsafe")
        np.subtract(dst[by_graph], shift, out=local[1], casting="unsafe")
        n_edges = np.bincount(edge_graph, minlength=len(counts)).astype(np.int64, copy=False)
        return types, tokens, counts, local, etype[by_graph], n_edges


def _walk(
    tree: tree_sitter.Tree, src: bytes, table: _KindTable, max_nodes: int, acc: _Lists
) -> tuple[int, float, bool, str]:
    """Depth-first cursor walk appending nodes, parents, identifier uses (and, with a data-flow
    kind table, data-flow edges) to ``acc``.

    This loop is the hot path of preprocessing: one lookup per node decides what to do, and it
    only appends to lists; edges are made by :meth:`_Lists.assemble` with numpy once per chunk.
    It also builds the normalised token stream (identifiers -> ID, literals -> NUM/STR/CHR,
    comments dropped) whose hash is the near-duplicate key. Returns (nodes, error fraction,
    truncated, normalised key).
    """
    add_type, add_parent = acc.node_type.append, acc.parent.append
    add_tpos, add_tval = acc.token_pos.append, acc.token_val.append
    add_usrc, add_udst = acc.use_src.append, acc.use_dst.append
    action, vocab_id, literal, kind_name = table.action, table.vocab_id, table.literal, table.name
    keywords, crc32, mod = _KEYWORD_BYTES, zlib.crc32, _BUCKET_MOD
    base = n = len(acc.node_type)
    limit = base + max_nodes
    norm: list[bytes] = []
    add_norm = norm.append
    last_use: dict[bytes, int] = {}
    # data flow (only _VAR and the construct actions touch these)
    add_fsrc, add_fdst, add_ftype = acc.flow_src.append, acc.flow_dst.append, acc.flow_type.append
    last_write: dict[bytes, int] = {}  # variable -> node of its latest effective write
    declared: dict[bytes, int] = {}  # variable -> node of its latest declaration
    targets: dict[int, tuple[int, int]] = {}  # start byte of a written identifier -> role
    deferred: list[tuple[int, bytes, int, int]] = []  # (end byte, name, node, role) innermost last
    error_bytes = 0
    truncated = False
    cursor = tree.walk()
    goto_child, goto_sibling, goto_parent = (
        cursor.goto_first_child,
        cursor.goto_next_sibling,
        cursor.goto_parent,
    )
    parent = -1  # nearest kept ancestor
    parents: list[int] = []  # ``parent`` of the enclosing depths
    push, pop = parents.append, parents.pop
    while True:
        node: tree_sitter.Node = cursor.node  # type: ignore[assignment]  # never None mid-walk
        kid = node.kind_id
        act = action[kid]
        if act == _PUNCT:
            name = kind_name[kid]
            if name:
                add_norm(name)
        elif act == _STRUCTURAL:
            if goto_child():
                push(parent)
                continue
            name = kind_name[kid]
            if name:
                add_norm(name)
        elif act == _COMMENT:
            pass
        else:
            if n >= limit:
                truncated = True
                break
            add_type(vocab_id[kid])
            add_parent(parent)
            current = n
            n += 1
            if act == _TOKEN or (act == _KEEP and not goto_child()):  # a leaf
                name = kind_name[kid]
                if name:
                    add_norm(name)
                else:
                    start, end = node.start_byte, node.end_byte
                    if end > start:
                        add_norm(src[start:end])  # other named leaves: true, NULL, this ...
            elif act == _KEEP:  # the cursor went to its first child
                push(parent)
                parent = current
                continue
            elif act in (_IDENT, _VAR):  # _VAR: also a variable's data-flow edges
                start = node.start_byte
                text = src[start : node.end_byte]
                add_tpos(current)
                add_tval(crc32(text) % mod + 1)
                add_norm(text if text in keywords else b"ID")
                prev = last_use.get(text)
                if prev is not None:
                    add_usrc(prev)
                    add_udst(current)
                last_use[text] = current
                if act == _VAR:
                    while deferred and deferred[-1][0] <= start:  # writes whose expression ended
                        _, w_name, w_node, w_flags = deferred.pop()
                        if w_flags & _WRITE:
                            last_write[w_name] = w_node
                        if w_flags & _DEF:
                            declared[w_name] = w_node
                    role = targets.pop(start, None) if targets else None
                    flags, effective = (_READ, 0) if role is None else role
                    if flags & _READ:
                        prev = last_write.get(text)
                        if prev is not None:
                            add_fsrc(prev)
                            add_fdst(current)
                            add_ftype(LAST_WRITE)
                    if not flags & _DEF:
                        prev = declared.get(text)
                        if prev is not None:
                            add_fsrc(prev)
                            add_fdst(current)
                            add_ftype(DEF_USE)
                    if effective:
                        deferred.append((effective, text, current, flags))
                    else:
                        if flags & _WRITE:
                            last_write[text] = current
                        if flags & _DEF:
                            declared[text] = current
            elif act == _LITERAL:
                start = node.start_byte
                if src[start] in _SIGNS:
                    add_norm(src[start : start + 1])
                add_norm(literal[kid])
            elif act == _NAMED_LEAF:
                text = src[node.start_byte : node.end_byte]
                add_tpos(current)
                add_tval(crc32(text) % mod + 1)
                add_norm(text)
            elif act == _ERROR:  # kept as a node, its bytes counted, its children walked
                error_bytes += node.end_byte - node.start_byte
                if goto_child():
                    push(parent)
                    parent = current
                    continue
            else:  # a data-flow construct: note the variables it writes, then walk it
                if act == _FUNC:  # no data flow across functions
                    last_write.clear()
                    declared.clear()
                    targets.clear()
                    deferred.clear()
                else:
                    start = node.start_byte
                    while deferred and deferred[-1][0] <= start:
                        _, w_name, w_node, w_flags = deferred.pop()
                        if w_flags & _WRITE:
                            last_write[w_name] = w_node
                        if w_flags & _DEF:
                            declared[w_name] = w_node
                    for var_start, flags, effective in _written_variables(node, act):
                        targets[var_start] = (flags, effective)
                if goto_child():
                    push(parent)
                    parent = current
                    continue
        while not goto_sibling():
            if not goto_parent():
                return n - base, error_bytes / max(len(src), 1), False, _key(norm)
            parent = pop()
    return n - base, error_bytes / max(len(src), 1), truncated, _key(norm)


# Kinds that are a node but never walked into (their subtree is one leaf); the other node kinds
# (_KEEP, _ERROR and the data-flow constructs) are walked into, as _STRUCTURAL kinds are.
_LEAF_ACTIONS = frozenset([_IDENT, _VAR, _LITERAL, _NAMED_LEAF, _TOKEN, _PUNCT])


def _node_starts(tree: tree_sitter.Tree, table: _KindTable, max_nodes: int
                 ) -> tuple[list[int], list[int]]:  # fmt: skip
    """Start byte and node-type id of every node :func:`_walk` makes, in its order.

    A second, position-only walk (``GraphBuilder(keep_positions=True)``) so that the hot
    :func:`_walk` is untouched; the builder checks the node types agree with the graph's.
    """
    action, vocab_id = table.action, table.vocab_id
    starts: list[int] = []
    types: list[int] = []
    cursor = tree.walk()
    while True:
        node: tree_sitter.Node = cursor.node  # type: ignore[assignment]  # never None mid-walk
        act = action[node.kind_id]
        descend = act != _COMMENT and act not in _LEAF_ACTIONS
        if act != _STRUCTURAL and act != _COMMENT and act != _PUNCT:
            if len(starts) >= max_nodes:
                return starts, types
            starts.append(node.start_byte)
            types.append(vocab_id[node.kind_id])
        if descend and cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return starts, types


def _declared_variable(node: tree_sitter.Node | None) -> tree_sitter.Node | None:
    """The identifier a declarator declares, through pointer/array/init/... wrappers."""
    while node is not None:
        kind = node.type
        if kind == "identifier":
            return node
        if kind not in _DECLARATOR_WRAPPERS:
            return None
        inner = node.child_by_field_name("declarator")
        if inner is None and node.named_child_count:  # C++ reference_declarator: no field name
            inner = node.named_children[-1]
        node = inner
    return None


def _written_variable(node: tree_sitter.Node | None) -> tuple[tree_sitter.Node, bool] | None:
    """The variable an lvalue writes and whether directly (``x``) or through it (``a[i]``)."""
    direct = True
    while node is not None:
        kind = node.type
        if kind == "identifier":
            return node, direct
        if kind in _LVALUE_BASES:
            node, direct = node.child_by_field_name("argument"), False
        elif kind == "parenthesized_expression" and node.named_child_count:
            node = node.named_children[0]
        else:
            return None
    return None


def _written_variables(node: tree_sitter.Node, act: int) -> list[tuple[int, int, int]]:
    """(start byte, role flags, byte where the write takes effect or 0 = at once) of each
    variable a data-flow construct writes or declares."""
    out: list[tuple[int, int, int]] = []
    if act == _ASSIGN:
        found = _written_variable(node.child_by_field_name("left"))
        if found is not None:
            var, direct = found
            op = node.child_by_field_name("operator")
            plain = op is not None and op.type == "="
            out.append(
                (var.start_byte, _WRITE if plain and direct else _WRITE | _READ, node.end_byte)
            )
    elif act == _UPDATE:
        found = _written_variable(node.child_by_field_name("argument"))
        if found is not None:
            out.append((found[0].start_byte, _WRITE | _READ, node.end_byte))
    elif act == _DECL:
        for declarator in node.children_by_field_name("declarator"):
            name = _declared_variable(declarator)
            if name is None:
                continue
            if declarator.type == "init_declarator":
                out.append((name.start_byte, _DEF | _WRITE, declarator.end_byte))
            else:
                out.append((name.start_byte, _DEF, 0))
    else:  # _PARAM, _RANGE_FOR: declared with a value
        name = _declared_variable(node.child_by_field_name("declarator"))
        if name is not None:
            out.append((name.start_byte, _DEF | _WRITE, 0))
    return out


def _key(norm: list[bytes]) -> str:
    return hashlib.blake2b(b"".join(norm), digest_size=16).hexdigest()


_FALLBACK_KIND = {
    "number": "number_literal",
    "string": "string_literal",
    "char": "char_literal",
    "directive": "#define",
}


def _fallback(
    func: str, max_nodes: int, acc: _Lists, starts: list[int] | None = None
) -> tuple[int, bool]:
    """Token-chain graph from a regex lexer, appended to ``acc``; returns (nodes, truncated).

    A root node is the parent of every token, so the next-sibling edges form the token chain;
    identifiers get next-use edges as in the AST graph. ``starts`` (optional) receives every
    node's start character (-1 for the root).
    """
    index = node_type_index()
    unk, ident = index[UNK], index["identifier"]
    base = len(acc.node_type)
    acc.node_type.append(index[FALLBACK_ROOT])
    acc.parent.append(-1)
    if starts is not None:
        starts.append(-1)
    last_use: dict[str, int] = {}
    truncated = False
    for m in _TOKEN_RE.finditer(func):
        kind = m.lastgroup
        if kind == "comment" or kind == "space":
            continue
        i = len(acc.node_type)
        if i - base >= max_nodes:
            truncated = True
            break
        text = m.group()
        if kind == "ident":
            if text in C_KEYWORDS and text in index:
                vid = index[text]
            else:
                vid = ident
                prev = last_use.get(text)
                if prev is not None:
                    acc.use_src.append(prev)
                    acc.use_dst.append(i)
                last_use[text] = i
            acc.token_pos.append(i)
            acc.token_val.append(name_bucket(text.encode("utf-8", "surrogatepass")))
        elif kind in _FALLBACK_KIND:
            vid = index[_FALLBACK_KIND[kind]]
        else:
            vid = index.get(text, unk)
        acc.node_type.append(vid)
        acc.parent.append(base)
        if starts is not None:
            starts.append(m.start())
    return len(acc.node_type) - base, truncated


def fallback_graph(func: str, max_nodes: int = 20_000) -> FunctionGraph:
    """The token-chain graph of one function (what unparseable functions get)."""
    acc = _Lists()
    n, truncated = _fallback(func, max_nodes, acc)
    arrays = acc.assemble([n])
    batch = GraphBatch(
        *arrays, [GraphInfo(n, "fallback", "none", 1.0, truncated, normalized_key(func))]
    )
    return batch.graph(0)


class GraphBuilder:
    """Parses functions with reusable tree-sitter parsers (one builder per process).

    Args:
        language: ``auto`` (C, then C++ when C fails badly), ``c`` or ``cpp``.
        max_nodes: graphs are cut at this many nodes.
        data_flow_edges: also build the last-write and def-use edges; ``None`` takes
            :attr:`~streamguard_core.config.PreprocessConfig.data_flow_edges`' default.
        keep_positions: also record where every node starts (``GraphBatch.node_start``, for
            line-level explanations). Costs a second parse and walk per function; the graphs
            are the same either way.
    """

    def __init__(
        self,
        language: str = "auto",
        max_nodes: int = 20_000,
        data_flow_edges: bool | None = None,
        keep_positions: bool = False,
    ) -> None:
        if language not in ("auto", "c", "cpp"):
            raise ValueError(f"language must be auto, c or cpp, got {language!r}")
        if data_flow_edges is None:
            from streamguard_core.config import PreprocessConfig  # config imports this module

            data_flow_edges = bool(PreprocessConfig.model_fields["data_flow_edges"].default)
        self.language = language
        self.max_nodes = max_nodes
        self.data_flow_edges = data_flow_edges
        self.keep_positions = keep_positions
        self._parsers = {name: tree_sitter.Parser(lang) for name, lang in LANGUAGES.items()}

    def _parse_into(self, src: bytes, lang: str, acc: _Lists) -> GraphInfo:
        tree = self._parsers[lang].parse(src)
        table = _kind_table(lang, self.data_flow_edges)
        n, err, truncated, key = _walk(tree, src, table, self.max_nodes, acc)
        status = "ok_with_errors" if tree.root_node.has_error else "ok"
        return GraphInfo(n, status, lang, err, truncated, key)

    def _add(self, func: str, hint: str | None, acc: _Lists) -> GraphInfo:
        src = func.encode("utf-8", "surrogatepass")
        first = self.language if self.language != "auto" else (hint or "c")
        mark = acc.mark()
        info = self._parse_into(src, first, acc)
        if self.language == "auto" and info.error_fraction > RETRY_ERROR_FRACTION:
            retry_mark = acc.mark()
            other = self._parse_into(src, "cpp" if first == "c" else "c", acc)
            if other.error_fraction < info.error_fraction:
                # keep the retry: move its nodes down over the first attempt
                _replace(acc, mark, retry_mark)
                info = other
            else:
                acc.rollback(retry_mark)
        if info.error_fraction > FALLBACK_ERROR_FRACTION or info.num_nodes < 2:
            acc.rollback(mark)
            n, truncated = _fallback(func, self.max_nodes, acc)
            info = GraphInfo(
                n, "fallback", "none", info.error_fraction, truncated, normalized_key(func)
            )
        return info

    def build_many(self, funcs: list[str], hints: list[str | None] | None = None) -> GraphBatch:
        """Graphs of many functions at once (edges assembled with one numpy pass)."""
        acc = _Lists()
        hints = hints or [None] * len(funcs)
        infos = [self._add(f, h, acc) for f, h in zip(funcs, hints, strict=True)]
        arrays = acc.assemble([i.num_nodes for i in infos])
        batch = GraphBatch(*arrays, infos)
        if self.keep_positions:
            batch.node_start = self._positions(funcs, batch)
        return batch

    def _positions(self, funcs: list[str], batch: GraphBatch) -> np.ndarray:
        """Start byte of every node of ``batch`` (-1: none), found by walking each function's
        chosen parse (or lexing its fallback) again."""
        parts: list[np.ndarray] = []
        first = 0
        for func, info in zip(funcs, batch.info, strict=True):
            if info.status == "fallback":
                chars: list[int] = []
                relexed = _Lists()
                _fallback(func, self.max_nodes, relexed, chars)
                # character -> byte offsets of the UTF-8 (surrogatepass) text the parser reads
                widths = [len(ch.encode("utf-8", "surrogatepass")) for ch in func]
                byte_of = np.concatenate([[0], np.cumsum(widths, dtype=np.int64)])
                starts = np.where(np.asarray(chars) >= 0, byte_of[np.maximum(chars, 0)], -1)
                types = np.asarray(relexed.node_type)
            else:
                tree = self._parsers[info.language].parse(func.encode("utf-8", "surrogatepass"))
                table = _kind_table(info.language, self.data_flow_edges)
                found, kinds = _node_starts(tree, table, self.max_nodes)
                starts, types = np.asarray(found, dtype=np.int64), np.asarray(kinds)
            built = batch.node_type[first : first + info.num_nodes]
            first += info.num_nodes
            if len(starts) != len(built) or (types != built).any():
                raise AssertionError(  # _node_starts no longer mirrors _walk: a bug
                    f"node positions disagree with the graph ({len(starts)} vs {len(built)} nodes)"
                )
            parts.append(np.asarray(starts, dtype=np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def build(self, func: str, hint: str | None = None) -> FunctionGraph:
        """Graph of one function; ``hint`` ('c'/'cpp') picks the first grammar in auto mode."""
        return self.build_many([func], [hint]).graph(0)


def _replace(acc: _Lists, mark: _Mark, retry_mark: _Mark) -> None:
    """Drop the nodes between ``mark`` and ``retry_mark``, shifting the retry's indices down."""
    shift = retry_mark[0] - mark[0]
    n1, t1, u1, f1 = retry_mark

    def moved(values: list[int]) -> list[int]:
        return [v - shift if v >= 0 else v for v in values]

    node_type, parent = acc.node_type[n1:], moved(acc.parent[n1:])
    token_pos, token_val = moved(acc.token_pos[t1:]), acc.token_val[t1:]
    use_src, use_dst = moved(acc.use_src[u1:]), moved(acc.use_dst[u1:])
    flow_src, flow_dst = moved(acc.flow_src[f1:]), moved(acc.flow_dst[f1:])
    flow_type = acc.flow_type[f1:]
    acc.rollback(mark)
    acc.node_type += node_type
    acc.parent += parent
    acc.token_pos += token_pos
    acc.token_val += token_val
    acc.use_src += use_src
    acc.use_dst += use_dst
    acc.flow_src += flow_src
    acc.flow_dst += flow_dst
    acc.flow_type += flow_type
