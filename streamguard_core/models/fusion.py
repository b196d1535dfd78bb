"""The fusion detector: a learned weighted average of the base models' probabilities plus a
small MLP, trained on their out-of-fold (OOF) predictions.

Why OOF: a base model's predictions on its own training functions are over-confident, so a
combiner trained on them learns to trust whichever model memorised most. Each base model is
therefore also trained K times on K-1 folds of train (``TrainingPlan.oof_jobs``); the fold it
did not see gives every train function an honest prediction, and the combiner learns from
those. At inference the full base models (trained on all of train) feed it.

The combiner works on logits ``z_i = log(p_i / (1 - p_i))`` of the M base probabilities::

    logit = scale * sum_i softmax(w)_i z_i + bias + MLP(z)     (the MLP's last layer starts at 0)

so it starts as a plain average, the softmax weights say how much each base model counts, and
the MLP learns interactions. Full-batch Adam on binary cross-entropy, early stopping on the
validation loss. Saved as ``fusion.safetensors`` + ``model_card.json``, with a copy of every
base model under ``bases/<name>/`` so the directory scores raw code on its own.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamguard_core.config import FusionConfig
from streamguard_core.io import atomic_write_json
from streamguard_core.models.registry import MODEL_CARD

WEIGHTS = "fusion.safetensors"
BASES = "bases"
_EPS = 1e-5


def to_logits(probs: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with p clipped to [1e-5, 1 - 1e-5] (finite for 0 and 1)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class FusionNet(nn.Module):
    """Softmax-weighted average of base logits (scaled, shifted) plus a zero-initialised MLP."""

    def __init__(self, n_inputs: int, hidden_dim: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(n_inputs))
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))
        self.mlp: nn.Module | None = None
        if hidden_dim > 0:
            last = nn.Linear(hidden_dim, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.mlp = nn.Sequential(nn.Linear(n_inputs, hidden_dim), nn.ReLU(), last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logit of the vulnerable class, shape [batch], from base logits [batch, M]."""
        out = self.scale * (torch.softmax(self.weights, 0) * z).sum(-1) + self.bias
        if self.mlp is not None:
            out = out + self.mlp(z).squeeze(-1)
        return out

    def mixture(self) -> list[float]:
        """The learned average's weights (softmax), one per base model."""
        return torch.softmax(self.weights.detach(), 0).tolist()


def fit_fusion(
    cfg: FusionConfig,
    train_z: np.ndarray,
    train_y: np.ndarray,
    valid_z: np.ndarray,
    valid_y: np.ndarray,
    seed: int,
    train_weights: np.ndarray | None = None,
) -> tuple[FusionNet, list[dict[str, float]]]:
    """Train the combiner on OOF logits; the weights of the best validation loss, and the curve.

    Raises:
        ValueError: shapes disagree or a split holds one class only.
    """
    if train_z.ndim != 2 or valid_z.ndim != 2 or train_z.shape[1] != valid_z.shape[1]:
        raise ValueError(
            f"inputs must be [n, M] with one M, got {train_z.shape} and {valid_z.shape}"
        )
    for name, y in (("OOF train", train_y), ("valid", valid_y)):
        if len(np.unique(y)) < 2:
            raise ValueError(f"fusion: the {name} labels hold one class only")
    torch.manual_seed(seed)
    net = FusionNet(train_z.shape[1], cfg.hidden_dim)
    x, ty = torch.tensor(train_z, dtype=torch.float32), torch.tensor(train_y, dtype=torch.float32)
    vx, vy = torch.tensor(valid_z, dtype=torch.float32), torch.tensor(valid_y, dtype=torch.float32)
    w = None if train_weights is None else torch.tensor(train_weights, dtype=torch.float32)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.functional.binary_cross_entropy_with_logits
    best, best_state, since, history = float("inf"), copy.deepcopy(net.state_dict()), 0, []
    for epoch in range(cfg.epochs):
        net.train()
        loss = loss_fn(net(x), ty, weight=w)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        net.eval()
        with torch.no_grad():
            valid_loss = float(loss_fn(net(vx), vy))
        history.append(
            {"epoch": epoch, "train_loss": float(loss.detach()), "valid_loss": valid_loss}
        )
        if valid_loss < best - 1e-6:
            best, best_state, since = valid_loss, copy.deepcopy(net.state_dict()), 0
        else:
            since += 1
            if since >= cfg.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return net, history


def predict_fusion(net: FusionNet, z: np.ndarray) -> np.ndarray:
    """Fused probability of the vulnerable class, shape [n]."""
    with torch.no_grad():
        return torch.sigmoid(net(torch.tensor(z, dtype=torch.float32))).numpy().astype(np.float64)


def save_fusion(
    net: FusionNet, cfg: FusionConfig, out: Path, card: dict[str, Any], bases: dict[str, Path]
) -> Path:
    """``out/``: the combiner's weights, its card, and a copy of every base model directory."""
    from safetensors.torch import save_file

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / WEIGHTS))
    for name, model_dir in bases.items():
        shutil.copytree(model_dir, out / BASES / name)
    atomic_write_json(
        out / MODEL_CARD,
        {"kind": "fusion", "config": cfg.model_dump(mode="json"), "base_models": list(bases),
         "mixture": dict(zip(bases, net.mixture(), strict=True)), **card},
    )  # fmt: skip
    return out


class FusionDetector:
    """A saved fusion model: its base detectors score the code, the combiner fuses them."""

    kind = "fusion"

    def __init__(self, model_dir: str | Path, use_onnx: bool = False) -> None:
        from safetensors.torch import load_file

        from streamguard_core.models.registry import (
            base_model_dirs,
            check_model_files,
            load_detector,
            model_errors,
            read_model_card,
        )

        self.dir = Path(model_dir)
        self.card = read_model_card(self.dir, kind=self.kind)
        check_model_files(self.dir)
        with model_errors(self.dir, self.kind):
            self.config = FusionConfig.model_validate(self.card["config"])
            base_dirs = base_model_dirs(self.dir, self.card)  # under bases/, nowhere else
            self.base_names: list[str] = [d.name for d in base_dirs]
            self.bases = [load_detector(d, use_onnx=use_onnx) for d in base_dirs]
            self.net = FusionNet(len(self.bases), self.config.hidden_dim)
            self.net.load_state_dict(load_file(str(self.dir / WEIGHTS)))
            self.net.eval()
            self.threshold = float(self.card["threshold"])

    def base_probabilities(self, funcs: list[str]) -> np.ndarray:
        """Every base model's probabilities, shape [n, M] (columns in ``base_names`` order)."""
        return np.stack([np.asarray(b.predict_proba(funcs)) for b in self.bases], axis=1)

    def predict_proba(self, funcs: list[str]) -> np.ndarray:
        """Fused probability of the vulnerable class per function, shape [n]."""
        return predict_fusion(self.net, to_logits(self.base_probabilities(funcs)))
