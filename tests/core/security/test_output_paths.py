"""Directories built from config values stay inside the output root: model run names, fusion
base names and the seed/fold directories joined from them refuse ``../``, absolute paths,
separators and symbolic links that lead out, with one clear message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamguard_core import cli
from streamguard_core.config import (
    FusionConfig,
    GNNConfig,
    PipelineConfig,
    TrainingPlan,
    load_yaml,
    model_config_for,
    oof_dir,
    seed_dir,
)
from streamguard_core.training.paths import UnsafePathError, confined

UNSAFE = ["../../etc", "/etc", "a/b", "..", ".hidden", "a..b", "a\\b", "x" * 129, "", "-x"]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_model_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="not a safe folder name") as info:
        GNNConfig(name=name)
    assert "cannot leave the output root" in str(info.value)
    with pytest.raises(ValidationError, match=r"fusion base model .* not a safe folder name"):
        FusionConfig(base_models=["gnn", name])


@pytest.mark.parametrize("name", ["gnn", "gnn-small_2.v1", "A" * 128, "7b"])
def test_plain_names_pass(name: str, tmp_path: Path) -> None:
    model = model_config_for({"kind": "baseline", "name": name})
    (job,) = TrainingPlan(models=[model], seeds=[3]).jobs(tmp_path / "data", tmp_path / "out")
    assert Path(job.run_dir) == tmp_path / "out" / name / "seed_3"


def test_a_preset_with_an_escaping_name_does_not_load(tmp_path: Path) -> None:
    preset = tmp_path / "evil.yaml"
    preset.write_text("plan:\n  models:\n    - kind: gnn\n      name: ../../etc\n")
    with pytest.raises(ValidationError, match=r"plan.models.0.gnn.name"):
        load_yaml(preset, PipelineConfig)


def test_the_cli_refuses_an_escaping_name(tmp_path: Path, capsys) -> None:
    argv = ["train", "baseline", "--name", "../../etc", "--data", str(tmp_path),
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "model name '../../etc': not a safe folder name" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_seed_and_fold_dirs_refuse_links_out_and_bad_parts(tmp_path: Path) -> None:
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "gnn")  # e.g. planted by someone with access to the root
    with pytest.raises(UnsafePathError, match=r"out/gnn/seed_1: resolves to .*elsewhere"):
        seed_dir(root, "gnn", 1)
    (root / "oof").mkdir()
    os.symlink(outside, root / "oof" / "rgcn")
    with pytest.raises(UnsafePathError, match="outside the output root"):
        oof_dir(root, "rgcn", 1, 0)
    for bad in ("../x", "/abs", "a/b", ".."):
        with pytest.raises(UnsafePathError, match="not a single folder name"):
            seed_dir(root, bad, 1)
    assert seed_dir(root, "baseline", 2) == root / "baseline" / "seed_2"


def test_a_root_that_is_itself_a_link_is_fine(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "runs"
    real.mkdir(parents=True)
    os.symlink(real, tmp_path / "runs")  # runs/ on a bigger disk: a common setup
    assert confined(tmp_path / "runs", "gnn", "seed_1") == tmp_path / "runs" / "gnn" / "seed_1"
