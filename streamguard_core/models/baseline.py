"""The strong simple baseline: TF-IDF over code tokens (uni+bigrams) and logistic regression;
with ``features: chars`` the same over character n-grams (a stronger classical detector), and
with ``features: metrics`` gradient-boosted trees over code metrics
(:mod:`~streamguard_core.models.code_metrics`).

Saved without pickle: the vocabulary as JSON and the idf/coefficients as ``.npz``, so loading a
model directory never executes code from it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from streamguard_core.config import BaselineConfig, ThresholdObjective
from streamguard_core.evaluation.metrics import classification_metrics, tune_threshold
from streamguard_core.io import atomic_write_json
from streamguard_core.models.code_metrics import TreeEnsemble, metrics_matrix
from streamguard_core.models.registry import MODEL_CARD

# identifiers, numbers, multi-character operators, then any other single symbol
CODE_TOKEN_PATTERN = r"[A-Za-z_]\w*|\d+|->|\+\+|--|<<=?|>>=?|[<>!=]=|&&|\|\||[^\s\w]"
TREES_FILE = "trees.npz"


class BaselineDetector:
    """TF-IDF + logistic regression (or trees over code metrics) with a validation-tuned
    decision threshold."""

    kind = "baseline"

    def __init__(self, config: BaselineConfig | None = None, seed: int = 42) -> None:
        self.config = config or BaselineConfig()
        self.seed = seed
        # tokens/chars: TF-IDF + logistic regression; metrics: trees (``self.trees``) instead
        self.vectorizer: TfidfVectorizer | None = None
        self.classifier: LogisticRegression | None = None
        if not self.uses_metrics:
            analyzer: dict[str, Any] = (
                {"analyzer": "char_wb"}
                if self.config.features == "chars"
                else {"token_pattern": CODE_TOKEN_PATTERN}
            )
            self.vectorizer = TfidfVectorizer(
                **analyzer,
                lowercase=False,
                ngram_range=(self.config.ngram_min, self.config.ngram_max),
                min_df=self.config.min_df,
                max_features=self.config.max_features,
                sublinear_tf=True,
                dtype=np.float32,
            )
            self.classifier = LogisticRegression(
                C=self.config.C,
                class_weight=None if self.config.class_weight == "none" else "balanced",
                max_iter=self.config.max_iter,
                random_state=self.seed,
            )
        self.trees: TreeEnsemble | None = None  # features "metrics": the fitted ensemble
        self.threshold = 0.5
        self.metadata: dict[str, Any] = {}

    @property
    def uses_metrics(self) -> bool:
        """Code metrics + gradient-boosted trees instead of TF-IDF + logistic regression."""
        return self.config.features == "metrics"

    def _text_model(self) -> tuple[TfidfVectorizer, LogisticRegression]:
        """The TF-IDF vectorizer and classifier (features tokens or chars)."""
        if self.vectorizer is None or self.classifier is None:
            raise ValueError(f"features {self.config.features!r} has no TF-IDF model")
        return self.vectorizer, self.classifier

    def _fit_metrics(self, funcs: list[str], labels: np.ndarray,
                     sample_weight: np.ndarray | None) -> None:  # fmt: skip
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(
            max_iter=self.config.trees,
            learning_rate=self.config.tree_learning_rate,
            min_samples_leaf=self.config.tree_min_samples_leaf,
            class_weight=None if self.config.class_weight == "none" else "balanced",
            early_stopping=False,
            random_state=self.seed,
        )
        model.fit(metrics_matrix(funcs), labels, sample_weight=sample_weight)
        self.trees = TreeEnsemble.from_sklearn(model)

    def fit(
        self,
        train_funcs: list[str],
        train_labels: list[int] | np.ndarray,
        valid_funcs: list[str] | None = None,
        valid_labels: list[int] | np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        threshold_objective: ThresholdObjective | None = None,
        target_precision: float | None = None,
    ) -> dict[str, Any]:
        """Fit (``sample_weight``: per-function loss weights); tune the threshold on the
        validation set for ``threshold_objective`` (None: ``TrainConfig``'s default; see
        :func:`tune_threshold`, ``target_precision`` for "precision"); return its metrics."""
        if len(set(np.asarray(train_labels).tolist())) < 2:
            raise ValueError("the training data holds one class only")
        t0 = time.perf_counter()
        if self.uses_metrics:
            self._fit_metrics(train_funcs, np.asarray(train_labels), sample_weight)
        else:
            vectorizer, classifier = self._text_model()
            x = vectorizer.fit_transform(train_funcs)
            classifier.fit(x, np.asarray(train_labels), sample_weight=sample_weight)
        fit_s = time.perf_counter() - t0
        metrics: dict[str, Any] = {}
        if valid_funcs is not None and valid_labels is not None:
            probs = self.predict_proba(valid_funcs)
            choice = tune_threshold(valid_labels, probs, threshold_objective, target_precision)
            self.threshold = choice.threshold
            metrics = classification_metrics(valid_labels, probs, choice)
        self.metadata = {
            "fit_seconds": round(fit_s, 2),
            "train_size": len(train_funcs),
            "vocabulary_size": (
                None if self.uses_metrics else len(self._text_model()[0].vocabulary_)
            ),
            "valid_metrics": metrics,
        }
        return metrics

    def predict_proba(self, funcs: list[str]) -> np.ndarray:
        """Probability of the vulnerable class per function, shape [n]."""
        if self.uses_metrics:
            if self.trees is None:
                raise ValueError("the metrics model is not fitted")
            return self.trees.predict_proba(metrics_matrix(funcs))
        vectorizer, classifier = self._text_model()
        return classifier.predict_proba(vectorizer.transform(funcs))[:, 1]

    def save(self, model_dir: str | Path, extra_card: dict[str, Any] | None = None) -> Path:
        """Write vocabulary.json, weights.npz and model_card.json (no pickle)."""
        out = Path(model_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self.uses_metrics:
            assert self.trees is not None
            self.trees.save(out / TREES_FILE)
        else:
            vectorizer, classifier = self._text_model()
            vocab = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
            (out / "vocabulary.json").write_text(json.dumps(vocab, ensure_ascii=False))
            np.savez(
                out / "weights.npz",
                idf=vectorizer.idf_.astype(np.float64),
                coef=classifier.coef_.astype(np.float64),
                intercept=classifier.intercept_.astype(np.float64),
            )
        card = {
            "kind": self.kind,
            "config": self.config.model_dump(mode="json"),
            "seed": self.seed,
            "threshold": self.threshold,
            **self.metadata,
            **(extra_card or {}),
        }
        atomic_write_json(out / MODEL_CARD, card)
        return out

    @classmethod
    def load(cls, model_dir: str | Path) -> BaselineDetector:
        """Rebuild a saved detector from its plain files (checked first: no pickle is read).

        Raises:
            ModelDirError: a file is missing, not what it should be, or inconsistent.
        """
        from streamguard_core.models.registry import (
            check_model_files,
            model_errors,
            read_model_card,
        )

        root = Path(model_dir)
        card = read_model_card(root, kind=cls.kind)
        check_model_files(root)
        with model_errors(root, cls.kind):
            return cls._from_files(root, card)

    @classmethod
    def _from_files(cls, root: Path, card: dict[str, Any]) -> BaselineDetector:
        config = dict(card["config"])
        legacy_seed: int = config.pop("seed", 42)  # older cards kept the seed in config
        seed = int(card.get("seed", legacy_seed))
        det = cls(BaselineConfig.model_validate(config), seed=seed)
        det.threshold = float(card["threshold"])
        det.metadata = {
            k: v for k, v in card.items() if k not in ("kind", "config", "seed", "threshold")
        }
        if det.uses_metrics:
            det.trees = TreeEnsemble.load(root / TREES_FILE)
            return det
        vocab = json.loads((root / "vocabulary.json").read_text())
        with np.load(root / "weights.npz", allow_pickle=False) as w:
            idf, coef, intercept = w["idf"], w["coef"], w["intercept"]
        vectorizer, classifier = det._text_model()
        vectorizer.set_params(vocabulary=vocab)
        vectorizer.fit(["x"])  # fixes the vocabulary; idf is set just below
        vectorizer.idf_ = idf
        classifier.classes_ = np.array([0, 1])
        classifier.coef_ = coef
        classifier.intercept_ = intercept
        return det
