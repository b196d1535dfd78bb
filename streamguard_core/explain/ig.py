"""Pieces the integrated-gradients explainers share: the quadrature, the explained output and
the torch detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def gauss_legendre(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in (0, 1) and weights (summing to 1) of ``n_steps``-point Gauss-Legendre
    quadrature, Captum's default ``method="gausslegendre"``.

    Shapes: ([n_steps], [n_steps]).
    """
    x, w = np.polynomial.legendre.leggauss(n_steps)
    return (x + 1) / 2, w / 2


def log_odds(logits: Any) -> Any:
    """``logit_1 - logit_0`` of two-class logits: the log-odds of "vulnerable", which the
    softmax probability depends on (explaining ``logit_1`` alone would credit inputs that move
    both logits alike).

    Shapes: [B, 2] -> [B].
    """
    return logits[:, 1] - logits[:, 0]


def torch_detector(model_dir: Path, detector: Any | None, kind: str) -> Any:
    """``detector`` when it holds a torch model of ``kind`` (a :class:`NeuralDetector`),
    otherwise a :class:`NeuralDetector` loaded from ``model_dir`` (e.g. when ``detector``
    scores with onnxruntime: attributions need gradients)."""
    import torch

    from streamguard_core.models.neural import NeuralDetector

    needed = ("pad_id", "device", "preprocess", "dir")
    if (
        detector is not None
        and getattr(detector, "kind", None) == kind
        and isinstance(getattr(detector, "model", None), torch.nn.Module)
        and all(hasattr(detector, name) for name in needed)
    ):
        return detector
    return NeuralDetector(model_dir)


def with_private_input_embeddings(model: Any) -> Any:
    """A shallow copy of a Hugging Face ``model`` whose input-embedding layer is a module of its
    own (sharing the weight tensor), or ``model`` itself when that layer is not a plain
    ``nn.Embedding``.

    Captum attributes by hooking the embedding layer for the whole call; on a private layer
    those hooks never reach another thread's ``predict_proba`` on the detector's model. Only the
    modules on the path to the layer are copied (each with its own child table); every weight
    is shared, so this costs no memory.
    """
    import copy

    from torch import nn

    layer = model.get_input_embeddings()
    if type(layer) is not nn.Embedding:
        return model
    path = next(name for name, module in model.named_modules() if module is layer).split(".")
    root = copy.copy(model)
    root._modules = dict(model._modules)
    parent = root
    for name in path[:-1]:
        child = copy.copy(parent._modules[name])
        child._modules = dict(child._modules)
        parent._modules[name] = child
        parent = child
    private = nn.Embedding.from_pretrained(layer.weight, freeze=True, padding_idx=layer.padding_idx)
    parent._modules[path[-1]] = private
    return root
