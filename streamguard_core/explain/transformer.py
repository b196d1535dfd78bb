"""Line scores of a transformer detector: integrated gradients through the input embeddings.

The function goes through exactly the preprocessing the detector scores it with
(:func:`~streamguard_core.preprocess.run.process_functions` with the model card's settings:
BPE tokens, trimming), so the attributions explain the prediction ``predict_proba`` makes.
Captum's :class:`~captum.attr.LayerIntegratedGradients` integrates the gradient of the log-odds
of "vulnerable" (``logit_1 - logit_0``, what the probability depends on) along the straight
line from a baseline to the token embeddings. The baseline is the pad token everywhere except
the CLS/SEP positions, which keep their tokens (position ids come from the real input, so only
the words change along the path). A token's score is its attribution summed over the embedding
dimension; the tokenizer's character offsets put it on a line. Tokens dropped by trimming score
nothing (their lines get 0).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamguard_core.explain.explainer import Explainer, check_scores, progress_bar
from streamguard_core.explain.ig import log_odds, torch_detector, with_private_input_embeddings
from streamguard_core.explain.lines import char_scores_to_lines
from streamguard_core.preprocess.run import process_functions

MAX_BATCH_TOKENS = {"cpu": 16_384, "cuda": 262_144}
"""Token positions per forward pass (interpolation steps x sequences x length)."""
MAX_FUNCTIONS = 8
"""Functions explained together (sorted by length, so padding stays small)."""


class TransformerExplainer(Explainer):
    """Integrated gradients of a :class:`NeuralDetector` transformer, summed per line."""

    kind = "transformer"

    def __init__(self, detector: Any, ig_steps: int = 16) -> None:
        self.detector = detector
        self.ig_steps = ig_steps
        # Captum hooks the embedding layer while it runs: on a private copy of that layer, so
        # the detector's own model keeps scoring normally meanwhile (same weights)
        self.model = with_private_input_embeddings(detector.model)
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, model_dir: Path, detector: Any | None, ig_steps: int) -> TransformerExplainer:
        """Reuse ``detector``'s torch model when it has one, else load ``model_dir``."""
        return cls(torch_detector(model_dir, detector, cls.kind), ig_steps)

    def encode(self, funcs: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(input ids [L], character offsets [L, 2]) per function, as ``predict_proba`` makes
        them (CLS/SEP included, their offsets (0, 0))."""
        det = self.detector
        chunks = process_functions([(f, None) for f in funcs], det.dir, det.preprocess, workers=1)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for chunk in chunks:
            ends = np.cumsum(chunk.n_tokens)
            for end, n in zip(ends.tolist(), chunk.n_tokens.tolist(), strict=True):
                out.append((chunk.input_ids[end - n : end], chunk.offsets[end - n : end]))
        return out

    def _margin(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Log-odds of "vulnerable" (``logit_1 - logit_0``: what the softmax probability
        depends on), shape [B]."""
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return log_odds(logits)

    def token_attributions(self, ids: list[np.ndarray]) -> list[np.ndarray]:
        """Integrated-gradients score of every token of each sequence, shape [L_i] each.

        Args:
            ids: token ids per sequence, CLS first and SEP last.
        """
        from captum.attr import LayerIntegratedGradients

        det = self.detector
        device = torch.device(det.device)
        width = max(len(x) for x in ids)
        batch = torch.full((len(ids), width), int(det.pad_id), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, seq in enumerate(ids):
            batch[i, : len(seq)] = torch.from_numpy(seq.astype(np.int64))
            mask[i, : len(seq)] = 1
        baseline = torch.full_like(batch, int(det.pad_id))
        rows = torch.arange(len(ids))
        lengths = torch.as_tensor([len(x) for x in ids])
        baseline[:, 0] = batch[:, 0]  # CLS
        baseline[rows, lengths - 1] = batch[rows, lengths - 1]  # SEP
        budget = MAX_BATCH_TOKENS["cuda" if device.type == "cuda" else "cpu"]
        # Captum runs at least 2 steps of every sequence per pass
        internal = max(budget // width, 2 * len(ids))
        lig = LayerIntegratedGradients(self._margin, self.model.get_input_embeddings())
        with self._lock, torch.enable_grad():
            attributions = lig.attribute(
                batch.to(device),
                baselines=baseline.to(device),
                additional_forward_args=(mask.to(device),),
                n_steps=self.ig_steps,
                internal_batch_size=internal,
            )
        scores = attributions.sum(dim=-1).detach().double().cpu().numpy()
        return [scores[i, : len(seq)] for i, seq in enumerate(ids)]

    def endpoint_log_odds(self, ids: np.ndarray) -> tuple[float, float]:
        """The log-odds of one sequence [L] and of its baseline (the embeddings of the baseline
        tokens, positions of the real input): the two ends of the integration path."""
        det = self.detector
        device = torch.device(det.device)
        real = torch.from_numpy(ids.astype(np.int64))[None].to(device)
        mask = torch.ones_like(real)
        embeddings = self.model.get_input_embeddings()
        baseline = torch.full_like(real, int(det.pad_id))
        baseline[0, 0], baseline[0, -1] = real[0, 0], real[0, -1]
        with self._lock, torch.no_grad():
            at_input = float(self._margin(real, mask)[0])
            replaced = embeddings(baseline)
            hook = embeddings.register_forward_hook(lambda module, args, out: replaced)
            try:
                at_baseline = float(self._margin(real, mask)[0])
            finally:
                hook.remove()
        return at_input, at_baseline

    def line_scores(self, funcs: list[str], progress: bool = False) -> list[np.ndarray]:
        """Per-line sums of the token attributions."""
        encoded = self.encode(funcs)
        out: list[np.ndarray | None] = [None] * len(funcs)
        order = sorted(range(len(funcs)), key=lambda i: len(encoded[i][0]))
        with progress_bar(len(funcs), progress, "explain") as update:
            for start in range(0, len(order), MAX_FUNCTIONS):
                group = order[start : start + MAX_FUNCTIONS]
                scores = self.token_attributions([encoded[i][0] for i in group])
                for i, token_scores in zip(group, scores, strict=True):
                    out[i] = char_scores_to_lines(funcs[i], encoded[i][1], token_scores)
                update(len(group))
        return check_scores(funcs, [s for s in out if s is not None])
