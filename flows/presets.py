"""Parameter presets: YAML files of the flows' pydantic parameters in ``deployments/params/``.

``quick`` (seconds per run: CI and smoke tests), ``demo`` (the main job: 3 seeds of each tiny
model on the synthetic data, minutes on a laptop CPU), ``full`` (the defaults, 3 seeds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streamguard_core.pipeline.config import TrainingPlan

PRESET_DIR = Path(__file__).resolve().parents[1] / "deployments" / "params"


def preset_names() -> list[str]:
    """Names of the presets shipped in ``deployments/params``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset's parameters (a name from :func:`preset_names` or a YAML path)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no preset {name_or_path!r}: expected {path} (presets: {', '.join(preset_names())})"
        )
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: a preset must be a mapping of flow parameters")
    return params


def quick_plan() -> TrainingPlan:
    """The ``quick`` preset's training plan."""
    return TrainingPlan.model_validate(load_preset("quick").get("plan", {}))
