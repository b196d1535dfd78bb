"""Train one neural detector on a processed data set: build, (find LR), fit, evaluate, save.

``train_neural`` is what ``streamguard train gnn|transformer`` and later the Prefect task and
the SageMaker entrypoint call. Exit-code contract of the CLI: 0 ok, 1 failure, 2 usage,
3 collapse (``collapse_report.json`` written).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from streamguard_core.io import atomic_write_json
from streamguard_core.training.checkpoint import is_valid_checkpoint
from streamguard_core.training.collapse import CollapseError, write_collapse_report
from streamguard_core.training.loop import (
    RunPaths,
    TrainConfig,
    evaluate_best,
    fit,
    resume,
    seed_everything,
    setup,
    write_metadata,
)


class RunExistsError(RuntimeError):
    """The output directory already holds a run and --resume was not given."""


def build_model(kind: str, model_cfg: Any, data_dir: Path) -> tuple[torch.nn.Module, int]:
    """The model for ``kind`` and the padding id its batches need."""
    if kind == "gnn":
        from streamguard_core.models.gnn import build_gnn

        vocab = json.loads((data_dir / "node_types.json").read_text())["node_types"]
        return build_gnn(model_cfg, len(vocab)), 0
    from transformers import AutoTokenizer

    from streamguard_core.models.transformer import build_transformer_classifier

    tokenizer = AutoTokenizer.from_pretrained(str(data_dir / "tokenizer"))
    return build_transformer_classifier(model_cfg, data_dir / "tokenizer"), int(
        tokenizer.pad_token_id
    )


def save_detector(kind: str, model: torch.nn.Module, model_cfg: Any, data_dir: Path, out: Path,
                  card: dict[str, Any]) -> Path:  # fmt: skip
    """The final model directory: weights in the kind's own format plus ``model_card.json``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if kind == "gnn":
        from streamguard_core.models.gnn import GNNClassifier, save_gnn

        vocab = json.loads((data_dir / "node_types.json").read_text())["node_types"]
        assert isinstance(model, GNNClassifier)
        save_gnn(model, model_cfg, len(vocab), out)
        shutil.copy(data_dir / "node_types.json", out / "node_types.json")
    else:
        model.save_pretrained(str(out))  # type: ignore[operator]
        shutil.copytree(data_dir / "tokenizer", out, dirs_exist_ok=True)
    atomic_write_json(out / "model_card.json", card)
    return out


def train_neural(
    kind: str,
    model_cfg: Any,
    cfg: TrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    resume_run: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Train ``kind`` on ``data_dir`` (a processed data set) into ``run_dir``; returns metrics.

    Raises:
        RunExistsError: ``run_dir`` holds a checkpoint and ``resume_run`` is False.
        CollapseError: the run collapsed (``collapse_report.json`` is written first).
    """
    data_dir, paths = Path(data_dir), RunPaths(Path(run_dir))
    if is_valid_checkpoint(paths.latest) and not resume_run:
        raise RunExistsError(
            f"{paths.root} already holds a run; pass --resume to continue it or choose a new "
            "--output-dir"
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("streamguard")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        seed_everything(cfg.seed)
        model, pad_id = build_model(kind, model_cfg, data_dir)
        state = setup(kind, model, data_dir, paths.root, cfg, device=device, pad_id=pad_id,
                      lr_source="config" if cfg.lr else "default")  # fmt: skip
        resumed = resume(state) if resume_run else False
        atomic_write_json(
            paths.exp_config,
            {"kind": kind, "model": model_cfg.model_dump(mode="json"),
             "train": cfg.model_dump(mode="json"), "data_dir": str(data_dir),
             "resumed": resumed},
        )  # fmt: skip
        try:
            summary = fit(state)
        except CollapseError as exc:
            write_collapse_report(
                paths.collapse_report, exc.event,
                {"kind": kind, "seed": cfg.seed, "history_tail": state.history[-3:]},
            )  # fmt: skip
            raise
        results = evaluate_best(state, data_dir)
        write_metadata(state)
        card = {
            "kind": kind,
            "config": model_cfg.model_dump(mode="json"),
            "train": cfg.model_dump(mode="json"),
            "threshold": state.best_threshold,
            "metrics": results,
            "best_epoch": summary["best_epoch"],
            "data_fingerprint": _fingerprint(data_dir),
        }
        save_detector(kind, state.model, model_cfg, data_dir, paths.model, card)
        return results
    finally:
        logger.removeHandler(handler)
        handler.close()


def _fingerprint(data_dir: Path) -> dict[str, Any]:
    meta_path = data_dir / "preprocessing_metadata.json"
    if not meta_path.exists():
        return {}
    meta = json.loads(meta_path.read_text())
    return {"inputs_sha256": meta.get("inputs", {}).get("sha256"),
            "counts": meta.get("counts", {}).get("kept_per_split")}  # fmt: skip
