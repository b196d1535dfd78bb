"""The strong simple baseline: TF-IDF over code tokens (uni+bigrams) and logistic regression.

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

from streamguard_core.config import BaselineConfig
from streamguard_core.evaluation.metrics import best_f1_threshold, classification_metrics
from streamguard_core.io import atomic_write_json

# identifiers, numbers, multi-character operators, then any other single symbol
CODE_TOKEN_PATTERN = r"[A-Za-z_]\w*|\d+|->|\+\+|--|<<=?|>>=?|[<>!=]=|&&|\|\||[^\s\w]"
MODEL_CARD = "model_card.json"


class BaselineDetector:
    """TF-IDF + logistic regression with a validation-tuned decision threshold."""

    kind = "baseline"

    def __init__(self, config: BaselineConfig | None = None, seed: int = 42) -> None:
        self.config = config or BaselineConfig()
        self.seed = seed
        self.vectorizer = TfidfVectorizer(
            token_pattern=CODE_TOKEN_PATTERN,
            lowercase=False,
            ngram_range=(1, self.config.ngram_max),
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
        self.threshold = 0.5
        self.metadata: dict[str, Any] = {}

    def fit(
        self,
        train_funcs: list[str],
        train_labels: list[int] | np.ndarray,
        valid_funcs: list[str] | None = None,
        valid_labels: list[int] | np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Fit (``sample_weight``: per-function loss weights); tune the threshold for vulnerable
        F1 on the validation set; return its metrics."""
        if len(set(np.asarray(train_labels).tolist())) < 2:
            raise ValueError("the training data holds one class only")
        t0 = time.perf_counter()
        x = self.vectorizer.fit_transform(train_funcs)
        self.classifier.fit(x, np.asarray(train_labels), sample_weight=sample_weight)
        fit_s = time.perf_counter() - t0
        metrics: dict[str, Any] = {}
        if valid_funcs is not None and valid_labels is not None:
            probs = self.predict_proba(valid_funcs)
            self.threshold = best_f1_threshold(valid_labels, probs)
            metrics = classification_metrics(valid_labels, probs, self.threshold)
        self.metadata = {
            "fit_seconds": round(fit_s, 2),
            "train_size": len(train_funcs),
            "vocabulary_size": len(self.vectorizer.vocabulary_),
            "valid_metrics": metrics,
        }
        return metrics

    def predict_proba(self, funcs: list[str]) -> np.ndarray:
        """Probability of the vulnerable class per function, shape [n]."""
        return self.classifier.predict_proba(self.vectorizer.transform(funcs))[:, 1]

    def save(self, model_dir: str | Path, extra_card: dict[str, Any] | None = None) -> Path:
        """Write vocabulary.json, weights.npz and model_card.json (no pickle)."""
        out = Path(model_dir)
        out.mkdir(parents=True, exist_ok=True)
        vocab = {term: int(i) for term, i in self.vectorizer.vocabulary_.items()}
        (out / "vocabulary.json").write_text(json.dumps(vocab, ensure_ascii=False))
        np.savez(
            out / "weights.npz",
            idf=self.vectorizer.idf_.astype(np.float64),
            coef=self.classifier.coef_.astype(np.float64),
            intercept=self.classifier.intercept_.astype(np.float64),
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
        """Rebuild a saved detector from its plain files."""
        root = Path(model_dir)
        card = json.loads((root / MODEL_CARD).read_text())
        if card.get("kind") != cls.kind:
            raise ValueError(f"{root}: model kind is {card.get('kind')!r}, not {cls.kind!r}")
        config = dict(card["config"])
        seed = int(card.get("seed", config.pop("seed", 42)))  # older cards kept it in config
        det = cls(BaselineConfig.model_validate(config), seed=seed)
        vocab = json.loads((root / "vocabulary.json").read_text())
        with np.load(root / "weights.npz", allow_pickle=False) as w:
            idf, coef, intercept = w["idf"], w["coef"], w["intercept"]
        det.vectorizer.set_params(vocabulary=vocab)
        det.vectorizer.fit(["x"])  # fixes the vocabulary; idf is set just below
        det.vectorizer.idf_ = idf
        det.classifier.classes_ = np.array([0, 1])
        det.classifier.coef_ = coef
        det.classifier.intercept_ = intercept
        det.threshold = float(card["threshold"])
        det.metadata = {
            k: v for k, v in card.items() if k not in ("kind", "config", "seed", "threshold")
        }
        return det
