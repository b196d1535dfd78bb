"""The file-based model registry, promotion decisions and evaluation of a real tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamguard_core.data.loaders import DataError
from streamguard_core.evaluation.metrics import classification_metrics
from streamguard_core.models.baseline import BaselineConfig, BaselineDetector
from streamguard_core.pipeline.registry import ModelRegistry, decide_promotion, evaluate_on

VULNERABLE = [
    "void f(char *s) { char buf[8]; strcpy(buf, s); }",
    "void g(void) { char line[16]; gets(line); }",
    'void h(char *a) { char out[4]; sprintf(out, "%s", a); }',
    "int k(int *p, int n) { int t[10]; memcpy(t, p, n * sizeof(int)); return t[0]; }",
    "void m(char *s) { char d[2]; strcat(d, s); }",
    "void q(char *src) { char b[32]; strcpy(b, src); puts(b); }",
    "void r(void) { char name[10]; gets(name); printf(name); }",
    'void u(const char *x) { char y[5]; sprintf(y, "%s-%s", x, x); }',
    "void v(char *p) { free(p); free(p); }",
    "int w(char *s) { char a[3]; strcpy(a, s); return a[0]; }",
    "void z(char *s) { char *p = malloc(4); strcpy(p, s); }",
]
SAFE = [
    "void f(char *s) { char buf[8]; strncpy(buf, s, sizeof(buf) - 1); buf[7] = 0; }",
    "void g(void) { char line[16]; fgets(line, sizeof(line), stdin); }",
    'void h(char *a) { char out[4]; snprintf(out, sizeof(out), "%s", a); }',
    "int k(int *p, int n) { int t[10]; if (n > 10) return -1; memcpy(t, p, n); return 0; }",
    "void m(char *s) { char d[2]; strncat(d, s, sizeof(d) - strlen(d) - 1); }",
    "int add(int a, int b) { return a + b; }",
    'void r(void) { char name[10]; fgets(name, sizeof(name), stdin); printf("%s", name); }',
    'void u(const char *x) { char y[5]; snprintf(y, sizeof(y), "%s", x); }',
    "void v(char *p) { free(p); p = NULL; }",
    "int len(const char *s) { return s ? (int)strlen(s) : 0; }",
    "void z(char *s) { char *p = malloc(4); if (p) strncpy(p, s, 3); }",
]


def _train(out: Path, flip_labels: bool = False) -> Path:
    funcs = VULNERABLE + SAFE
    labels = [1] * len(VULNERABLE) + [0] * len(SAFE)
    if flip_labels:  # a deliberately bad model: it learns the opposite of the truth
        labels = [1 - label for label in labels]
    det = BaselineDetector(BaselineConfig(min_df=1))
    det.fit(funcs, labels, funcs, labels)
    return det.save(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two real tiny baseline detectors (a good one, a bad one) and a labelled JSONL file."""
    root = tmp_path_factory.mktemp("registry_models")
    strong = _train(root / "strong")
    weak = _train(root / "weak", flip_labels=True)
    records = root / "valid.jsonl"
    with open(records, "w") as fh:
        for func, target in [*((f, 1) for f in VULNERABLE), *((f, 0) for f in SAFE)]:
            fh.write(json.dumps({"func": func, "target": target}) + "\n")
        fh.write("{not json\n")  # a broken line: rejected, not fatal
    return {"strong": strong, "weak": weak, "records": records}


# ------------------------------------------------------------------ registry


