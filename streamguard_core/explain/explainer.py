"""The explainer interface and :func:`load_explainer`, which picks one explainer per model kind.

An explainer turns functions into one score per source line (higher: pushes the prediction
towards "vulnerable"). Each model kind has its own module (``baseline``, ``transformer``,
``gnn``, ``fusion``); this one only maps a ``model_card.json`` kind to it.
"""

from __future__ import annotations

import importlib
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from streamguard_core.data.loaders import DataError
from streamguard_core.models.registry import MODEL_CARD

PROGRESS_MIN_FUNCTIONS = 48
"""Below this many functions a progress bar is noise."""


class Explainer(ABC):
    """Line-level attributions of one saved detector."""

    kind: ClassVar[str]
    explains_lines: bool = True
    """False: this model has no per-line signal (e.g. trees over whole-function metrics) and
    :meth:`line_scores` returns zeros; reports should say "not explained" rather than rank."""

    @abstractmethod
    def line_scores(self, funcs: list[str], progress: bool = False) -> list[np.ndarray]:
        """One float64 array per function, one score per line (``len(line_starts(text))``).

        Args:
            funcs: function texts, as the detector scores them.
            progress: a progress bar on stderr when there are more than a few dozen functions.
        """
        ...

    @classmethod
    @abstractmethod
    def from_dir(cls, model_dir: Path, detector: Any | None, ig_steps: int) -> Explainer:
        """The explainer of ``model_dir``, reusing ``detector``'s model where it has one."""
        ...


EXPLAINERS = {
    "baseline": "streamguard_core.explain.baseline:BaselineExplainer",
    "transformer": "streamguard_core.explain.transformer:TransformerExplainer",
    "gnn": "streamguard_core.explain.gnn:GNNExplainer",
    "fusion": "streamguard_core.explain.fusion:FusionExplainer",
}
"""Model-card kind -> the explainer class (imported on first use: torch only when needed)."""


@contextmanager
def progress_bar(total: int, enabled: bool, desc: str) -> Iterator[Callable[[int], object]]:
    """``update(n)`` of a tqdm bar on stderr, or a no-op when disabled or ``total`` is small."""
    from tqdm.auto import tqdm

    with tqdm(
        total=total,
        unit="fn",
        desc=desc,
        file=sys.stderr,
        disable=not enabled or total < PROGRESS_MIN_FUNCTIONS,
    ) as bar:
        yield bar.update


def check_scores(funcs: Sequence[str], scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``scores`` as float64 arrays, checked to hold one value per line of each function."""
    from streamguard_core.explain.lines import line_starts

    out = [np.asarray(s, dtype=np.float64) for s in scores]
    for i, (text, s) in enumerate(zip(funcs, out, strict=True)):
        if s.shape != (len(line_starts(text)),):
            raise AssertionError(
                f"function {i}: {s.shape} scores for {len(line_starts(text))} lines"
            )
    return out


def model_kind(model_dir: str | Path) -> str:
    """The ``kind`` of ``model_dir``'s model card.

    Raises:
        DataError: ``model_dir`` has no ``model_card.json``.
    """
    card = Path(model_dir) / MODEL_CARD
    if not card.exists():
        raise DataError(f"{model_dir}: not a model directory (no {MODEL_CARD})")
    return str(json.loads(card.read_text()).get("kind"))


def load_explainer(model_dir: str | Path, detector: Any | None = None, ig_steps: int = 16
                   ) -> Explainer:  # fmt: skip
    """The explainer of the detector saved in ``model_dir`` (chosen by its model card's kind).

    Args:
        model_dir: a saved detector directory.
        detector: the detector already loaded from ``model_dir``; its torch model (or its base
            detectors, for fusion) is reused when it has one, otherwise the explainer loads
            what it needs from ``model_dir`` (attributions need torch, not onnxruntime).
        ig_steps: integrated-gradients steps of the neural explainers.

    Raises:
        DataError: ``model_dir`` holds no detector, or one of a kind with no explainer.
        ValueError: ``ig_steps`` < 1.
    """
    if ig_steps < 1:
        raise ValueError(f"ig_steps must be >= 1, got {ig_steps}")
    kind = model_kind(model_dir)
    if kind not in EXPLAINERS:
        raise DataError(
            f"{model_dir}: model kind {kind!r} has no explainer (explainable: {sorted(EXPLAINERS)})"
        )
    module, _, name = EXPLAINERS[kind].partition(":")
    cls: type[Explainer] = getattr(importlib.import_module(module), name)
    return cls.from_dir(Path(model_dir), detector, ig_steps)


def file_top_lines(
    explainer: Explainer,
    funcs: Sequence[str],
    first_lines: Sequence[int],
    k: int,
    progress: bool = False,
) -> list[tuple[Any, ...]]:
    """The ``k`` most relevant lines of each function as :class:`LineScore` with *file* line
    numbers (``first_lines``: where each function starts); empty tuples when the model has no
    per-line signal (``explains_lines`` False) rather than zero-scored first lines."""
    from streamguard_core.explain.lines import LineScore, top_lines

    if not explainer.explains_lines or not funcs:
        return [() for _ in funcs]
    scores = explainer.line_scores(list(funcs), progress=progress)
    return [
        tuple(LineScore(first + s.line - 1, s.score) for s in top_lines(text, per_line, k))
        for text, first, per_line in zip(funcs, first_lines, scores, strict=True)
    ]
