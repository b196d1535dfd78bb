"""Model directories from untrusted sources load without executing code, and every fault ends
in one line naming the file and what is wrong (exit 1; ``scan``: 2, its code for "no usable
model", since 1 means a finding).

Every loading path is driven the way a user would: ``streamguard evaluate``, ``scan
--model-dir``, ``serve``, ``export onnx`` (through ``cli.main``, in process) and the registry's
``load_detector``. The pickles are real: a control test proves that unpickling one creates the
marker file, and each tampered directory must leave the marker absent.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamguard_core import cli
from streamguard_core.models.registry import ModelDirError, check_model_files, load_detector
from tests.core.security.conftest import MarkerPayload, malicious_pickle

PICKLE_NOTE = "pickles are never loaded (unpickling can run code)"
PATHS = ("evaluate", "scan", "serve", "export", "load_detector")
EXIT = {"evaluate": 1, "scan": 2, "serve": 1, "export": 1}
PREFIX = {
    "evaluate": "streamguard: error: ",
    "scan": "streamguard scan: error: ",
    "serve": "streamguard serve: error: ",
    "export": "streamguard: error: ",
}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A labelled JSONL for evaluate and a source tree for scan."""
    data = tmp_path / "eval.jsonl"
    rows = [{"func": "int f(char *s){char b[8]; strcpy(b,s); return 0;}", "target": 1},
            {"func": "int g(int a){return a + 1;}", "target": 0}]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text("int f(char *s) {\n  char b[8];\n  strcpy(b, s);\n  return 0;\n}\n")
    return {"data": data, "src": src}


def run_path(path: str, model_dir: Path, inputs: dict[str, Path], capsys) -> str:
    """Load ``model_dir`` through one path; the one error line it ends with."""
    if path == "load_detector":
        with pytest.raises(ModelDirError) as info:
            load_detector(model_dir)
        message = str(info.value)
        assert "\n" not in message
        return message
    argv = {
        "evaluate": ["evaluate", "--model-dir", str(model_dir), "--data", str(inputs["data"])],
        "scan": ["scan", str(inputs["src"]), "--model-dir", str(model_dir)],
        "serve": ["serve", "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", "0"],
        "export": ["export", "onnx", "--model-dir", str(model_dir)],
    }[path]
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == EXIT[path], err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX[path]), err
    assert "Traceback" not in err
    return lines[0]


def test_the_payload_really_runs_code(marker: Path) -> None:
    """Control: the pickles these tests plant do execute when unpickled."""
    pickle.loads(malicious_pickle(marker))
    assert marker.exists()


# kind, the file replaced by a pickle (relative to the model directory)
PICKLED_WEIGHTS = [
    ("baseline", "weights.npz", "not a numpy .npz file but a Python pickle"),
    ("gnn", "model.safetensors", "not a safetensors file but a Python pickle"),
    ("transformer", "model.safetensors", "not a safetensors file but a Python pickle"),
    ("fusion", "fusion.safetensors", "not a safetensors file but a Python pickle"),
    ("fusion", "bases/gnn/model.safetensors", "not a safetensors file but a Python pickle"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("kind", "target", "reason"), PICKLED_WEIGHTS)
def test_pickle_in_place_of_the_weights_runs_nothing(
    path: str, kind: str, target: str, reason: str, model_copy: Callable[[str], Path],
    marker: Path, inputs: dict[str, Path], capsys,
) -> None:  # fmt: skip
    if path == "export" and target in ("weights.npz", "fusion.safetensors"):
        pytest.skip("export reads neither (baselines and the combiner need no ONNX export)")
    model_dir = model_copy(kind)
    (model_dir / target).write_bytes(malicious_pickle(marker))
    line = run_path(path, model_dir, inputs, capsys)
    assert f"{model_dir / target}: {reason}; {PICKLE_NOTE}" in line
    assert not marker.exists()


def test_object_arrays_in_the_baseline_npz_are_refused(model_copy, marker, inputs, capsys) -> None:
    model_dir = model_copy("baseline")
    with np.load(model_dir / "weights.npz") as w:
        arrays = dict(w)
    arrays["coef"] = np.array([MarkerPayload(marker)], dtype=object)  # stored as a pickle
    np.savez(model_dir / "weights.npz", **arrays)
    line = run_path("evaluate", model_dir, inputs, capsys)
    assert f"{model_dir / 'weights.npz'}: holds pickled Python objects; {PICKLE_NOTE}" in line
    assert not marker.exists()


def test_torch_pickle_weights_are_refused_by_weights_only(
    model_copy, marker, inputs, capsys
) -> None:
    """The GNN's model.pt fallback format, holding code instead of tensors (torch.save)."""
    import torch

    model_dir = model_copy("gnn")
    (model_dir / "model.safetensors").unlink()
    torch.save({"convs.0.bias": MarkerPayload(marker)}, model_dir / "model.pt")
    meta = json.loads((model_dir / "gnn_config.json").read_text())
    (model_dir / "gnn_config.json").write_text(json.dumps({**meta, "weights": "model.pt"}))
    for path in ("evaluate", "serve"):
        line = run_path(path, model_dir, inputs, capsys)
        assert f"{model_dir / 'model.pt'}: refused by torch.load(weights_only=True): " in line
        assert "posix.system" in line and PICKLE_NOTE in line
    assert not marker.exists()


def test_transformer_pytorch_bin_is_checked_before_transformers_reads_it(
    model_copy, marker, inputs, capsys
) -> None:
    model_dir = model_copy("transformer")
    (model_dir / "model.safetensors").unlink()
    (model_dir / "pytorch_model.bin").write_bytes(malicious_pickle(marker))
    line = run_path("evaluate", model_dir, inputs, capsys)
    assert f"{model_dir / 'pytorch_model.bin'}: refused by torch.load(weights_only=True)" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    ("kind", "path"),
    [("gnn", path) for path in PATHS]
    + [(kind, "load_detector") for kind in ("baseline", "transformer", "fusion")],
)
def test_invalid_model_card_names_the_file_line_and_column(
    path: str, kind: str, model_copy, inputs, capsys
) -> None:
    model_dir = model_copy(kind)
    (model_dir / "model_card.json").write_text('{"kind": "gnn"\n"threshold": 0.5}\n')
    line = run_path(path, model_dir, inputs, capsys)
    card = model_dir / "model_card.json"
    assert line.endswith(f"{card}: not valid JSON (line 2 column 1: Expecting ',' delimiter)")