def test_register_copies_the_model_and_numbers_versions(tmp_path, models):
    reg = ModelRegistry(tmp_path / "registry")
    assert reg.versions() == [] and reg.production() is None and reg.history() == []

    metrics = {"f1": 0.8, "roc_auc": None}
    fingerprint = {"train": "abc123"}
    v1 = reg.register(
        models["strong"],
        model="baseline",
        seed=42,
        metrics=metrics,
        source_run="/runs/baseline/seed_42",
        data_fingerprint=fingerprint,
    )
    v2 = reg.register(models["weak"], model="baseline", seed=43, metrics={}, source_run="r2")

    assert (v1, v2) == ("v0001", "v0002")
    assert reg.versions() == ["v0001", "v0002"]
    copied = tmp_path / "registry" / "models" / "v0001"
    for name in ("model_card.json", "vocabulary.json", "weights.npz"):
        assert (copied / name).read_bytes() == (models["strong"] / name).read_bytes()
    registration = json.loads((copied / "registration.json").read_text())
    assert registration["version"] == "v0001" and registration["seed"] == 42
    assert registration["model"] == "baseline" and registration["metrics"] == metrics
    assert registration["source_run"] == "/runs/baseline/seed_42"
    assert registration["data_fingerprint"] == fingerprint
    assert registration["registered_at"].endswith("+00:00")
    assert reg.registration("v0002")["model_dir"] == str(tmp_path / "registry" / "models" / "v0002")


def test_register_skips_numbers_already_taken(tmp_path, models):
    reg = ModelRegistry(tmp_path)
    (tmp_path / "models" / "v0007").mkdir(parents=True)  # reserved by a registration in flight
    version = reg.register(models["strong"], model="baseline", seed=1, metrics={}, source_run="r")
    assert version == "v0008"
    assert reg.versions() == ["v0008"]  # the half-made v0007 is not listed


def test_register_rejects_a_directory_without_model_card(tmp_path):
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    reg = ModelRegistry(tmp_path / "registry")
    with pytest.raises(ValueError, match=r"empty: not a model directory \(no model_card.json\)"):
        reg.register(not_a_model, model="baseline", seed=1, metrics={}, source_run="r")
    assert reg.versions() == []


def test_promote_moves_the_pointer_and_appends_history(tmp_path, models):
    root = tmp_path / "registry"
    reg = ModelRegistry(root)
    v1 = reg.register(models["weak"], model="baseline", seed=1, metrics={"f1": 0.5}, source_run="a")
    v2 = reg.register(
        models["strong"], model="baseline", seed=2, metrics={"f1": 0.9}, source_run="b"
    )

    first = reg.promote(v1, "no production model yet")
    assert first["version"] == v1 and first["previous"] is None
    prod = reg.production()
    assert prod is not None and prod["version"] == v1 and prod["metrics"] == {"f1": 0.5}
    assert prod["model_dir"] == str(root / "models" / v1)
    assert (Path(prod["model_dir"]) / "model_card.json").exists()

    evaluation = {"promote": True, "candidate": 0.9, "production": 0.5}
    second = reg.promote(v2, "better f1", evaluation=evaluation)
    assert second["previous"] == v1
    assert reg.production()["version"] == v2  # type: ignore[index]
    pointer = json.loads((root / "production.json").read_text())
    assert pointer["version"] == v2 and pointer["previous"] == v1
    assert pointer["reason"] == "better f1"

    history = reg.history()
    assert [(h["version"], h["previous"], h["reason"]) for h in history] == [
        (v1, None, "no production model yet"),
        (v2, v1, "better f1"),
    ]
    assert history[1]["evaluation"] == evaluation and history[0]["evaluation"] is None
    assert len((root / "history.jsonl").read_text().splitlines()) == 2
    assert ModelRegistry(root).production()["version"] == v2  # type: ignore[index]


@pytest.mark.parametrize("version", ["v0099", "../models", "latest"])
def test_unknown_versions_are_refused(tmp_path, models, version):
    reg = ModelRegistry(tmp_path)
    reg.register(models["strong"], model="baseline", seed=1, metrics={}, source_run="r")
    with pytest.raises(ValueError, match=r"unknown model version .*registered: v0001"):
        reg.promote(version, "why not")
    with pytest.raises(ValueError, match=str(tmp_path / "models")):
        reg.registration(version)
    assert reg.production() is None and reg.history() == []


# ------------------------------------------------------------------ decide_promotion


def test_decide_promotion_without_production_model():
    decision = decide_promotion({"f1": 0.4}, None)
    assert decision["promote"] is True and decision["production"] is None
    assert decision["candidate"] == 0.4 and "no production model" in decision["reason"]


