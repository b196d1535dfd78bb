"""Presets: YAML files in ``deployments/params/``, each one :class:`PipelineConfig`.

``quick`` (seconds per run: CI and smoke tests, not judged on numbers), ``demo`` (the main job:
3 seeds of each tiny model on the synthetic data, minutes on a laptop CPU), ``full`` (the
defaults, 3 seeds), ``sagemaker-emulator`` (backend sagemaker against the local emulator).
The command-line overrides of ``python -m flows.pipeline`` are applied here too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from streamguard_core.config import (
    MODEL_KINDS,
    ModelConfig,
    PipelineConfig,
    TrainingPlan,
    load_yaml,
    model_config_for,
)

PRESET_DIR = Path(__file__).resolve().parents[1] / "deployments" / "params"


def preset_names() -> list[str]:
    """Names of the presets shipped in ``deployments/params``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name_or_path: str) -> Path:
    """The YAML file of a preset name from :func:`preset_names`, or the path given."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no preset {name_or_path!r}: expected {path} (presets: {', '.join(preset_names())})"
        )
    return path


def load_preset(name_or_path: str) -> PipelineConfig:
    """A preset as a validated :class:`PipelineConfig` (unknown keys are an error)."""
    return load_yaml(preset_path(name_or_path), PipelineConfig)


def select_models(plan: TrainingPlan, wanted: list[str]) -> list[ModelConfig]:
    """The plan's models named in ``wanted``, in that order.

    Each entry matches the plan's models by run name, else by kind (every model of that kind);
    a kind the plan lacks gets that kind's defaults (:func:`model_config_for`).

    Raises:
        ValueError: an entry is neither a run name of the plan nor a model kind.
    """
    chosen: list[ModelConfig] = []
    for token in wanted:
        matches = [m for m in plan.models if m.run_name == token] or [
            m for m in plan.models if m.kind == token
        ]
        if not matches:
            if token not in MODEL_KINDS:
                raise ValueError(
                    f"--models {token!r}: not a model of the preset ({', '.join(plan.names)}) "
                    f"nor a model kind ({', '.join(MODEL_KINDS)})"
                )
            matches = [model_config_for(token)]
        chosen += [m for m in matches if m not in chosen]
    return chosen


def override(
    config: PipelineConfig,
    *,
    models: str | None = None,
    seeds: str | None = None,
    **fields: object,
) -> PipelineConfig:
    """The config with the command line's ``--models a,b`` and ``--seeds 1,2`` applied to its
    plan and ``fields`` (top-level PipelineConfig fields; None = keep) replacing its own, all
    validated again."""
    raw = config.model_dump()
    if models:
        wanted = [m.strip() for m in models.split(",") if m.strip()]
        chosen = select_models(config.plan, wanted)
        raw["plan"]["models"] = [m.model_dump() for m in chosen]
        names = {m.run_name for m in chosen}  # fusion keeps the chosen ones of its bases
        fused = raw["plan"]["fusion_model"]["base_models"]
        raw["plan"]["fusion_model"]["base_models"] = [b for b in fused if b in names]
    if seeds:
        raw["plan"]["seeds"] = [int(s) for s in seeds.split(",")]
    raw.update({k: v for k, v in fields.items() if v is not None})
    return PipelineConfig.model_validate(raw)


def exit_status(state: Any, flow_name: str) -> int:
    """A flow run's final state as a command's exit code: 0 completed, else 1 with the state's
    message (the failed checks, the preflight no-go, ...) on stderr."""
    if state.is_completed():
        return 0
    print(f"{flow_name} {state.name}: {state.message}", file=sys.stderr)
    return 1
