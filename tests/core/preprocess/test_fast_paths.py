"""The fast paths of preprocessing against plain reference versions, on real functions: the
risky-construct regex, trimmed character spans, edge assembly, the write stage's slicing and the
pool's split of graphs and tokens all give exactly what the straightforward code gives."""

from __future__ import annotations

import gzip
import json
import re
from itertools import pairwise

import numpy as np
import pytest

from streamguard_core.config import PreprocessConfig
from streamguard_core.preprocess import parse, run, tokens

N_FUNCTIONS = 300


@pytest.fixture(scope="module")
def real_funcs(shared_data) -> list[str]:
    funcs = []
    with gzip.open(shared_data / "devign_valid.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            funcs.append(json.loads(line)["func"])
            if len(funcs) == N_FUNCTIONS:
                break
    long_chars = (PreprocessConfig().max_seq_len - 2) * tokens.PREFILTER_CHARS_PER_TOKEN
    assert sum(len(f) > long_chars for f in funcs) >= 5  # the prefilter and trimming run
    return funcs


def test_risky_hits_match_a_plain_alternation(real_funcs):
    words = sorted((w for _, ws in tokens.RISKY_WORDS.values() for w in ws), key=len, reverse=True)
    plain = re.compile(r"\b(" + "|".join(words) + r")\b")

    def reference(func: str) -> list[tuple[int, str]]:
        hits = [(m.start(), tokens._CATEGORY[m.group(1)]) for m in plain.finditer(func)]
        hits += [(m.start(), tokens._CATEGORY[m.group()]) for m in tokens._SYMBOL_RE.finditer(func)]
        return sorted(hits)

    edge_cases = ["memcpyx memcpy_ _memcpy memcpy", "free(p); freep(q); av_freep(&r)",
                  "é_gets gets", "2read read2 read", "CopyMemoryA CopyMemory",
                  "newline new new0 g_new0"]  # fmt: skip
    found = 0
    for func in [*real_funcs, *edge_cases]:
        assert tokens.risky_hits(func) == reference(func), func[:80]
        found += len(reference(func))
    assert found > 1000


def test_char_spans_match_the_merge_loop():
    """The vectorised spans against the plain merge loop (``run._char_spans_loop``: the
    reference, and what unordered offsets fall back to)."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 40))
        starts = np.sort(rng.integers(0, 200, n))
        if rng.random() < 0.2:  # unordered or inverted offsets take the loop; same answer
            starts = rng.integers(0, 200, n)
        offsets = np.stack([starts, starts + rng.integers(-2, 12, n)], axis=1).astype(np.int32)
        assert run._char_spans(offsets) == run._char_spans_loop(offsets)


def _edges_reference(parents: list[list[int]], uses, flows):
    """Per graph: AST edges in child order, sibling edges by parent, then use and flow edges."""
    out = []
    for g, par in enumerate(parents):
        ast = [(p, c) for c, p in enumerate(par) if p >= 0]
        sib = []
        for p in sorted({p for p in par if p >= 0}):
            kids = [c for c, q in enumerate(par) if q == p]
            sib += list(pairwise(kids))
        edges = ast + sib + uses[g] + [(s, d) for s, d, _ in flows[g]]
        types = [0] * len(ast) + [1] * len(sib) + [2] * len(uses[g]) + [t for *_, t in flows[g]]
        out.append((edges, types))
    return out


@pytest.mark.parametrize("data_flow", [False, True])
def test_assembled_edges_match_a_per_graph_reference(real_funcs, data_flow):
    builder = parse.GraphBuilder(data_flow_edges=data_flow)
    funcs = real_funcs[:120]
    acc = parse._Lists()
    infos = [builder._add(f, None, acc) for f in funcs]
    sizes = [i.num_nodes for i in infos]
    starts = np.concatenate([[0], np.cumsum(sizes)])

    def local(pairs, g):
        return [(s - starts[g], d - starts[g]) for s, d in pairs]

    def graph_of(node: int) -> int:
        return int(np.searchsorted(starts, node, side="right") - 1)

    parents = [[p - starts[g] if p >= 0 else -1 for p in acc.parent[starts[g] : starts[g + 1]]]
               for g in range(len(funcs))]  # fmt: skip
    uses = [[] for _ in funcs]
    for s, d in zip(acc.use_src, acc.use_dst, strict=True):
        uses[graph_of(s)].append((s, d))
    flows = [[] for _ in funcs]
    for s, d, t in zip(acc.flow_src, acc.flow_dst, acc.flow_type, strict=True):
        flows[graph_of(s)].append((s, d, t))
    uses = [local(u, g) for g, u in enumerate(uses)]
    flows = [[(s - starts[g], d - starts[g], t) for s, d, t in f] for g, f in enumerate(flows)]
    assert sum(map(len, flows)) > 0 if data_flow else not any(flows)

    batch = parse.GraphBatch(*acc.assemble(sizes), infos)
    expected = _edges_reference(parents, uses, flows)
    for g, (edges, types) in enumerate(expected):
        graph = batch.graph(g)
        assert graph.edge_index.dtype == np.int32 and graph.edge_type.dtype == np.int8
        assert [tuple(e) for e in graph.edge_index.T.tolist()] == edges
        assert graph.edge_type.tolist() == types


@pytest.fixture(scope="module")
def tokenizer_dir(real_funcs, tmp_path_factory):
    return tokens.train_bpe_tokenizer(real_funcs, tmp_path_factory.mktemp("tok"), vocab_size=600)


def test_take_slices_match_masks(real_funcs, tokenizer_dir):
    cfg = PreprocessConfig(chunk_size=64)
    (chunk,) = run.process_functions([(f, None) for f in real_funcs[:64]], tokenizer_dir, cfg, 1)
    rng = np.random.default_rng(1)
    for fmask in [rng.random(64) < 0.8, rng.random(64) < 0.3, np.arange(64) % 2 == 0]:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in run._ARRAY_KEYS}
        run._take(parts, chunk, fmask)
        masks = {"n_tokens": np.repeat(fmask, chunk.n_tokens),
                 "n_nodes": np.repeat(fmask, chunk.n_nodes),
                 "n_edges": np.repeat(fmask, chunk.n_edges)}  # fmt: skip
        per = {"input_ids": "n_tokens", "offsets": "n_tokens", "node_type": "n_nodes",
               "node_token": "n_nodes", "edge_type": "n_edges"}  # fmt: skip
        for key in run._ARRAY_KEYS:
            got = np.concatenate(parts[key], axis=1 if key == "edge_index" else 0)
            if key == "edge_index":
                want = chunk.edge_index[:, masks["n_edges"]]
            elif key in per:
                want = getattr(chunk, key)[masks[per[key]]]
            else:
                want = getattr(chunk, key)[fmask]
            assert got.dtype == want.dtype and np.array_equal(got, want), key


def test_pool_graphs_and_tokens_match_in_process(real_funcs, tokenizer_dir):
    """The pool builds a chunk's graphs and tokens as two tasks (graphs while the BPE trains):
    put together they are what one in-process pass makes, for every part."""
    items = [(f, None) for f in real_funcs[:150]]
    cfg = PreprocessConfig(chunk_size=32, data_flow_edges=True)
    for parts in run.PARTS:
        alone = run.process_functions(items, tokenizer_dir, cfg, workers=1, parts=parts)
        pooled = run.process_functions(items, tokenizer_dir, cfg, workers=2, parts=parts)
        assert len(alone) == len(pooled) == 5
        for a, b in zip(alone, pooled, strict=True):
            assert a.info == b.info
            for key in run._ARRAY_KEYS:
                x, y = getattr(a, key), getattr(b, key)
                assert x.dtype == y.dtype and np.array_equal(x, y), (parts, key)