def test_decide_promotion_compares_with_margin():
    better = decide_promotion({"f1": 0.81}, {"f1": 0.80})
    assert better["promote"] is True and (better["candidate"], better["production"]) == (0.81, 0.8)
    assert decide_promotion({"f1": 0.80}, {"f1": 0.80})["promote"] is False  # a tie keeps prod
    assert decide_promotion({"f1": 0.70}, {"f1": 0.80})["promote"] is False
    small = decide_promotion({"f1": 0.81}, {"f1": 0.80}, min_improvement=0.02)
    assert small["promote"] is False and "does not beat" in small["reason"]
    assert decide_promotion({"f1": 0.83}, {"f1": 0.80}, min_improvement=0.02)["promote"] is True
    by_auc = decide_promotion({"f1": 0.9, "roc_auc": 0.7}, {"f1": 0.5, "roc_auc": 0.8}, "roc_auc")
    assert by_auc["promote"] is False and by_auc["metric"] == "roc_auc"


def test_missing_metric_values_never_win():
    no_candidate = decide_promotion({"roc_auc": None}, {"roc_auc": 0.6}, metric="roc_auc")
    assert no_candidate["promote"] is False and "candidate has no roc_auc" in no_candidate["reason"]
    assert decide_promotion({}, None)["promote"] is False
    assert decide_promotion({"f1": float("nan")}, {"f1": 0.1})["promote"] is False
    no_production = decide_promotion({"f1": 0.3}, {"f1": None})
    assert no_production["promote"] is True and no_production["production"] is None


# ------------------------------------------------------------------ evaluate_on


def test_evaluate_on_matches_the_detectors_own_predictions(models):
    metrics = evaluate_on(models["strong"], models["records"])
    det = BaselineDetector.load(models["strong"])
    funcs = VULNERABLE + SAFE
    labels = [1] * len(VULNERABLE) + [0] * len(SAFE)
    expected = classification_metrics(labels, det.predict_proba(funcs), det.threshold)
    assert metrics["n_rejected"] == 1
    assert {k: v for k, v in metrics.items() if k != "n_rejected"} == expected
    assert metrics["n"] == len(funcs) and metrics["positives"] == len(VULNERABLE)
    assert metrics["threshold"] == pytest.approx(det.threshold)
    assert metrics["f1"] > 0.9  # it was fitted on these very functions


def test_candidate_against_production_end_to_end(tmp_path, models):
    reg = ModelRegistry(tmp_path)
    weak = reg.register(models["weak"], model="baseline", seed=1, metrics={}, source_run="a")
    reg.promote(weak, "first model")
    prod = reg.production()
    assert prod is not None

    candidate = evaluate_on(models["strong"], models["records"])
    incumbent = evaluate_on(prod["model_dir"], models["records"])
    # the registered copy scores exactly like its source
    assert incumbent == evaluate_on(models["weak"], models["records"])
    assert candidate["roc_auc"] > incumbent["roc_auc"]

    decision = decide_promotion(candidate, incumbent, metric="roc_auc", min_improvement=0.05)
    assert decision["promote"] is True
    assert decision["candidate"] == pytest.approx(candidate["roc_auc"])
    version = reg.register(
        models["strong"], model="baseline", seed=2, metrics=candidate, source_run="b"
    )
    reg.promote(version, decision["reason"], evaluation=decision)
    assert reg.production()["version"] == version  # type: ignore[index]
    assert reg.history()[-1]["evaluation"]["metric"] == "roc_auc"

    # and the bad model does not win its way back
    assert decide_promotion(incumbent, candidate, metric="roc_auc")["promote"] is False


def test_evaluate_on_bad_inputs(tmp_path, models):
    with pytest.raises(DataError, match=r"no model_card\.json"):
        evaluate_on(tmp_path, models["records"])
    with pytest.raises(DataError, match="does not exist"):
        evaluate_on(models["strong"], tmp_path / "missing.jsonl")
