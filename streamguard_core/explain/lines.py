"""Line-level scores: map token, node or term attributions of a function to its source lines.

Every explainer ends here: it produces scores over character ranges of the function text
(tokens with their offsets, graph nodes with their byte spans, TF-IDF terms with their
occurrences), :func:`char_scores_to_lines` sums them per line, and :func:`top_lines` keeps the
``k`` lines that push the prediction most towards "vulnerable". Lines are 1-based and relative
to the function's first line; ``scan`` shifts them to file lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class LineScore:
    """One source line and its attribution (higher: pushes towards "vulnerable")."""

    line: int
    score: float


def line_starts(text: str) -> np.ndarray:
    """Character offset at which every line of ``text`` starts, shape [n_lines] (1 for "")."""
    starts = [0]
    starts.extend(i + 1 for i, ch in enumerate(text) if ch == "\n")
    return np.asarray(starts, dtype=np.int64)


def char_scores_to_lines(text: str, spans: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Sum the score of every character range onto the line it starts on.

    Args:
        text: the function the ranges index (character offsets, not bytes).
        spans: [n, 2] start/end character offsets (end exclusive); ranges with start == end
            (special tokens) are ignored.
        scores: [n] one score per range.

    Returns:
        [n_lines] float64, one summed score per line of ``text``.
    """
    starts = line_starts(text)
    out = np.zeros(len(starts), dtype=np.float64)
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(spans) != len(scores):
        raise ValueError(f"{len(spans)} spans but {len(scores)} scores")
    real = spans[:, 1] > spans[:, 0]
    lines = np.searchsorted(starts, spans[real, 0], side="right") - 1
    np.add.at(out, np.clip(lines, 0, len(starts) - 1), scores[real])
    return out


def code_lines(text: str) -> np.ndarray:
    """Boolean mask [n_lines]: the line holds something other than blanks and braces.

    The candidates :func:`top_lines` ranks and the random reference draws from.
    """
    return np.asarray([bool(line.strip().strip("{}").strip()) for line in text.split("\n")])


def top_lines(text: str, line_scores: np.ndarray, k: int) -> list[LineScore]:
    """The ``k`` code lines with the highest score, highest first (ties: earlier line first).

    Blank and brace-only lines are never reported. Lines are 1-based within ``text``.
    """
    mask = code_lines(text)
    if len(line_scores) != len(mask):
        raise ValueError(f"{len(line_scores)} line scores for {len(mask)} lines")
    candidates = np.flatnonzero(mask)
    order = candidates[np.lexsort((candidates, -line_scores[candidates]))]
    return [LineScore(int(i) + 1, float(line_scores[i])) for i in order[:k]]


def chars_of_bytes(text: str, byte_offsets: np.ndarray) -> np.ndarray:
    """Character offsets of byte offsets into ``text`` encoded UTF-8 (surrogatepass), the
    encoding tree-sitter parses; a byte inside a character maps to that character, -1 stays -1.

    Shapes: ``byte_offsets`` [n] -> [n].
    """
    byte_offsets = np.asarray(byte_offsets, dtype=np.int64)
    if text.isascii():
        return byte_offsets.copy()
    widths = np.fromiter((len(ch.encode("utf-8", "surrogatepass")) for ch in text),
                         dtype=np.int64, count=len(text))  # fmt: skip
    char_starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    chars = np.searchsorted(char_starts, byte_offsets, side="right") - 1
    return np.where(byte_offsets < 0, -1, chars)