@pytest.mark.parametrize(
    ("kind", "file", "content", "reason"),
    [
        ("gnn", "gnn_config.json", "{", "not valid JSON (line 1 column 2:"),
        ("transformer", "config.json", "[1, 2", "not valid JSON (line 1 column 6:"),
        ("baseline", "vocabulary.json", b"\xff\xfe{}", "not UTF-8 text (byte 0)"),
        ("gnn", "model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
         "not a valid safetensors file ("),
    ],
)  # fmt: skip
def test_corrupt_files_are_named(kind, file, content, reason, model_copy, inputs, capsys) -> None:
    model_dir = model_copy(kind)
    target = model_dir / file
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    line = run_path("evaluate", model_dir, inputs, capsys)
    assert f"{target}: {reason}" in line


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_custom_code_requests_are_refused(file, model_copy, marker, inputs, capsys) -> None:
    """``auto_map`` makes transformers import a Python file of the directory (or ask on a
    terminal whether to): refused before transformers sees it."""
    model_dir = model_copy("transformer")
    (model_dir / "evil.py").write_text(f"import os\nos.system('touch {marker}')\n")
    config = json.loads((model_dir / file).read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoTokenizer": ["evil.T", None],
                          "AutoModelForSequenceClassification": "evil.EvilModel"}  # fmt: skip
    (model_dir / file).write_text(json.dumps(config))
    for path in ("scan", "export"):
        line = run_path(path, model_dir, inputs, capsys)
        assert f"{model_dir / file}: 'auto_map' asks to run custom code" in line
    assert not marker.exists()


def test_card_that_is_not_a_model_card(model_copy, inputs, capsys) -> None:
    model_dir = model_copy("baseline")
    (model_dir / "model_card.json").write_text("[1, 2]")
    line = run_path("load_detector", model_dir, inputs, capsys)
    card = model_dir / "model_card.json"
    assert line == f"{card}: not a model card (a JSON object with a string 'kind')"


def test_paths_in_a_model_directory_stay_inside_it(model_copy, tmp_path, inputs, capsys) -> None:
    """A symbolic link out, a weights file named outside, a fusion base outside bases/."""
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    baseline = model_copy("baseline")
    (baseline / "vocabulary.json").unlink()
    os.symlink(outside, baseline / "vocabulary.json")
    line = run_path("evaluate", baseline, inputs, capsys)
    assert f"{baseline / 'vocabulary.json'}: a symbolic link to {outside}, outside" in line

    gnn = model_copy("gnn")
    meta = json.loads((gnn / "gnn_config.json").read_text())
    (gnn / "gnn_config.json").write_text(json.dumps({**meta, "weights": "../w.safetensors"}))
    line = run_path("load_detector", gnn, inputs, capsys)
    assert f"{gnn / 'gnn_config.json'}: 'weights' must name a file in the model directory" in line

    fusion = model_copy("fusion")
    card = json.loads((fusion / "model_card.json").read_text())
    card["base_models"] = ["baseline", "../../untrusted_gnn"]
    (fusion / "model_card.json").write_text(json.dumps(card))
    for path in ("load_detector", "export"):
        line = run_path(path, fusion, inputs, capsys)
        assert "base model name '../../untrusted_gnn' is not a plain directory name" in line


def test_faults_after_the_checks_are_one_line_too(model_copy, inputs, capsys) -> None:
    """A card that parses but lacks a field: the directory and the cause, one line."""
    model_dir = model_copy("gnn")
    card = json.loads((model_dir / "model_card.json").read_text())
    del card["threshold"]
    (model_dir / "model_card.json").write_text(json.dumps(card))
    line = run_path("evaluate", model_dir, inputs, capsys)
    assert f"{model_dir}: cannot load the gnn model: KeyError: 'threshold'" in line


@pytest.mark.parametrize("kind", ["baseline", "gnn", "transformer", "fusion"])
def test_trusted_models_pass_the_checks_and_load(kind, trusted_models) -> None:
    check_model_files(trusted_models[kind])
    detector = load_detector(trusted_models[kind])
    probs = detector.predict_proba(["int f(int a) { return a; }"])
    assert 0.0 <= float(probs[0]) <= 1.0
