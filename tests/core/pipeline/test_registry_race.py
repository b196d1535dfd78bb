"""A promotion race: several processes register a model and promote-if-better into one
registry at the same moment; the best one must end in production, nothing lost or torn."""

from __future__ import annotations

import itertools
import json

import pytest

from streamguard_core.io import atomic_write_json
from streamguard_core.pipeline.registry import ModelRegistry

# one candidate per process, in no particular order: the best is not the first or the last
F1S = [0.41, 0.77, 0.52, 0.93, 0.35, 0.66, 0.88]


def _register_and_promote(root: str, model_dir: str, index: int, f1: float, out: str, barrier):
    """One run's end: register its model, then promote it if it beats production."""
    registry = ModelRegistry(root)
    barrier.wait()  # every process starts registering at once
    version = registry.register(
        model_dir, model="baseline", seed=index, metrics={"f1": f1}, source_run=f"run-{index}"
    )
    decision = registry.promote_if_better(
        version,
        {"f1": f1},
        lambda current: current["metrics"],  # production's own registered metrics
        evaluation={"run": index},
    )
    atomic_write_json(f"{out}/{index}.json", decision)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A real tiny baseline detector directory (every process registers a copy of it)."""
    # imported here: the racing processes import this module and need no sklearn
    from streamguard_core.models.baseline import BaselineConfig, BaselineDetector

    funcs = ["void f(char *s) { char b[4]; strcpy(b, s); }", "int g(int a) { return a + 1; }"]
    detector = BaselineDetector(BaselineConfig(min_df=1))
    detector.fit(funcs * 4, [1, 0] * 4, funcs, [1, 0])
    return detector.save(tmp_path_factory.mktemp("race_model") / "model")


def test_concurrent_promotions_leave_the_best_in_production(tmp_path, tiny_model, race_processes):
    root, out = tmp_path / "registry", tmp_path / "decisions"
    out.mkdir()
    runs = [(str(root), str(tiny_model), i, f1, str(out)) for i, f1 in enumerate(F1S)]
    race_processes(_register_and_promote, runs, 180)

    registry = ModelRegistry(root)
    decisions = [json.loads((out / f"{i}.json").read_text()) for i in range(len(F1S))]
    # every registration kept, each under its own version
    versions = registry.versions()
    assert len(versions) == len(F1S) == len({d["version"] for d in decisions})
    assert sorted(d["version"] for d in decisions) == versions
    by_version = {v: registry.registration(v)["metrics"]["f1"] for v in versions}
    assert sorted(by_version.values()) == sorted(F1S)
    for i, decision in enumerate(decisions):
        assert by_version[decision["version"]] == F1S[i]
        assert (root / "models" / decision["version"] / "model_card.json").is_file()

    # production is the best candidate, whatever order they finished in
    production = registry.production()
    assert production is not None and production["metrics"]["f1"] == max(F1S)

    # the history is a chain: one whole line per promotion, each naming the one before it
    history = registry.history()  # parses every line: a torn line would raise here
    promoted = [d["version"] for d in decisions if d["promote"]]
    assert sorted(promoted) == sorted(entry["version"] for entry in history)
    assert history[0]["previous"] is None
    for before, entry in itertools.pairwise(history):
        assert entry["previous"] == before["version"]
        assert by_version[entry["version"]] > by_version[before["version"]]
    assert history[-1]["version"] == production["version"]
    pointer = json.loads((root / "production.json").read_text())
    assert pointer["previous"] == (history[-2]["version"] if len(history) > 1 else None)

    # each decision compared against the production of its moment: a candidate kept out was
    # beaten by the one it saw, a promoted one beat the one it replaced
    for decision in decisions:
        seen = decision["previous"]
        if decision["promote"]:
            assert seen is None or by_version[seen] < decision["candidate"]
        else:
            assert seen is not None and by_version[seen] >= decision["candidate"]
    assert not list(root.glob(".*.tmp")) and not (root / ".lock").exists()
