"""Transformer sequence classifiers: a tiny RoBERTa trained from scratch, or a pretrained model.

``model_name_or_path="tiny"`` (the default, works offline) builds a small
``RobertaForSequenceClassification`` whose vocabulary is the processed data set's own tokenizer
(``<data>/tokenizer``, a byte-level BPE unless preprocessing was given ``--tokenizer``). Any other
value is a Hugging Face model name (e.g. ``microsoft/codebert-base``) or a local directory,
loaded with ``AutoModelForSequenceClassification`` and a fresh two-class head; the data set
should then have been preprocessed with that model's tokenizer, since token ids must mean the
same thing to the embeddings.

Saving and loading are the standard Hugging Face calls, and no pickle is involved
(``save_pretrained`` writes ``config.json`` and ``model.safetensors``)::

    model.save_pretrained(out_dir)
    model = AutoModelForSequenceClassification.from_pretrained(out_dir)

Inputs are ``input_ids`` padded with the tokenizer's pad id and an ``attention_mask``
(:func:`pad_input_ids` builds both from :meth:`ProcessedSplit.input_ids` sequences); the output's
``logits`` have shape ``[batch, 2]`` (class 1 = vulnerable).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamguard_core.config import TINY, TransformerConfig, tiny_shape
from streamguard_core.preprocess.tokens import TOKENIZER_JSON, load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "TINY",
    "ModelLoadError",
    "TransformerConfig",
    "build_transformer_classifier",
    "tiny_shape",
]
NUM_LABELS = 2
# RoBERTa numbers positions from padding_idx + 1, so it needs two rows beyond the sequence length.
ROBERTA_POSITION_OFFSET = 2


class ModelLoadError(RuntimeError):
    """A pretrained transformer could not be loaded (unknown name, offline, missing files)."""


def resolve_tokenizer_dir(path: str | Path) -> Path:
    """A tokenizer directory, or a processed data set root holding one in ``tokenizer/``."""
    p = Path(path)
    if not (p / TOKENIZER_JSON).exists() and (p / "tokenizer" / TOKENIZER_JSON).exists():
        return p / "tokenizer"
    return p


def _offline() -> bool:
    return any(
        os.environ.get(var, "") not in ("", "0", "false", "False")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _build_tiny(cfg: TransformerConfig, tokenizer: Any) -> PreTrainedModel:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; the tiny model needs one")
    if cfg.max_seq_len is None:
        raise ValueError(
            "TransformerConfig.max_seq_len is unset: resolve it against the data set first "
            "(TransformerAdapter.build and training.run.resolve_spec do)"
        )
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=cfg.max_seq_len + ROBERTA_POSITION_OFFSET,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.heads,
        num_hidden_layers=cfg.num_layers,
        intermediate_size=cfg.feed_forward_size,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
    )
    config.num_labels = NUM_LABELS  # a property (sets id2label); not an __init__ keyword in v5
    return RobertaForSequenceClassification(config)


def _load_pretrained(cfg: TransformerConfig, tokenizer: Any) -> PreTrainedModel:
    # a pretrained model keeps its own width; max_seq_len is checked against its positions
    from transformers import AutoConfig, AutoModelForSequenceClassification

    name = cfg.model_name_or_path
    local = Path(name).expanduser()
    source = str(local) if local.is_dir() else name
    if not local.is_dir() and name.startswith(("/", ".", "~")):
        raise ModelLoadError(
            f"transformer model directory {name!r} does not exist; pass a directory saved with "
            f"save_pretrained, a Hugging Face model name, or {TINY!r}"
        )
    try:
        config = AutoConfig.from_pretrained(source)
        config.num_labels = NUM_LABELS
        for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(config, attr):
                setattr(config, attr, cfg.dropout)
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            config=config,
            ignore_mismatched_sizes=True,  # a saved head with another label count is replaced
        )
    except (OSError, ValueError, KeyError) as exc:
        hint = (
            " HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set, so only models already in the local "
            "Hugging Face cache can be loaded."
            if _offline()
            else ""
        )
        raise ModelLoadError(
            f"cannot load transformer model {name!r}: not a loadable local model directory and "
            f"the Hugging Face hub could not provide it.{hint} Use model_name_or_path={TINY!r} "
            "(a small RoBERTa trained from scratch, works offline) or a local directory saved "
            f"with save_pretrained. ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if model.config.model_type in ("roberta", "xlm-roberta", "camembert") and max_pos:
        max_pos -= ROBERTA_POSITION_OFFSET
    if max_pos and cfg.max_seq_len is not None and cfg.max_seq_len > max_pos:
        raise ValueError(
            f"max_seq_len {cfg.max_seq_len} exceeds what {name!r} supports ({max_pos} tokens)"
        )
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        model.resize_token_embeddings(len(tokenizer))
    if len(tokenizer) != vocab or (
        tokenizer.pad_token_id is not None
        and getattr(model.config, "pad_token_id", None) not in (None, tokenizer.pad_token_id)
    ):
        warnings.warn(
            f"the data set's tokenizer ({len(tokenizer)} tokens, pad id "
            f"{tokenizer.pad_token_id}) does not look like {name!r}'s own ({vocab} tokens, pad id "
            f"{getattr(model.config, 'pad_token_id', None)}); pretrained embeddings only help "
            f"when the data was preprocessed with --tokenizer {name}",
            UserWarning,
            stacklevel=3,
        )
    return model


def build_transformer_classifier(
    cfg: TransformerConfig, tokenizer_dir: str | Path
) -> PreTrainedModel:
    """A two-label ``transformers.PreTrainedModel`` for sequence classification.

    Args:
        cfg: the model settings.
        tokenizer_dir: the tokenizer the data was encoded with (``<data>/tokenizer``; a processed
            data set root is accepted too).

    Returns:
        ``RobertaForSequenceClassification`` (``tiny``, deterministic under
        ``torch.manual_seed``) or the ``AutoModelForSequenceClassification`` of the named model,
        in training mode. Its forward takes ``input_ids`` :math:`(B, L)` and
        ``attention_mask`` :math:`(B, L)` and returns ``logits`` :math:`(B, 2)`.

    Raises:
        ModelLoadError: a pretrained model cannot be found or downloaded.
        streamguard_core.preprocess.tokens.TokenizerError: the tokenizer cannot be loaded.
    """
    tokenizer = load_tokenizer(resolve_tokenizer_dir(tokenizer_dir))
    if cfg.model_name_or_path == TINY:
        return _build_tiny(cfg, tokenizer)
    return _load_pretrained(cfg, tokenizer)


def pad_input_ids(
    sequences: Sequence[np.ndarray | Sequence[int]],
    pad_token_id: int,
    max_len: int | None = None,
) -> dict[str, Any]:
    """Right-pad token id sequences into ``input_ids`` and ``attention_mask`` (torch long).

    Sequences longer than ``max_len`` are cut (keeping their head); preprocessing already fits
    them to its ``max_seq_len``.

    Shapes:
        - **input:** ``B`` sequences of lengths :math:`L_i`
        - **output:** ``input_ids`` and ``attention_mask`` :math:`(B, \\max_i L_i)`
    """
    import torch

    seqs = [np.asarray(s, dtype=np.int64)[:max_len] for s in sequences]
    width = max((len(s) for s in seqs), default=0)
    ids = np.full((len(seqs), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def num_parameters(model: Any, trainable_only: bool = False) -> int:
    """Number of parameters of a torch module (all, or those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
