"""Integrated-gradients line scores of tiny GNN and transformer detectors trained in the test:
completeness (attributions add up to the log-odds difference the path spans), the graphs and
tokens are the ones the detector scores, and the planted ``strcpy`` line comes first."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from _explain_testkit import PLANTED, planted_data

from streamguard_core.explain import load_explainer, top_lines
from streamguard_core.explain.gnn import GNNExplainer
from streamguard_core.explain.lines import line_starts
from streamguard_core.explain.transformer import TransformerExplainer
from streamguard_core.models.fusion import to_logits
from streamguard_core.models.registry import load_detector
from streamguard_core.scan.run import scan

GNN_STEPS = 64  # enough quadrature points for completeness within 2 %
TRANSFORMER_STEPS = 256  # the tiny transformer saturates sharply: 64 steps err by ~20 %


@pytest.fixture(scope="module")
def funcs() -> list[str]:
    texts, _, _ = planted_data(12, seed=7)
    return [*texts, "int caf\u00e9(int x) {\n    /* \u00fcber */ return x + 1;\n}"]


def _model_dir(request: pytest.FixtureRequest, kind: str) -> Path:
    path: Path = request.getfixturevalue(f"tiny_{kind}_dir")
    return path


def test_gnn_attributions_are_complete(tiny_gnn_dir, funcs) -> None:
    explainer = load_explainer(tiny_gnn_dir, ig_steps=GNN_STEPS)
    assert isinstance(explainer, GNNExplainer)
    graphs = explainer.graphs(funcs)
    nodes = explainer.node_attributions(graphs)
    ends = np.concatenate([[0], np.cumsum(graphs.num_nodes)])
    sums = np.asarray([nodes[a:b].sum() for a, b in pairwise(ends)])
    at_input, at_baseline = explainer.endpoint_log_odds(graphs)
    gap = at_input - at_baseline
    assert np.abs(gap).max() > 0.5  # the check is not vacuous: inputs move the output
    np.testing.assert_allclose(sums, gap, rtol=0.02, atol=0.02 * np.abs(gap).max())
    # every node lands on a line (AST graphs only here): lines carry the whole sum
    lines = explainer.line_scores(funcs)
    assert all(g.status != "fallback" for g in graphs.info)
    np.testing.assert_allclose([s.sum() for s in lines], sums, rtol=1e-5, atol=1e-6)  # batching


def test_transformer_attributions_are_complete(tiny_transformer_dir, funcs) -> None:
    funcs = funcs[:4]  # two vulnerable, two not; 256 steps each
    explainer = load_explainer(tiny_transformer_dir, ig_steps=TRANSFORMER_STEPS)
    assert isinstance(explainer, TransformerExplainer)
    encoded = explainer.encode(funcs)
    tokens = explainer.token_attributions([ids for ids, _ in encoded])
    gap = np.asarray([np.subtract(*explainer.endpoint_log_odds(ids)) for ids, _ in encoded])
    assert np.abs(gap).max() > 0.5
    np.testing.assert_allclose([t.sum() for t in tokens], gap, rtol=0.02,
                               atol=0.02 * np.abs(gap).max())  # fmt: skip
    # CLS/SEP keep their tokens in the baseline: no attribution of their own to lose
    lines = explainer.line_scores(funcs)
    np.testing.assert_allclose([s.sum() for s in lines], [t[1:-1].sum() for t in tokens],
                               rtol=1e-6, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("kind", ["gnn", "transformer"])
def test_explained_input_is_what_the_detector_scores(kind, request, funcs) -> None:
    """The path ends at the detector's own prediction: same graphs / tokens as predict_proba."""
    model_dir = _model_dir(request, kind)
    detector = load_detector(model_dir)
    explainer = load_explainer(model_dir, detector=detector)
    assert explainer.detector is detector  # type: ignore[attr-defined]  # the model is reused
    if kind == "gnn":
        at_input, _ = explainer.endpoint_log_odds(explainer.graphs(funcs))  # type: ignore[attr-defined]
    else:
        at_input = [explainer.endpoint_log_odds(ids)[0] for ids, _ in explainer.encode(funcs)]  # type: ignore[attr-defined]
    np.testing.assert_allclose(at_input, to_logits(detector.predict_proba(funcs)), atol=1e-4)


