"""Line scores of the TF-IDF baselines: a planted token's line comes first, the scores are the
logit's exact decomposition, and the occurrences found are the ones scikit-learn counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _explain_testkit import planted_data
from sklearn.feature_extraction.text import CountVectorizer

from streamguard_core.config import BaselineConfig
from streamguard_core.data.loaders import DataError
from streamguard_core.explain import load_explainer, top_lines
from streamguard_core.explain.baseline import char_wb_occurrences, token_occurrences
from streamguard_core.explain.lines import line_starts
from streamguard_core.models.baseline import CODE_TOKEN_PATTERN, BaselineDetector


@pytest.fixture(scope="module", params=["tokens", "chars"])
def planted_model(request, tmp_path_factory) -> tuple[Path, BaselineDetector]:
    features = request.param
    ngrams = {"ngram_min": 2, "ngram_max": 4} if features == "chars" else {}
    cfg = BaselineConfig(features=features, min_df=1, **ngrams)
    funcs, labels, _ = planted_data(80, seed=1)
    det = BaselineDetector(cfg)
    det.fit(funcs, labels)
    return det.save(tmp_path_factory.mktemp("baseline") / features), det


def test_planted_token_line_ranks_first(planted_model) -> None:
    model_dir, _ = planted_model
    explainer = load_explainer(model_dir)
    assert explainer.explains_lines
    funcs, _, lines = planted_data(20, seed=99)
    scored = [(f, line) for f, line in zip(funcs, lines, strict=True) if line]
    scores = explainer.line_scores([f for f, _ in scored])
    for (text, line), per_line in zip(scored, scores, strict=True):
        assert per_line.shape == (len(line_starts(text)),)
        assert top_lines(text, per_line, 1)[0].line == line, (text, per_line)


def test_line_scores_sum_to_the_logit_minus_intercept(planted_model) -> None:
    model_dir, det = planted_model
    funcs, _, _ = planted_data(12, seed=5)
    funcs.append("int weird(void) {\n  return 'x' + \"caf\u00e9\" ;\n}\n\n")
    scores = load_explainer(model_dir, detector=det).line_scores(funcs)
    logits = det.classifier.decision_function(det.vectorizer.transform(funcs))
    sums = np.asarray([s.sum() for s in scores])
    np.testing.assert_allclose(sums, logits - det.classifier.intercept_[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 3), (2, 3)])
def test_token_occurrences_are_the_counts_sklearn_makes(ngram_range) -> None:
    funcs, _, _ = planted_data(10, seed=3)
    counter = CountVectorizer(token_pattern=CODE_TOKEN_PATTERN, lowercase=False,
                              ngram_range=ngram_range).fit(funcs)  # fmt: skip
    counts = counter.transform(funcs).toarray()
    for text, row in zip(funcs, counts, strict=True):
        spans, terms, shares = token_occurrences(text, counter.vocabulary_, ngram_range)
        mine = np.bincount(terms, weights=shares, minlength=len(row))
        np.testing.assert_allclose(mine, row)
        # every piece is a real token of the text
        assert all(text[a:b].strip() == text[a:b] and b > a for a, b in spans)


@pytest.mark.parametrize("ngram_range", [(1, 2), (2, 5), (3, 3)])
def test_char_wb_occurrences_are_the_counts_sklearn_makes(ngram_range) -> None:
    funcs, _, _ = planted_data(6, seed=4)
    funcs.append("a  b\t\tcc\n\n x y->z  ")
    counter = CountVectorizer(analyzer="char_wb", lowercase=False,
                              ngram_range=ngram_range).fit(funcs)  # fmt: skip
    counts = counter.transform(funcs).toarray()
    for text, row in zip(funcs, counts, strict=True):
        spans, terms, shares = char_wb_occurrences(text, counter.vocabulary_, ngram_range)
        np.testing.assert_allclose(np.bincount(terms, weights=shares, minlength=len(row)), row)
        assert (spans[:, 1] > spans[:, 0]).all()
        assert all(not text[a:b].isspace() for a, b in spans)


def test_metrics_trees_have_no_line_signal(tmp_path) -> None:
    funcs, labels, _ = planted_data(40, seed=2)
    det = BaselineDetector(BaselineConfig(features="metrics", trees=5, tree_min_samples_leaf=2))
    det.fit(funcs, labels)
    explainer = load_explainer(det.save(tmp_path / "metrics"))
    assert explainer.explains_lines is False
    scores = explainer.line_scores(funcs[:3])
    assert [len(s) for s in scores] == [len(line_starts(f)) for f in funcs[:3]]
    assert all(not s.any() for s in scores)


def test_not_a_model_directory_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DataError, match=r"no model_card\.json"):
        load_explainer(tmp_path)
    (tmp_path / "model_card.json").write_text('{"kind": "svm"}')
    with pytest.raises(DataError, match="'svm' has no explainer"):
        load_explainer(tmp_path)
    with pytest.raises(ValueError, match="ig_steps"):
        load_explainer(tmp_path, ig_steps=0)
