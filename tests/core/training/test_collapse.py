"""Collapse detection: each symptom, counter resets, resume, and the report file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from streamguard_core.training.collapse import (
    COLLAPSE_EXIT_CODE,
    CollapseConfig,
    CollapseDetector,
    CollapseError,
    CollapseEvent,
    write_collapse_report,
)

NAN = math.nan


def test_three_nan_losses_collapse():
    det = CollapseDetector()
    assert det.on_step(NAN, 1.0, epoch=0, step=0) is None
    assert det.on_step(NAN, 1.0, epoch=0, step=1) is None
    event = det.on_step(NAN, 1.0, epoch=0, step=2)
    assert event is not None and event.reason == "non_finite_loss"
    assert (event.epoch, event.step) == (0, 2)
    assert event.history["counters"]["nonfinite_count"] == 3
    assert len(event.history["losses"]) == 3 and all(math.isnan(v) for v in event.history["losses"])
    assert det.event is event


def test_interleaved_finite_steps_reset_the_counter():
    det = CollapseDetector()
    for step in range(20):
        loss = NAN if step % 3 != 2 else 0.7  # two non-finite, then one finite
        assert det.on_step(loss, 1.0, epoch=0, step=step) is None
    assert det.nonfinite_count == 2


def test_non_finite_grad_norm_counts_as_non_finite():
    det = CollapseDetector(CollapseConfig(nonfinite_patience=2))
    assert det.on_step(0.5, math.inf, epoch=1, step=0) is None
    event = det.on_step(0.5, NAN, epoch=1, step=1)
    assert event is not None and event.reason == "non_finite_loss"
    assert "gradient norm" in event.detail


def test_exploding_gradients_and_reset():
    det = CollapseDetector(CollapseConfig(max_grad_norm_explode=100.0, explode_patience=3))
    assert det.on_step(0.5, 1e3, epoch=0, step=0) is None
    assert det.on_step(0.5, 1e3, epoch=0, step=1) is None
    assert det.on_step(0.5, 5.0, epoch=0, step=2) is None  # healthy step resets
    assert det.explode_count == 0
    assert det.on_step(0.5, 1e3, epoch=0, step=3) is None
    assert det.on_step(0.5, 2e3, epoch=0, step=4) is None
    event = det.on_step(0.5, 3e3, epoch=0, step=5)
    assert event is not None and event.reason == "exploding_gradients"
    assert event.history["grad_norms"][-3:] == [1e3, 2e3, 3e3]
    # no grad norm (e.g. not computed this step) is not exploding
    det2 = CollapseDetector()
    for step in range(10):
        assert det2.on_step(0.3, None, epoch=0, step=step) is None


def test_constant_predictions_over_three_evals():
    det = CollapseDetector()
    assert det.on_eval([0, 0, 0, 0], f1=0.5, epoch=1) is None
    assert det.on_eval(np.zeros(10, dtype=int), f1=0.5, epoch=2) is None
    event = det.on_eval([0, 0, 0], f1=0.5, epoch=3)
    assert event is not None and event.reason == "constant_predictions"
    assert event.step is None and event.epoch == 3
    assert "class 0" in event.detail
    assert event.history["eval_class_counts"][-1] == {"0": 3}


def test_mixed_predictions_reset_constant_counter():
    det = CollapseDetector()
    det.on_eval([1, 1], f1=0.5, epoch=1)
    det.on_eval([1, 1], f1=0.5, epoch=2)
    assert det.on_eval([0, 1], f1=0.5, epoch=3) is None
    assert det.constant_count == 0


def test_zero_f1_and_warmup_epochs():
    det = CollapseDetector(CollapseConfig(min_epochs_before_eval_checks=2))
    # epochs below the minimum are ignored entirely
    for _ in range(5):
        assert det.on_eval([0, 1, 0], f1=0.0, epoch=1) is None
    assert det.zero_f1_count == 0
    assert det.on_eval([0, 1, 0], f1=0.0, epoch=2) is None
    assert det.on_eval([0, 1, 0], f1=NAN, epoch=3) is None  # non-finite F1 counts as zero
    event = det.on_eval([0, 1, 0], f1=0.0, epoch=4)
    assert event is not None and event.reason == "zero_f1"
    assert det.on_eval([0, 1, 1], f1=0.2, epoch=5) is None
    assert det.zero_f1_count == 0


def test_state_dict_round_trip_continues_counting():
    det = CollapseDetector()
    det.on_step(NAN, None, epoch=0, step=0)
    det.on_step(NAN, None, epoch=0, step=1)
    det.on_eval([1, 1, 1], f1=0.0, epoch=1)
    det.on_eval([1, 1, 1], f1=0.0, epoch=2)
    state = det.state_dict()

    # through JSON too (NaN becomes None there), as a checkpoint's meta might store it
    from streamguard_core.io import to_jsonable

    for saved in (state, json.loads(json.dumps(to_jsonable(state)))):
        resumed = CollapseDetector()
        resumed.load_state_dict(saved)
        assert resumed.counters() == det.counters()
        event = resumed.on_step(NAN, None, epoch=0, step=2)
        assert event is not None and event.reason == "non_finite_loss"
        assert len(event.history["losses"]) == 3
        resumed2 = CollapseDetector()
        resumed2.load_state_dict(saved)
        event = resumed2.on_eval([1, 1, 1], f1=0.0, epoch=3)
        assert event is not None and event.reason == "constant_predictions"


def test_report_is_written_atomically_with_exit_code(tmp_path):
    det = CollapseDetector()
    event = None
    for step in range(3):
        event = det.on_step(math.inf, None, epoch=2, step=step)
    assert event is not None
    path = write_collapse_report(
        tmp_path / "run" / "collapse.json", event, {"model": "gnn", "seed": 7, "last_f1": NAN}
    )
    assert path == tmp_path / "run" / "collapse.json"
    report = json.loads(path.read_text())
    assert report["exit_code"] == COLLAPSE_EXIT_CODE == 3
    assert report["reason"] == "non_finite_loss" and report["epoch"] == 2 and report["step"] == 2
    assert report["model"] == "gnn" and report["seed"] == 7 and report["last_f1"] is None
    assert report["history"]["losses"] == [None, None, None]
    assert [p.name for p in path.parent.iterdir()] == ["collapse.json"]  # no temp file left
    with pytest.raises(ValueError, match="clash"):
        write_collapse_report(tmp_path / "x.json", event, {"reason": "mine"})


def test_collapse_error_carries_event():
    event = CollapseEvent("zero_f1", "3 evaluations", epoch=4, step=None, history={})
    err = CollapseError(event)
    assert isinstance(err, RuntimeError) and err.event is event
    assert "zero_f1" in str(err) and "epoch 4" in str(err)
    assert event.to_dict() == {
        "reason": "zero_f1",
        "detail": "3 evaluations",
        "epoch": 4,
        "step": None,
        "history": {},
    }


def test_config_forbids_unknown_fields_and_documents_each():
    with pytest.raises(ValidationError):
        CollapseConfig(explode_patiense=2)  # type: ignore[call-arg]
    assert all(f.description for f in CollapseConfig.model_fields.values())