@pytest.mark.parametrize("kind", ["gnn", "transformer"])
def test_planted_line_ranks_first(kind, request) -> None:
    model_dir = _model_dir(request, kind)
    texts, labels, lines = planted_data(30, seed=99)
    vulnerable = [(t, line) for t, y, line in zip(texts, labels, lines, strict=True) if y]
    assert (load_detector(model_dir).predict_proba([t for t, _ in vulnerable]) > 0.5).all()
    scores = load_explainer(model_dir, ig_steps=16).line_scores([t for t, _ in vulnerable])
    for (text, _), per_line in zip(vulnerable, scores, strict=True):
        assert per_line.shape == (len(line_starts(text)),)
    hits = [top_lines(t, s, 1)[0].line == line for (t, line), s in zip(vulnerable, scores,
                                                                       strict=True)]  # fmt: skip
    assert np.mean(hits) >= 0.9, hits


def test_a_detector_without_torch_model_is_replaced(tiny_gnn_dir) -> None:
    """An onnxruntime-style detector (no torch ``model``) cannot give gradients: the explainer
    loads the torch model from the directory."""

    class NoTorch:
        kind = "gnn"
        model = None

    explainer = load_explainer(tiny_gnn_dir, detector=NoTorch())
    assert explainer.detector.model is not None  # type: ignore[attr-defined]


def test_scan_reports_the_planted_file_line(tiny_gnn_dir, tmp_path) -> None:
    texts, _, lines = planted_data(2, seed=5)
    header = "#include <string.h>\n\n"
    (tmp_path / "a.c").write_text(header + texts[1] + "\n")
    result = scan([str(tmp_path)], tiny_gnn_dir, explain="all", top_lines=2)
    (finding,) = result.findings
    assert finding.flagged and finding.start_line == 3
    file_lines = (header + texts[1]).split("\n")
    assert file_lines[finding.lines[0].line - 1] == PLANTED
    assert finding.lines[0].line == 2 + lines[1]


def test_explaining_leaves_the_detector_model_alone(tiny_transformer_dir, funcs) -> None:
    """Captum hooks the explainer's private embedding layer (same weights), never the layer the
    detector scores with: a serving thread may keep predicting meanwhile."""
    detector = load_detector(tiny_transformer_dir)
    explainer = load_explainer(tiny_transformer_dir, detector=detector)
    private = explainer.model.get_input_embeddings()  # type: ignore[attr-defined]
    shared = detector.model.get_input_embeddings()
    assert private is not shared and private.weight.data_ptr() == shared.weight.data_ptr()
    before = detector.predict_proba(funcs)
    handle = private.register_forward_hook(lambda module, args, out: out * 0)
    try:
        np.testing.assert_array_equal(detector.predict_proba(funcs), before)
        ids = explainer.encode(funcs[1:2])[0][0]  # type: ignore[attr-defined]
        hooked, _ = explainer.endpoint_log_odds(ids)  # type: ignore[attr-defined]
        assert hooked != pytest.approx(to_logits(before[1:2])[0], abs=1e-3)
    finally:
        handle.remove()


@pytest.mark.parametrize("kind", ["gnn", "transformer"])
def test_empty_inputs(kind, request) -> None:
    explainer = load_explainer(_model_dir(request, kind), ig_steps=4)
    assert explainer.line_scores([]) == []
    scores = explainer.line_scores(["", "int f(void)\n{\n    return 0;\n}"])
    assert [len(s) for s in scores] == [1, 4]
    assert np.isfinite(np.concatenate(scores)).all()
