"""K-fold assignment of the train split for out-of-fold (OOF) predictions.

Every train function lands in exactly one fold. Near-duplicates stay together: the group of a
function is its normalised key (comments, whitespace, identifiers and literals abstracted: the
key the dedup uses), so two versions of one function that differ only in names never end up on
both sides of a fold boundary. Folds are stratified by label (scikit-learn's
``StratifiedGroupKFold``, seeded), and the assignment depends only on the records and the seed:
every model and every seed of a plan holds out the same functions in fold ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class FoldError(ValueError):
    """The train split cannot be cut into the requested folds (too few rows of a label, or a
    fold that would hold one class only)."""


def fold_groups(records: Sequence[dict[str, Any]]) -> list[str]:
    """The group of each record: its normalised key, else its id (one group per function)."""
    return [str(r.get("normalized_key") or f"id:{r['id']}") for r in records]


def assign_folds(
    records: Sequence[dict[str, Any]], labels: np.ndarray, n_folds: int, seed: int = 0
) -> np.ndarray:
    """Fold index (0..n_folds-1) of every record, shape [len(records)].

    Raises:
        FoldError: a label has fewer groups than ``n_folds``, or a fold would get one class
            only (the message names the counts and what to change).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(records):
        raise ValueError(f"{len(records)} records but {len(y)} labels")
    groups = fold_groups(records)
    for label in (0, 1):
        n_groups = len({g for g, lab in zip(groups, y, strict=True) if lab == label})
        if n_groups < n_folds:
            name = "vulnerable" if label else "safe"
            raise FoldError(
                f"{n_folds} folds need at least {n_folds} {name} functions (distinct "
                f"near-duplicate groups) in train, found {n_groups}: lower plan.n_folds or "
                "add data"
            )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(y), -1, dtype=np.int64)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        folds[held_out] = k
    for k in range(n_folds):
        present = set(y[folds == k].tolist())
        if present != {0, 1}:
            raise FoldError(
                f"fold {k} of {n_folds} holds only label(s) {sorted(present)} "
                f"({int((folds == k).sum())} functions): lower plan.n_folds"
            )
    return folds


def fold_counts(folds: np.ndarray, labels: np.ndarray) -> list[dict[str, int]]:
    """Per fold: functions and vulnerable functions (for reports)."""
    y = np.asarray(labels, dtype=np.int64)
    return [
        {"fold": int(k), "n": int((folds == k).sum()), "vulnerable": int(y[folds == k].sum())}
        for k in range(int(folds.max()) + 1 if len(folds) else 0)
    ]
