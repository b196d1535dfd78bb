"""Line scores of the TF-IDF + logistic-regression baseline: exact, no sampling.

The model's logit is ``intercept + sum_t coef_t * tfidf_t``, so each term ``t`` contributes
``coef_t * tfidf_t``. That contribution is shared equally by the term's occurrences in the
function (a token n-gram's share again equally by its tokens), and every share lands on the
line its characters start on: the line scores sum to ``logit - intercept``.

Occurrences are found the way scikit-learn's analyzers make the terms: ``tokens`` runs
``CODE_TOKEN_PATTERN`` and joins n consecutive tokens with a space; ``chars`` (``char_wb``)
takes character n-grams inside each whitespace-separated word padded with one space on each
side (a padding space is located on the word's first or last character). ``metrics`` (trees
over whole-function code metrics) has no per-line signal: zeros, and ``explains_lines`` is
False.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.explain.explainer import Explainer, check_scores, progress_bar
from streamguard_core.explain.lines import char_scores_to_lines, line_starts
from streamguard_core.models.baseline import CODE_TOKEN_PATTERN, BaselineDetector

_TOKEN_RE = re.compile(CODE_TOKEN_PATTERN)
_WORD_RE = re.compile(r"\S+")  # str.split()'s words: both use Python's isspace()


def token_occurrences(
    text: str, vocabulary: dict[str, int], ngram_range: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every vocabulary token n-gram in ``text``, split into its tokens.

    Returns:
        spans [m, 2] character ranges of the tokens, ``term`` [m] the vocabulary id of the
        n-gram each belongs to, ``share`` [m] the token's share of its occurrence (1/n).
    """
    matches = [(m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text)]
    words = [w for _, _, w in matches]
    spans: list[tuple[int, int]] = []
    terms: list[int] = []
    shares: list[float] = []
    lo, hi = ngram_range
    for n in range(lo, hi + 1):
        for i in range(len(words) - n + 1):
            term = vocabulary.get(words[i] if n == 1 else " ".join(words[i : i + n]))
            if term is None:
                continue
            for start, end, _ in matches[i : i + n]:
                spans.append((start, end))
                terms.append(term)
                shares.append(1.0 / n)
    return _arrays(spans, terms, shares)


def char_wb_occurrences(
    text: str, vocabulary: dict[str, int], ngram_range: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every vocabulary ``char_wb`` n-gram in ``text`` (scikit-learn's ``_char_wb_ngrams``).

    Returns:
        spans [m, 2] character ranges (clipped to the word, never empty), ``term`` [m] vocabulary
        ids, ``share`` [m] all ones.
    """
    spans: list[tuple[int, int]] = []
    terms: list[int] = []
    lo, hi = ngram_range
    for m in _WORD_RE.finditer(text):
        start, end = m.start(), m.end()
        padded = " " + m.group() + " "
        size = len(padded)
        for n in range(lo, hi + 1):
            offset = 0
            while True:
                term = vocabulary.get(padded[offset : offset + n])
                if term is not None:
                    # offset o of the padded word is character start + o - 1 of the text
                    a = min(max(start + offset - 1, start), end - 1)
                    b = min(max(start + offset - 1 + n, a + 1), end)
                    spans.append((a, b))
                    terms.append(term)
                if offset + n >= size:
                    break
                offset += 1
            if offset == 0:  # a word shorter than n counts once, for the smallest such n
                break
    return _arrays(spans, terms, [1.0] * len(terms))


def _arrays(spans: list[tuple[int, int]], terms: list[int], shares: list[float]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    return (
        np.asarray(spans, dtype=np.int64).reshape(-1, 2),
        np.asarray(terms, dtype=np.int64),
        np.asarray(shares, dtype=np.float64),
    )


class BaselineExplainer(Explainer):
    """Exact per-term contributions of a TF-IDF + logistic-regression baseline, on lines."""

    kind = "baseline"

    def __init__(self, detector: BaselineDetector) -> None:
        self.detector = detector
        self.explains_lines = not detector.uses_metrics
        cfg = detector.config
        self.ngram_range = (cfg.ngram_min, cfg.ngram_max)
        self.occurrences = char_wb_occurrences if cfg.features == "chars" else token_occurrences

    @classmethod
    def from_dir(cls, model_dir: Path, detector: Any | None, ig_steps: int) -> BaselineExplainer:
        """Reuse ``detector`` when it is a :class:`BaselineDetector`, else load ``model_dir``."""
        if not isinstance(detector, BaselineDetector):
            detector = BaselineDetector.load(model_dir)
        return cls(detector)

    def term_contributions(self, funcs: list[str]) -> Any:
        """``coef_t * tfidf_t`` of every term in every function, a sparse CSR matrix [n, V]."""
        vectorizer, classifier = self.detector.vectorizer, self.detector.classifier
        assert vectorizer is not None and classifier is not None
        x = vectorizer.transform(funcs).astype(np.float64)
        return x.multiply(classifier.coef_[0].astype(np.float64)).tocsr()

    def line_scores(self, funcs: list[str], progress: bool = False) -> list[np.ndarray]:
        """Per-line sums of the term contributions (zeros for ``features: metrics``)."""
        if not self.explains_lines:
            return [np.zeros(len(line_starts(text)), dtype=np.float64) for text in funcs]
        vocabulary: dict[str, int] = self.detector.vectorizer.vocabulary_  # type: ignore[union-attr]
        out: list[np.ndarray] = []
        with progress_bar(len(funcs), progress, "explain") as update:
            for start in range(0, len(funcs), 256):
                batch = funcs[start : start + 256]
                contributions = self.term_contributions(batch)
                for i, text in enumerate(batch):
                    row = contributions.getrow(i)
                    per_term = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
                    spans, terms, shares = self.occurrences(text, vocabulary, self.ngram_range)
                    # occurrences of a term: the shares of its pieces sum to one per occurrence
                    count = np.bincount(terms, weights=shares)
                    value = np.asarray([per_term.get(int(t), 0.0) for t in terms])
                    scores = value * shares / np.maximum(count[terms], 1e-12)
                    out.append(char_scores_to_lines(text, spans, scores))
                update(len(batch))
        return check_scores(funcs, out)
