"""ONNX exports of tiny trained GNNs and a tiny transformer score like torch: on Devign
functions, at batch sizes and padded lengths other than the export example's (the axes really
are dynamic), through ``scan`` end to end, and inside a fusion model.

Each export takes 15-30 s on a 2-core CPU, hence ``slow``; the models are exported once per
session."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamguard_core.cli import main
from streamguard_core.export.onnx import (
    EXAMPLE_FUNCTIONS,
    INFO_FILE,
    ONNX_FILE,
    PARITY_TOLERANCE,
    export_onnx,
    parity_functions,
    read_export_info,
)
from streamguard_core.models.registry import load_detector
from streamguard_core.scan.run import scan

pytestmark = pytest.mark.slow

PROJECT_C = """\
#include <string.h>

int copy_name(char *dst, const char *src)
{
    char buf[16];
    strcpy(buf, src);
    memcpy(dst, buf, strlen(src));
    return 0;
}

static int add(int a, int b)
{
    return a + b;
}

int sum(const int *v, int n)
{
    int total = 0;
    for (int i = 0; i <= n; i++)
        total += v[i];
    return total;
}
"""


@pytest.fixture(scope="session")
def exported(tiny_model, tmp_path_factory) -> Callable[[str], Path]:
    """``exported(name)``: a copy of a tiny model directory with its ``model.onnx`` (exported
    once; the trained directory itself stays without one for the other tests)."""
    done: dict[str, Path] = {}

    def export(name: str) -> Path:
        if name not in done:
            model_dir = tmp_path_factory.mktemp(f"exported_{name}") / name
            shutil.copytree(tiny_model(name), model_dir)
            export_onnx(model_dir)
            done[name] = model_dir
        return done[name]

    return export


@pytest.mark.parametrize("name", ["gcn", "rgcn", "transformer"])
def test_onnx_matches_torch_on_devign_at_other_shapes(name, exported, devign_functions) -> None:
    model_dir = exported(name)
    info = read_export_info(model_dir / INFO_FILE)
    assert info.parity.max_abs_diff <= PARITY_TOLERANCE
    assert info.parity.functions == len(parity_functions()[0])
    assert info.opset >= 18 and info.inputs[:2] in (
        ["x", "node_token"],
        ["input_ids", "attention_mask"],
    )

    onnx_detector = load_detector(model_dir, use_onnx=True)
    torch_detector = load_detector(model_dir, use_onnx=False)
    assert (onnx_detector.backend, torch_detector.backend) == ("onnxruntime", "torch")
    assert onnx_detector.threshold == torch_detector.threshold
    # every non-fixed axis of the graph is symbolic: batch, length, nodes, edges, graphs
    for graph_input in onnx_detector.session.get_inputs():
        axes = info.input_axes[graph_input.name]
        assert [d if isinstance(d, int) else "sym" for d in graph_input.shape] == [
            int(a) if a.isdigit() else "sym" for a in axes
        ], graph_input

    reference = torch_detector.predict_proba(devign_functions)  # 32 at a time
    # the comparison is not vacuous: the functions get clearly different probabilities
    assert np.ptp(reference) > 100 * PARITY_TOLERANCE
    for batch_size in (1, 7, len(devign_functions)):  # the export example had 4 functions
        scored = onnx_detector.predict_proba(devign_functions, batch_size=batch_size)
        assert scored.shape == reference.shape
        assert float(np.max(np.abs(scored - reference))) <= PARITY_TOLERANCE, batch_size


def test_transformer_graph_runs_lengths_it_was_not_exported_with(exported, devign_functions
                                                                 ) -> None:  # fmt: skip
    import torch

    from streamguard_core.models.neural import function_batches

    model_dir = exported("transformer")
    detector = load_detector(model_dir, use_onnx=True)
    example, _ = parity_functions()
    lengths = set()
    for funcs, n in ((example, EXAMPLE_FUNCTIONS), (devign_functions, 16), (devign_functions, 1)):
        data = function_batches(funcs, None, model_dir, detector.preprocess, "transformer",
                                detector.pad_id)  # fmt: skip
        feeds = detector.feeds(data.make(np.arange(n), torch.device("cpu")), n)
        lengths.add(feeds["input_ids"].shape)
        assert detector.forward(feeds, n).shape == (n,)
    assert len(lengths) == 3  # three batch shapes through one graph


@pytest.mark.parametrize("name", ["gcn", "transformer"])
def test_scan_with_onnx_gives_the_torch_findings(name, exported, tmp_path) -> None:
    model_dir = exported(name)
    src = tmp_path / "proj" / "lib.c"
    src.parent.mkdir()
    src.write_text(PROJECT_C)
    with_onnx = scan([str(src.parent)], model_dir, explain="none", use_onnx=True, batch_size=2)
    with_torch = scan([str(src.parent)], model_dir, explain="none", use_onnx=False)

    def where(result):
        return [(f.file, f.function, f.start_line, f.end_line) for f in result.findings]

    assert len(with_onnx.findings) == 3
    assert sorted(where(with_onnx)) == sorted(where(with_torch))
    onnx_by_place = {w: f for w, f in zip(where(with_onnx), with_onnx.findings, strict=True)}
    for place, finding in zip(where(with_torch), with_torch.findings, strict=True):
        other = onnx_by_place[place]
        assert abs(other.probability - finding.probability) <= PARITY_TOLERANCE
        assert other.flagged == finding.flagged or (
            abs(finding.probability - with_torch.threshold) <= PARITY_TOLERANCE
        )


def test_fusion_exports_its_neural_base_and_scores_with_it(tiny_model, baseline_dir, tmp_path,
                                                           capsys) -> None:  # fmt: skip
    import torch

    from streamguard_core.config import FusionConfig
    from streamguard_core.models.fusion import FusionNet, save_fusion

    torch.manual_seed(0)
    net = FusionNet(2, 4)
    with torch.no_grad():  # the MLP's last layer starts at zero; give it a say
        for param in net.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    fusion = save_fusion(net, FusionConfig(hidden_dim=4), tmp_path / "fusion", {"threshold": 0.5},
                         {"gnn": tiny_model("gcn"), "tfidf": baseline_dir})  # fmt: skip
    assert not (fusion / "bases" / "gnn" / ONNX_FILE).exists()
    assert main(["export", "onnx", "--model-dir", str(fusion)]) == 0
    captured = capsys.readouterr()
    assert f"wrote {fusion / 'bases' / 'gnn' / ONNX_FILE}" in captured.out
    assert "needs no ONNX export" in captured.err and "bases/tfidf" in captured.err

    funcs, _ = parity_functions()
    with_onnx = load_detector(fusion, use_onnx=True)
    with_torch = load_detector(fusion, use_onnx=False)
    assert with_onnx.bases[0].backend == "onnxruntime"
    assert with_torch.bases[0].backend == "torch"
    np.testing.assert_allclose(
        with_onnx.predict_proba(funcs), with_torch.predict_proba(funcs), atol=PARITY_TOLERANCE
    )
