"""Tests for streamguard_core.data.synthetic: determinism, shape, C validity, no shortcuts."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import tree_sitter
import tree_sitter_c

from streamguard_core.data.normalize import normalized_key
from streamguard_core.data.synthetic import SYNTHETIC_CWES, generate_synthetic
from streamguard_core.schema import FunctionRecord

# Words that would let a model read the label off names or comments instead of the code.
BANNED = re.compile(r"bad|good|vul|fix|safe|flaw|cwe", re.IGNORECASE)


@pytest.fixture(scope="module")
def small() -> list[FunctionRecord]:
    return generate_synthetic(pairs_per_cwe=10, seed=42)


@pytest.fixture(scope="module")
def default() -> list[FunctionRecord]:
    return generate_synthetic(pairs_per_cwe=40, seed=42)


def pairs(records: list[FunctionRecord]) -> list[tuple[FunctionRecord, FunctionRecord]]:
    return list(zip(records[::2], records[1::2], strict=True))


def test_same_seed_is_byte_identical() -> None:
    a = generate_synthetic(pairs_per_cwe=5, seed=7)
    b = generate_synthetic(pairs_per_cwe=5, seed=7)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]


def test_different_seed_gives_different_functions() -> None:
    a = generate_synthetic(pairs_per_cwe=5, seed=1)
    b = generate_synthetic(pairs_per_cwe=5, seed=2)
    assert [r.id for r in a] == [r.id for r in b]
    differing = sum(x.func != y.func for x, y in zip(a, b, strict=True))
    assert differing > 0.9 * len(a)


def test_subset_of_cwes_matches_full_run() -> None:
    # Sub-seeds are per (seed, cwe, pair), so asking for fewer CWEs must not change the rest.
    full = {r.id: r.func for r in generate_synthetic(pairs_per_cwe=3, seed=5)}
    part = generate_synthetic(pairs_per_cwe=3, seed=5, cwes=["CWE-416", "CWE-78"])
    assert [r.cwe for r in part[::6]] == ["CWE-416", "CWE-78"]
    assert all(full[r.id] == r.func for r in part)


def test_counts_balance_and_record_fields(small: list[FunctionRecord]) -> None:
    assert len(SYNTHETIC_CWES) >= 12
    assert len(small) == 2 * 10 * len(SYNTHETIC_CWES)
    assert Counter(r.label for r in small) == {1: len(small) // 2, 0: len(small) // 2}
    assert Counter(r.cwe for r in small) == {cwe: 20 for cwe in SYNTHETIC_CWES}
    assert len({r.id for r in small}) == len(small)
    for r in small:
        i = r.meta["pair"]
        group = f"synthetic:{r.cwe}:{i:05d}"
        assert r.id == f"{group}:{'vul' if r.label else 'fix'}"
        assert r.group == group
        assert (r.source, r.project, r.idx, r.weight) == ("synthetic", "synthetic", None, 1.0)
        assert re.fullmatch(r"CWE-\d+", r.cwe or "")
        assert isinstance(r.meta["template"], str) and r.meta["template"]


def test_several_templates_per_cwe(small: list[FunctionRecord]) -> None:
    templates: dict[str, set[str]] = {}
    for r in small:
        templates.setdefault(r.cwe or "", set()).add(r.meta["template"])
    assert all(len(names) >= 2 for names in templates.values()), templates


def test_all_functions_parse_without_errors(small: list[FunctionRecord]) -> None:
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_c.language()))
    for r in small:
        root = parser.parse(r.func.encode()).root_node
        assert not root.has_error, f"{r.id}\n{r.func}"
        defs = [c for c in root.named_children if c.type != "comment"]
        assert [c.type for c in defs] == ["function_definition"], r.id


def test_no_label_revealing_words(default: list[FunctionRecord]) -> None:
    # Stricter than identifiers and comments: the whole text, string literals included.
    for r in default:
        match = BANNED.search(r.func)
        assert match is None, f"{r.id} contains {match.group()!r}"


def test_pairs_share_group_and_names_but_differ(small: list[FunctionRecord]) -> None:
    for vul, fix in pairs(small):
        assert (vul.label, fix.label) == (1, 0)
        assert vul.group == fix.group and vul.meta == fix.meta and vul.cwe == fix.cwe
        assert vul.func != fix.func
        assert normalized_key(vul.func) != normalized_key(fix.func)
        # Same signature: function name, parameter names and types are shared.
        assert vul.func.split("\n", 1)[0] == fix.func.split("\n", 1)[0]


def test_pairs_share_noise_and_differ_only_locally(small: list[FunctionRecord]) -> None:
    # Noise is drawn once per pair, so leading and trailing lines match; the flaw/fix is a
    # small edit in between, never a rewrite of the whole function.
    for vul, fix in pairs(small):
        a, b = vul.func.splitlines(), fix.func.splitlines()
        head = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
        tail = next(i for i, (x, y) in enumerate(zip(a[::-1], b[::-1], strict=False)) if x != y)
        assert head >= 1 and tail >= 1, vul.id
        assert head + tail >= min(len(a), len(b)) // 3, vul.id


def test_near_duplicate_rate_is_low(default: list[FunctionRecord]) -> None:
    keys = Counter(normalized_key(r.func) for r in default)
    shared = sum(1 for r in default if keys[normalized_key(r.func)] > 1)
    assert shared / len(default) < 0.10


def test_cwe_subset_and_spelling() -> None:
    records = generate_synthetic(pairs_per_cwe=2, seed=3, cwes=["cwe-134", " CWE-369 "])
    assert [r.cwe for r in records] == ["CWE-134"] * 4 + ["CWE-369"] * 4


def test_unknown_cwe_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"CWE-9999.*supported: .*CWE-120"):
        generate_synthetic(pairs_per_cwe=1, cwes=["CWE-120", "CWE-9999"])


def test_duplicate_cwe_is_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        generate_synthetic(pairs_per_cwe=1, cwes=["CWE-120", "CWE-120"])


@pytest.mark.parametrize("count", [0, -3])
def test_bad_pair_count_is_rejected(count: int) -> None:
    with pytest.raises(ValueError, match="pairs_per_cwe"):
        generate_synthetic(pairs_per_cwe=count)
