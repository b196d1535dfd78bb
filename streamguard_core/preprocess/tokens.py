"""Tokenizer load-or-train, encoding with offsets, and vulnerability-aware trimming."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
TOKENIZER_JSON = "tokenizer.json"

# Risky constructs and their weight: windows around heavier hits are kept first.
RISKY_WORDS: dict[str, tuple[int, tuple[str, ...]]] = {
    "copy": (
        3,
        (
            "memcpy",
            "memmove",
            "memset",
            "strcpy",
            "strncpy",
            "strcat",
            "strncat",
            "wcscpy",
            "wcsncpy",
            "wcscat",
            "bcopy",
            "strlcpy",
            "strlcat",
            "CopyMemory",
        ),
    ),
    "format": (
        3,
        (
            "printf",
            "sprintf",
            "snprintf",
            "vsprintf",
            "vsnprintf",
            "fprintf",
            "vfprintf",
            "syslog",
            "vsyslog",
            "swprintf",
        ),
    ),
    "input": (
        3,
        (
            "gets",
            "fgets",
            "scanf",
            "sscanf",
            "fscanf",
            "recv",
            "recvfrom",
            "read",
            "fread",
            "getenv",
        ),
    ),
    "exec": (3, ("system", "popen", "execl", "execlp", "execle", "execv", "execvp", "execve")),
    "alloc": (
        2,
        (
            "malloc",
            "calloc",
            "realloc",
            "alloca",
            "av_malloc",
            "av_mallocz",
            "av_realloc",
            "g_malloc",
            "g_malloc0",
            "g_new",
            "g_new0",
            "kmalloc",
            "kzalloc",
            "new",
        ),
    ),
    "free": (2, ("free", "av_free", "av_freep", "g_free", "kfree", "delete")),
    "size": (1, ("sizeof", "strlen")),
}
RISKY_SYMBOLS: dict[str, tuple[int, tuple[str, ...]]] = {
    "index": (1, ("[",)),
    "pointer_arith": (1, ("++", "--", "+=", "-=")),
}
_CATEGORY = {
    token: category
    for table in (RISKY_WORDS, RISKY_SYMBOLS)
    for category, (_, tokens) in table.items()
    for token in tokens
}
_WEIGHT = {cat: w for table in (RISKY_WORDS, RISKY_SYMBOLS) for cat, (w, _) in table.items()}


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex alternation over ``words`` as a prefix trie (``mem(?:cpy|move|set)``): the
    regex engine tries each shared prefix once instead of every word at every position."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + build(node[ch]) for ch in sorted(node) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


_RISKY_WORD_LIST = [w for _, ws in RISKY_WORDS.values() for w in ws]
# Two simple regexes are ~4x faster than one alternation with a group per category. Every word
# is \w characters only, so a match is a whole identifier equal to a risky word; the lookahead
# on the first letters lets the engine skip other positions quickly (~2x faster again).
_WORD_RE = re.compile(
    "(?=[" + re.escape("".join(sorted({w[0] for w in _RISKY_WORD_LIST}))) + "])"
    + r"\b(" + _trie_pattern(_RISKY_WORD_LIST) + r")\b"
)  # fmt: skip
_SYMBOL_RE = re.compile(r"\[|\+\+|--|\+=|-=")


class TokenizerError(Exception):
    """A tokenizer could not be loaded or trained."""


def train_bpe_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> Path:
    """Train a byte-level BPE (RoBERTa/CodeBERT style) and save it ``from_pretrained``-loadable.

    Returns:
        The directory holding ``tokenizer.json`` and ``tokenizer_config.json``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    sep_id, cls_id = tok.token_to_id("</s>"), tok.token_to_id("<s>")
    if sep_id is None or cls_id is None:
        raise TokenizerError("BPE training lost the special tokens <s>/</s>")
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", sep_id),
        ("<s>", cls_id),
        trim_offsets=False,
        add_prefix_space=False,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / TOKENIZER_JSON))
    # What RobertaTokenizerFast.save_pretrained writes, without importing transformers here
    # (its import alone costs ~1.5 s, a tenth of preprocessing Devign's valid split).
    config = {
        "tokenizer_class": "RobertaTokenizer",
        "add_prefix_space": False,
        "trim_offsets": True,
        "errors": "replace",
        "model_max_length": model_max_length,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_tokenizer(name_or_dir: str | Path) -> Any:
    """Load a Hugging Face fast tokenizer from a local directory or a hub name.

    Raises:
        TokenizerError: not a local directory and the hub could not provide it (e.g. offline),
            or the tokenizer is not a fast (Rust) tokenizer, which offsets need.
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_dir))
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (HF_HUB_OFFLINE is set)" if offline else ""
        raise TokenizerError(
            f"cannot load tokenizer {str(name_or_dir)!r}: not a local tokenizer directory and "
            f"the Hugging Face hub could not provide it{hint}. Pass a directory saved with "
            f"save_pretrained, or leave --tokenizer unset to train a BPE on the train split. "
            f"({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(f"tokenizer {name_or_dir!r} is not a fast tokenizer; offsets need one")
    return tok


def save_tokenizer(tok: Any, out_dir: str | Path) -> Path:
    """Save a loaded tokenizer beside the processed data (so the data set is self-contained)."""
    out = Path(out_dir)
    tok.save_pretrained(str(out))
    if not (out / TOKENIZER_JSON).exists():
        raise TokenizerError(f"{out}: tokenizer saved without {TOKENIZER_JSON}")
    return out


@dataclass(frozen=True)
class SpecialIds:
    """Ids the encoder wraps sequences with."""

    cls_id: int
    sep_id: int
    pad_id: int


def special_ids(tokenizer_dir: str | Path) -> SpecialIds:
    """Read the CLS/SEP/PAD ids of a saved tokenizer (RoBERTa names, with BERT fallbacks)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / TOKENIZER_JSON))

    def first(*names: str) -> int:
        for name in names:
            tid = tok.token_to_id(name)
            if tid is not None:
                return int(tid)
        raise TokenizerError(f"{tokenizer_dir}: none of the special tokens {names} exist")

    return SpecialIds(
        first("<s>", "[CLS]", "<|endoftext|>"),
        first("</s>", "[SEP]", "<|endoftext|>"),
        first("<pad>", "[PAD]", "<|endoftext|>"),
    )


