"""Tokenizer training and round trip, and vulnerability-aware trimming."""

from __future__ import annotations

import numpy as np
import pytest

from streamguard_core.preprocess.tokens import (
    TokenizerError,
    load_tokenizer,
    risky_hits,
    select_tokens,
    special_ids,
    train_bpe_tokenizer,
)

FUNCS = [
    "static int copy(char *dst, const char *src, size_t n) {\n"
    "  memcpy(dst, src, n);\n  return 0;\n}",
    "int sum(int *a, int n) { int s = 0; for (int i = 0; i < n; i++) s += a[i]; return s; }",
    'void greet(const char *name) { printf("hello %s\\n", name); }',
    "char *dup(const char *s) { char *p = malloc(strlen(s) + 1); strcpy(p, s); return p; }",
] * 5


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return train_bpe_tokenizer(FUNCS, tmp_path_factory.mktemp("tok"), vocab_size=400)


def test_trained_tokenizer_round_trip_with_offsets(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)  # from_pretrained path, as users load it
    assert tok.is_fast and len(tok) > 256
    for func in FUNCS[:4]:
        enc = tok(func, return_offsets_mapping=True)
        ids = enc["input_ids"]
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert tok.decode(ids, skip_special_tokens=True) == func
        # offsets point back into the source text, in order, covering it
        spans = [(s, e) for s, e in enc["offset_mapping"] if e > s]
        assert spans == sorted(spans)
        assert "".join(func[s:e] for s, e in spans).replace(" ", "") == func.replace(" ", "")


def test_special_ids_roberta_layout(tokenizer_dir):
    ids = special_ids(tokenizer_dir)
    assert (ids.cls_id, ids.pad_id, ids.sep_id) == (0, 1, 2)


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(TokenizerError, match="HF_HUB_OFFLINE"):
        load_tokenizer("microsoft/codebert-base")


def test_risky_hits_categories():
    hits = dict((cat, pos) for pos, cat in risky_hits(FUNCS[3]))
    assert {"alloc", "copy", "size"} <= set(hits)
    assert FUNCS[3][hits["copy"] :].startswith("strcpy")


def _starts(text: str) -> np.ndarray:
    # one token per character: easy to reason about positions
    return np.arange(len(text))


def test_no_trim_when_within_budget():
    trim = select_tokens("int x;", _starts("int x;"), budget=100)
    assert not trim.trimmed and len(trim.keep) == 6


def test_vulnerability_aware_trim_keeps_window_around_risky_call():
    func = "void f(char *d, char *s) {" + " x = y + 1;" * 200 + " strcpy(d, s);" + " z = 0;" * 50
    starts = _starts(func)
    trim = select_tokens(func, starts, budget=120, head=20, window=30)
    pos = func.index("strcpy")
    assert trim.trimmed and len(trim.keep) == 120
    assert set(range(20)) <= set(trim.keep.tolist())  # the signature head
    assert set(range(pos - 30, pos + 31)) <= set(trim.keep.tolist())  # window around strcpy
    assert trim.hits["copy"] == 1
    assert len(trim.spans()) >= 2  # head and the window are separate spans
    head = select_tokens(func, starts, budget=120, mode="head")
    assert head.keep.tolist() == list(range(120))
    assert pos not in head.keep


def test_trim_prefers_heavier_categories():
    func = "void f(void) {" + " a[1] = 2;" * 100 + " free(p);" + " b = 1;" * 100
    trim = select_tokens(func, _starts(func), budget=60, head=10, window=20)
    pos = func.index("free(")
    assert pos in trim.keep  # weight-2 free beats weight-1 indexing
