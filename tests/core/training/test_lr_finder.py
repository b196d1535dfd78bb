"""LR range test on a real tiny torch problem, fallbacks, and the cache."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from streamguard_core.training.lr_finder import (
    DEFAULT_LR,
    FINDER_REASON,
    SANE_LR_BAND,
    cache_key,
    find_lr,
    lr_range_test,
    suggest_lr,
)


def _logistic_problem(seed: int = 0):
    """Separable synthetic data and a logistic regression; step_fn does one SGD step at lr."""
    torch.manual_seed(seed)
    n, d = 256, 8
    w_true = torch.randn(d)
    x = torch.randn(n, d) * 10
    y = (x @ w_true > 0).float()
    model = torch.nn.Linear(d, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step_fn(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        logits = model(x).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return model, optimizer, step_fn


class Counter:
    """Wraps a step function and counts the calls."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0

    def __call__(self, lr: float) -> float:
        self.calls += 1
        return self.fn(lr)


def test_real_torch_problem_gives_a_finder_suggestion(tmp_path):
    model, optimizer, step_fn = _logistic_problem()
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict())

    result = find_lr("gnn", step_fn, tmp_path, {"model": "logreg", "seed": 0})
    assert result.source == "finder" and result.reason == FINDER_REASON
    lo, hi = SANE_LR_BAND["gnn"]
    assert lo <= result.lr <= hi
    assert 1e-7 * 10 <= result.lr <= 1.0 / 10
    assert len(result.lrs) == len(result.losses) >= 10
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-7)
    assert min(result.losses) < result.losses[0]

    # the caller restores its state afterwards (the finder trained the model)
    model.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_opt)
    assert all(torch.equal(v, saved_model[k]) for k, v in model.state_dict().items())

    key = cache_key({"model": "logreg", "seed": 0})
    cached = json.loads((tmp_path / f"{key}.json").read_text())
    assert cached["lr"] == result.lr and cached["source"] == "finder" and cached["kind"] == "gnn"


def test_range_test_schedule_and_divergence_stop():
    seen: list[float] = []

    def step_fn(lr: float) -> float:
        seen.append(lr)
        return 1.0 if lr < 1e-3 else 1e6  # blows up from 1e-3 on

    lrs, losses = lr_range_test(step_fn, min_lr=1e-6, max_lr=1.0, num_steps=61)
    assert lrs == seen and len(lrs) < 61  # stopped early
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[1] / lrs[0] == pytest.approx(10 ** (6 / 60))
    assert losses[-1] == 1e6 and lrs[-1] == pytest.approx(1e-3)

    full, _ = lr_range_test(lambda lr: 1.0, min_lr=1e-4, max_lr=1e-1, num_steps=4)
    assert full == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    with pytest.raises(ValueError):
        lr_range_test(lambda lr: 1.0, min_lr=1.0, max_lr=0.1)


def test_raising_step_fn_falls_back_naming_the_error(tmp_path):
    def boom(lr: float) -> float:
        raise RuntimeError("CUDA out of memory")

    result = find_lr("transformer", boom, tmp_path, {"k": 1})
    assert result.source == "fallback" and result.lr == DEFAULT_LR["transformer"]
    assert "RuntimeError" in result.reason and "CUDA out of memory" in result.reason
    assert result.lrs == [] and result.losses == []
    assert list(tmp_path.iterdir()) == []  # a possibly transient failure is not cached


def test_bad_range_settings_raise_rather_than_fall_back(tmp_path):
    with pytest.raises(ValueError, match="min_lr"):
        find_lr("gnn", lambda lr: 1.0, tmp_path, {"k": 1}, min_lr=1.0, max_lr=0.5)
    with pytest.raises(ValueError, match="unknown model kind"):
        find_lr("cnn", lambda lr: 1.0, tmp_path, {"k": 1})


def test_flat_loss_falls_back_never_decreases(tmp_path):
    result = find_lr("gnn", lambda lr: 0.69, tmp_path, {"k": "flat"})
    assert result.source == "fallback" and result.lr == DEFAULT_LR["gnn"]
    assert "never decreases" in result.reason
    assert len(result.lrs) == 100  # the curve is kept


def test_nan_everywhere_falls_back(tmp_path):
    result = find_lr("transformer", lambda lr: math.nan, tmp_path, {"k": "nan"})
    assert result.source == "fallback" and result.lr == DEFAULT_LR["transformer"]
    assert "non-finite" in result.reason
    direct = suggest_lr([1e-5] * 20, [math.nan] * 20, "transformer")
    assert direct.source == "fallback" and "non-finite everywhere" in direct.reason


def test_suggest_lr_fallbacks_for_short_curves_and_out_of_band():
    short = suggest_lr([1e-5, 1e-4, 1e-3], [1.0, 0.5, 0.2], "gnn")
    assert short.source == "fallback" and "fewer than 10" in short.reason
    # a curve whose steepest drop is at 1e-2: fine for a GNN, too high for a transformer
    lrs = [10 ** (-7 + 0.1 * i) for i in range(71)]
    losses = [1.0 / (1.0 + math.exp(4 * (math.log10(lr) + 2))) + 0.1 for lr in lrs]
    gnn = suggest_lr(lrs, losses, "gnn", smooth=1.0)
    assert gnn.source == "finder" and gnn.lr == pytest.approx(1e-2, rel=0.3)
    tr = suggest_lr(lrs, losses, "transformer", smooth=1.0)
    assert tr.source == "fallback" and "sane band" in tr.reason
    edge = suggest_lr(lrs, losses, "gnn", max_lr=1e-2, smooth=1.0)
    assert edge.source == "fallback" and "tested range" in edge.reason


def test_cache_hit_skips_step_fn_and_new_key_runs_again(tmp_path):
    _, _, step_fn = _logistic_problem()
    counted = Counter(step_fn)
    parts = {"model": {"kind": "gnn", "hidden": 64}, "data": "abc123", "batch_size": 32}

    first = find_lr("gnn", counted, tmp_path, parts)
    assert first.source == "finder" and counted.calls > 0
    calls = counted.calls

    reordered = {"batch_size": 32, "data": "abc123", "model": {"hidden": 64, "kind": "gnn"}}
    second = find_lr("gnn", counted, tmp_path, reordered)
    assert counted.calls == calls  # step_fn never called
    assert second.source == "cache" and second.lr == first.lr
    assert second.lrs == [] and second.losses == []
    assert "finder" in second.reason

    third = find_lr("gnn", counted, tmp_path, {**parts, "batch_size": 64})
    assert counted.calls > calls and third.source != "cache"
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_corrupt_cache_is_ignored(tmp_path):
    parts = {"k": "corrupt"}
    (tmp_path / f"{cache_key(parts)}.json").write_text("{not json")
    counted = Counter(lambda lr: 0.69)
    result = find_lr("gnn", counted, tmp_path, parts)
    assert counted.calls == 100 and result.source == "fallback"
    assert json.loads((tmp_path / f"{cache_key(parts)}.json").read_text())["kind"] == "gnn"


def test_no_cache_dir_runs_every_time():
    counted = Counter(lambda lr: 0.69)
    find_lr("gnn", counted, None, {"k": 1}, num_steps=20)
    find_lr("gnn", counted, None, {"k": 1}, num_steps=20)
    assert counted.calls == 40
