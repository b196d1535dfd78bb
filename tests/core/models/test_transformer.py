"""Tiny RoBERTa classifier on a real processed data set's tokenizer and token ids."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from streamguard_core.models.transformer import (
    ModelLoadError,
    TransformerConfig,
    build_transformer_classifier,
    num_parameters,
    pad_input_ids,
)
from streamguard_core.preprocess.dataset import ProcessedSplit
from streamguard_core.preprocess.tokens import load_tokenizer

MAX_SEQ_LEN = 64
TINY = TransformerConfig(
    hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_seq_len=MAX_SEQ_LEN
)


@pytest.fixture(scope="module")
def processed(make_processed):
    return make_processed(pairs=3, vocab_size=300, max_seq_len=MAX_SEQ_LEN)


@pytest.fixture(scope="module")
def tokenizer(processed):
    return load_tokenizer(processed / "tokenizer")


def _batch(processed, tokenizer, n: int, offset: int = 0):
    """``n`` train sequences, padded; the synthetic functions fill the 64-token budget, so
    every other one is cut shorter (keeping ``</s>``) to make the padding real."""
    split = ProcessedSplit(processed, "train")
    seqs = []
    for k, i in enumerate(range(offset, offset + n)):
        ids = split.input_ids(i)
        keep = len(ids) - 7 * k if k % 2 else len(ids)
        seqs.append(np.concatenate([ids[: keep - 1], ids[-1:]]))
    enc = pad_input_ids(seqs, tokenizer.pad_token_id)
    return enc, torch.tensor([int(split.labels[i]) for i in range(offset, offset + n)])


def test_tiny_model_matches_tokenizer_and_gives_two_logits(processed, tokenizer):
    torch.manual_seed(0)
    model = build_transformer_classifier(TINY, processed / "tokenizer")
    assert model.config.vocab_size == len(tokenizer) == model.get_input_embeddings().num_embeddings
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.max_position_embeddings == MAX_SEQ_LEN + 2
    assert model.config.num_labels == 2
    enc, _ = _batch(processed, tokenizer, 5)
    lengths = enc["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1  # really padded
    assert enc["input_ids"].shape[1] <= MAX_SEQ_LEN
    assert (enc["input_ids"][enc["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    model.eval()
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (5, 2) and torch.isfinite(logits).all()
    # padding does not change a sequence's logits
    short = int(lengths.argmin())
    with torch.no_grad():
        alone = model(
            input_ids=enc["input_ids"][short : short + 1, : lengths[short]],
            attention_mask=enc["attention_mask"][short : short + 1, : lengths[short]],
        ).logits
    assert torch.allclose(alone, logits[short : short + 1], atol=1e-5)
    # a processed data set root is accepted in place of its tokenizer directory
    assert build_transformer_classifier(TINY, processed).config.vocab_size == len(tokenizer)


def test_tiny_defaults_and_parameter_count(processed):
    cfg = TransformerConfig()
    assert (cfg.model_name_or_path, cfg.hidden_size, cfg.num_layers) == ("tiny", 128, 2)
    assert (cfg.heads, cfg.feed_forward_size, cfg.max_seq_len) == (2, 256, None)
    with pytest.raises(ValueError, match="max_seq_len is unset"):
        build_transformer_classifier(cfg, processed / "tokenizer")
    model = build_transformer_classifier(
        cfg.model_copy(update={"max_seq_len": MAX_SEQ_LEN}), processed / "tokenizer"
    )
    assert 100_000 < num_parameters(model) < 1_000_000
    assert model.config.intermediate_size == 256 and model.config.num_attention_heads == 2
    with pytest.raises(ValueError, match="multiple of num_heads"):
        TransformerConfig(hidden_size=30, num_heads=4)


def test_overfits_eight_sequences(processed, tokenizer):
    torch.manual_seed(0)
    model = build_transformer_classifier(
        TINY.model_copy(update={"dropout": 0.0}), processed / "tokenizer"
    )
    enc, y = _batch(processed, tokenizer, 8)
    assert 0 < int(y.sum()) < 8
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = model(**enc, labels=y).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_save_pretrained_round_trip(processed, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(3)
    model = build_transformer_classifier(TINY, processed / "tokenizer").eval()
    enc, _ = _batch(processed, tokenizer, 4, offset=8)
    model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").exists()
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, again(**enc).logits)
    # a saved directory also works as model_name_or_path
    cfg = TINY.model_copy(update={"model_name_or_path": str(tmp_path / "model")})
    third = build_transformer_classifier(cfg, processed / "tokenizer").eval()
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, third(**enc).logits)


def test_unknown_model_offline_fails_clearly_without_network(processed, monkeypatch):
    """Offline, an unknown name fails at once with advice, and no connection is even tried
    (a hub lookup is what used to hang for ~20 s)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    connections: list[object] = []

    def refuse(sock: socket.socket, address: object) -> None:
        connections.append(address)
        raise OSError(f"test: no network (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    cfg = TransformerConfig(
        model_name_or_path="streamguard-test/no-such-model-xyz", max_seq_len=MAX_SEQ_LEN
    )
    with pytest.raises(ModelLoadError, match=r"no-such-model-xyz.*HF_HUB_OFFLINE.*'tiny'"):
        build_transformer_classifier(cfg, processed / "tokenizer")
    assert connections == []
    missing = TransformerConfig(model_name_or_path=str(processed / "no_model_here"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        build_transformer_classifier(missing, processed / "tokenizer")
