"""When ``load_detector(..., use_onnx=True)`` scores with torch, and the errors a bad
``model.onnx`` gives: one message naming the file, never a traceback. No export here (fast):
the export record is written by hand where a test needs one, the model files are real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamguard_core.cli import main
from streamguard_core.export.onnx import (
    INFO_FILE,
    ONNX_FILE,
    GNNSpec,
    GraphFacts,
    OnnxExportInfo,
    OnnxParity,
    model_files,
)
from streamguard_core.export.runtime import OnnxModelError
from streamguard_core.io import atomic_write_json
from streamguard_core.models.registry import load_detector


def _record(model_dir: Path, kind: str = "gnn") -> None:
    """An export record that matches ``model_dir``'s files as they are now."""
    facts = GraphFacts(edges="undirected")
    axes = GNNSpec().input_axes(facts)
    info = OnnxExportInfo(
        kind=kind, opset=20, exporter="by hand (test)", torch_version="-", onnx_version="-",  # type: ignore[arg-type]
        onnxscript_version="-", onnxruntime_version="-", inputs=list(axes), input_axes=axes,
        pad_id=0, graph=facts, model_files=model_files(model_dir),
        parity=OnnxParity(functions=0, source="-", onnx_batch_size=1, max_abs_diff=0.0,
                          tolerance=1e-4),
        export_seconds=0.0, exported_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    atomic_write_json(model_dir / INFO_FILE, info.model_dump(mode="json"))


def _corrupt(model_dir: Path) -> Path:
    onnx_file = model_dir / ONNX_FILE
    onnx_file.write_bytes(b"this is not an ONNX model\n")
    return onnx_file


def test_without_model_onnx_torch_scores(model_copy) -> None:
    model_dir = model_copy("gcn")
    detector = load_detector(model_dir, use_onnx=True)
    assert detector.backend == "torch" and detector.kind == "gnn"
    assert load_detector(model_dir).backend == "torch"


def test_corrupt_model_onnx_is_one_clear_error(model_copy) -> None:
    model_dir = model_copy("gcn")
    _record(model_dir)
    onnx_file = _corrupt(model_dir)
    with pytest.raises(OnnxModelError, match="onnxruntime cannot load it") as err:
        load_detector(model_dir, use_onnx=True)
    assert str(onnx_file) in str(err.value) and "--no-onnx" in str(err.value)
    assert load_detector(model_dir, use_onnx=False).backend == "torch"  # the way out


def test_scan_with_a_corrupt_model_onnx_names_the_file(model_copy, tmp_path, capsys) -> None:
    model_dir = model_copy("gcn")
    _record(model_dir)
    onnx_file = _corrupt(model_dir)
    src = tmp_path / "a.c"
    src.write_text("int add(int a, int b)\n{\n    return a + b;\n}\n")
    code = main(["scan", str(src), "--model-dir", str(model_dir), "--explain", "none"])
    err = capsys.readouterr().err
    assert code != 0 and str(onnx_file) in err and "Traceback" not in err
    assert main(["scan", str(src), "--model-dir", str(model_dir), "--no-onnx",
                 "--explain", "none"]) == 0  # fmt: skip


def test_model_onnx_without_its_record_names_both_files(model_copy) -> None:
    model_dir = model_copy("gcn")
    onnx_file = _corrupt(model_dir)
    with pytest.raises(OnnxModelError) as err:
        load_detector(model_dir, use_onnx=True)
    assert str(onnx_file) in str(err.value) and INFO_FILE in str(err.value)


def test_record_of_another_kind_is_refused(model_copy) -> None:
    model_dir = model_copy("gcn")
    _record(model_dir, kind="transformer")
    _corrupt(model_dir)
    with pytest.raises(OnnxModelError, match="exported from a transformer model"):
        load_detector(model_dir, use_onnx=True)


def test_stale_export_falls_back_to_torch_with_a_warning(model_copy) -> None:
    model_dir = model_copy("gcn")
    _record(model_dir)
    onnx_file = _corrupt(model_dir)  # never opened: staleness is decided first
    weights = model_dir / "model.safetensors"
    later = onnx_file.stat().st_mtime + 10
    os.utime(weights, (later, later))
    with pytest.warns(UserWarning, match=r"older than the model files \(model\.safetensors\)"):
        detector = load_detector(model_dir, use_onnx=True)
    assert detector.backend == "torch"

    config = model_dir / "gnn_config.json"
    config.write_text(config.read_text() + "\n")  # another size: not the files exported
    with pytest.warns(UserWarning, match=r"files changed since the export \(gnn_config\.json\)"):
        assert load_detector(model_dir, use_onnx=True).backend == "torch"


def test_card_and_registry_files_do_not_make_an_export_stale(model_copy) -> None:
    import json
    import warnings

    model_dir = model_copy("gcn")
    _record(model_dir)
    _corrupt(model_dir)
    card = json.loads((model_dir / "model_card.json").read_text())
    card["threshold"] = 0.25  # re-tuned after the export
    atomic_write_json(model_dir / "model_card.json", card)
    atomic_write_json(model_dir / "registration.json", {"version": "v0001"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no staleness warning: the export is still used
        with pytest.raises(OnnxModelError, match="onnxruntime cannot load it"):
            load_detector(model_dir, use_onnx=True)


def test_baseline_needs_no_export(baseline_dir, capsys) -> None:
    assert main(["export", "onnx", "--model-dir", str(baseline_dir)]) == 0
    assert "needs no ONNX export" in capsys.readouterr().err
    assert not (baseline_dir / ONNX_FILE).exists()
    assert load_detector(baseline_dir, use_onnx=True).kind == "baseline"


def test_fusion_of_baselines_exports_nothing_and_refuses_output(baseline_dir, tmp_path, capsys
                                                               ) -> None:  # fmt: skip
    from streamguard_core.config import FusionConfig
    from streamguard_core.models.fusion import FusionNet, save_fusion

    fusion = save_fusion(FusionNet(2, 0), FusionConfig(), tmp_path / "fusion", {"threshold": 0.5},
                         {"tfidf": baseline_dir, "again": baseline_dir})  # fmt: skip
    assert main(["export", "onnx", "--model-dir", str(fusion)]) == 0
    err = capsys.readouterr().err
    assert err.count("needs no ONNX export") == 2 and "bases/tfidf" in err
    assert main(["export", "onnx", "--model-dir", str(fusion), "--output", "x.onnx"]) == 1
    assert "fusion model exports each neural base" in capsys.readouterr().err


def test_not_a_model_directory(tmp_path, capsys) -> None:
    assert main(["export", "onnx", "--model-dir", str(tmp_path)]) == 1
    assert f"{tmp_path}: not a model directory" in capsys.readouterr().err