@dataclass
class Trim:
    """What trimming kept of one function (token indices exclude the special tokens)."""

    orig_tokens: int
    keep: np.ndarray  # sorted token indices kept
    hits: dict[str, int]

    @property
    def trimmed(self) -> bool:
        return len(self.keep) < self.orig_tokens

    def spans(self) -> list[tuple[int, int]]:
        """Kept token ranges as ``[start, end)`` pairs."""
        if len(self.keep) == 0:
            return []
        breaks = np.nonzero(np.diff(self.keep) != 1)[0]
        starts = np.concatenate([[self.keep[0]], self.keep[breaks + 1]])
        ends = np.concatenate([self.keep[breaks], [self.keep[-1]]]) + 1
        return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def risky_hits(func: str) -> list[tuple[int, str]]:
    """(character offset, category) of every risky construct in a function."""
    hits = [(m.start(), _CATEGORY[m.group(1)]) for m in _WORD_RE.finditer(func)]
    hits += [(m.start(), _CATEGORY[m.group()]) for m in _SYMBOL_RE.finditer(func)]
    hits.sort()
    return hits


# A function longer than budget * this many characters is cut to line-aligned character windows
# (head + around risky constructs) before encoding: there is no point encoding text that the
# token-level trimming would throw away. Code averages 3-4 characters a token, so this keeps
# roughly twice the text the budget can hold.
PREFILTER_CHARS_PER_TOKEN = 8


def prefilter_spans(
    func: str,
    budget: int,
    mode: str = "vulnerability_aware",
    head: int = 32,
    window: int = 24,
    hits: list[tuple[int, str]] | None = None,
) -> list[tuple[int, int]] | None:
    """Line-aligned ``[start, end)`` character spans worth encoding, or None for the whole text.

    The spans hold the head and windows around risky constructs (heavier categories first),
    about ``budget * PREFILTER_CHARS_PER_TOKEN`` characters in all; :func:`select_tokens` then
    picks the exact tokens from their encoding. ``hits``: :func:`risky_hits` of ``func`` when
    the caller has them.
    """
    limit = budget * PREFILTER_CHARS_PER_TOKEN
    if len(func) <= limit:
        return None
    per_token = PREFILTER_CHARS_PER_TOKEN // 2
    if mode == "head":
        wanted = [(0, limit)]
    else:
        wanted = [(0, head * per_token)]
        hits = sorted(
            risky_hits(func) if hits is None else hits, key=lambda h: (-_WEIGHT[h[1]], h[0])
        )
        half = window * per_token
        total = head * per_token
        for pos, _ in hits:
            if total >= limit:
                break
            wanted.append((max(0, pos - half), min(len(func), pos + half)))
            total += 2 * half
        if total < limit:
            wanted.append((0, limit - total))
    spans: list[tuple[int, int]] = []
    for start, end in sorted(wanted):
        start = func.rfind("\n", 0, start) + 1
        newline = func.find("\n", end)
        end = len(func) if newline < 0 else newline + 1
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def select_tokens(
    func: str,
    starts: np.ndarray,
    budget: int,
    mode: str = "vulnerability_aware",
    head: int = 32,
    window: int = 24,
    hits: list[tuple[int, str]] | None = None,
) -> Trim:
    """Choose at most ``budget`` tokens of a function.

    ``vulnerability_aware`` keeps the head (the signature), then windows of ``window`` tokens
    either side of each risky construct (heavier categories first, then source order), then
    fills what is left of the budget from the start. ``head`` keeps the first tokens only.

    Args:
        func: the function text the offsets refer to.
        starts: start character offset of every token, ascending.
        budget: tokens allowed (sequence length minus the special tokens).
        hits: :func:`risky_hits` of ``func`` when the caller has them.
    """
    n = len(starts)
    if n <= budget:
        return Trim(n, np.arange(n), {})
    if mode == "head":
        return Trim(n, np.arange(budget), {})
    if hits is None:
        hits = risky_hits(func)
    counts: dict[str, int] = {}
    for _, cat in hits:
        counts[cat] = counts.get(cat, 0) + 1
    mask = np.zeros(n, dtype=bool)
    mask[: min(head, budget)] = True
    left = budget - int(mask.sum())
    hit_tokens: list[int] = (
        np.searchsorted(starts, [pos for pos, _ in hits], side="right") - 1
    ).tolist()
    order = sorted(range(len(hits)), key=lambda k: (-_WEIGHT[hits[k][1]], hit_tokens[k]))
    for k in order:
        if left <= 0:
            break
        t = hit_tokens[k]
        lo, hi = max(0, t - window), min(n, t + window + 1)
        if mask[lo:hi].all():
            continue
        window_idx = np.arange(lo, hi)
        new_idx = window_idx[~mask[lo:hi]]
        if len(new_idx) > left:  # partial window: the tokens nearest the hit
            new_idx = new_idx[np.argsort(np.abs(new_idx - t), kind="stable")[:left]]
        mask[new_idx] = True
        left -= len(new_idx)
    if left > 0:
        free = np.nonzero(~mask)[0][:left]
        mask[free] = True
    return Trim(n, np.nonzero(mask)[0], counts)
