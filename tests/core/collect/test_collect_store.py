"""The offline source through the store: every line kept, rejected or deduplicated and counted;
a rerun adds nothing; a torn line left by a killed writer is cut and the row written again;
new lines appended to the source are picked up from the cursor."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from streamguard_core.collect.offline import function_from_row
from streamguard_core.collect.records import CollectedFunction, SourceReject
from streamguard_core.collect.store import collect_all, load_collected, run_source
from streamguard_core.config import CollectConfig, FileSourceConfig
from streamguard_core.io import read_jsonl


def _row(i: int, target: int, project: str = "demo", **extra: Any) -> dict[str, Any]:
    body = "if (n > 9) return -1; " if target == 0 else ""
    steps = "n++; " * i  # a different shape per i: normalisation abstracts names and literals
    return {
        "func": f"int get_{i}(char *buf, int n) {{ {steps}{body}return buf[n]; }}",
        "target": target,
        "project": project,
        "osv_id": f"OSV-2024-{i}",
        "published": "2024-01-01",
        "repo": "https://github.com/demo/demo",
        "fix_commit": f"{i:040x}",
        "parent_commit": f"{i + 1:040x}",
        "file": "src/get.c",
        "function": f"get_{i}",
        "crash_type": "Heap-buffer-overflow READ 1",
        "in_crash_state": i % 2 == 0,
        "n_changed_functions": 1,
        "fix_is_exact": True,
        "pair_id": f"{i:016x}",
        **extra,
    }


def _record(i: int) -> dict[str, Any]:
    return {
        "id": f"OSV-2024-{i}",
        "published": "2024-01-01T00:00:00Z",
        "details": "Crash type: Heap-buffer-overflow READ 1\nCrash state:\nget_1\n",
        "affected": [{
            "package": {"name": "demo", "ecosystem": "OSS-Fuzz"},
            "ranges": [{"type": "GIT", "repo": "https://github.com/demo/demo",
                        "events": [{"introduced": "0" * 40}, {"fixed": f"{i:040x}"}]}],
        }],
    }  # fmt: skip


def _write(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in lines)
    return path


@pytest.fixture
def source(tmp_path: Path) -> FileSourceConfig:
    rows = [json.dumps(_row(i, t)) for i in range(1, 6) for t in (1, 0)]
    rows.insert(3, '{"func": "int broken(")')  # torn JSON
    rows.insert(5, json.dumps(_row(99, 2)))  # bad label
    records = [json.dumps(_record(i)) for i in range(1, 6)] + ['{"id": 1}']
    return FileSourceConfig(
        records=str(_write(tmp_path / "records.jsonl.gz", records)),
        functions=str(_write(tmp_path / "functions.jsonl.gz", rows)),
    )


def test_every_line_is_kept_rejected_or_deduplicated(tmp_path: Path, source) -> None:
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"func": _row(3, 1)["func"], "target": 1}) + "\n")
    config = CollectConfig(
        sources=[source], output_dir=str(tmp_path / "out"), dedup_against=[str(held)]
    )
    summary = collect_all(config)
    (counts,) = summary["sources"]
    out = tmp_path / "out" / "file"
    functions = list(read_jsonl(out / "functions.jsonl"))
    duplicates = list(read_jsonl(out / "duplicates.jsonl"))
    rejects = list(read_jsonl(out / "rejects.jsonl"))
    function_rejects = [r for r in rejects if "functions.jsonl.gz" in r["where"]]
    assert len(functions) + len(duplicates) + len(function_rejects) == 12
    assert sorted(r["reason"] for r in function_rejects) == ["invalid_record", "malformed_json"]
    assert [d["function"] for d in duplicates] == ["get_3"]  # the held text, label 1
    assert counts["functions"] == 9 and counts["deduplicated"] == 1 and counts["done"]
    assert counts["fixes"] == 5 and counts["rejects_by_reason"]["invalid_record"] == 2
    assert {f["source"] for f in functions} == {"file"}
    assert all(f["provenance"]["where"].startswith(source.functions) for f in functions)
    # ids are unique and tell the two versions of a pair apart
    ids = [f["id"] for f in functions]
    assert len(set(ids)) == len(ids) and any(i.endswith(":pre") for i in ids)
    assert len(load_collected(tmp_path / "out")) == 9


def test_rerun_adds_nothing_and_new_lines_are_picked_up(tmp_path: Path, source) -> None:
    config = CollectConfig(sources=[source], output_dir=str(tmp_path / "out"))
    first = collect_all(config)["sources"][0]
    again = collect_all(config)["sources"][0]
    assert again["new_this_run"] == 0 and again["functions"] == first["functions"]
    # the source grows: only the new line is read (the cursor holds the line number)
    with gzip.open(source.functions, "rt") as fh:
        lines = fh.read().splitlines()
    _write(Path(source.functions), [*lines, json.dumps(_row(7, 1))])
    grown = collect_all(config)["sources"][0]
    assert grown["functions"] == first["functions"] + 1 and grown["new_this_run"] == 1


def test_a_torn_last_line_is_cut_and_the_row_collected_again(tmp_path: Path, source) -> None:
    config = CollectConfig(sources=[source], output_dir=str(tmp_path / "out"))
    collect_all(config)
    out = tmp_path / "out" / "file"
    complete = (out / "functions.jsonl").read_bytes()
    # a writer killed mid-row: the last row half written, the cursor one line behind
    lines = complete.splitlines(keepends=True)
    (out / "functions.jsonl").write_bytes(b"".join(lines[:-1]) + lines[-1][:40])
    cursor = json.loads((out / "cursor.json").read_text())
    cursor["functions_line"] -= 1
    cursor.pop("functions_done")
    cursor.pop("done")
    (out / "cursor.json").write_text(json.dumps(cursor))
    summary = run_source(source, "file", config)
    assert (out / "functions.jsonl").read_bytes() == complete
    assert summary.functions == len(lines) and summary.done


def test_function_rows_are_validated() -> None:
    good = function_from_row(_row(1, 1), "f:1")
    assert isinstance(good, CollectedFunction) and good.target == 1
    for bad in ({"target": True}, {"func": ""}, {"n_changed_functions": "3"},
                {"in_crash_state": "yes"}, {"osv_id": None}):  # fmt: skip
        reject = function_from_row({**_row(1, 1), **bad}, "f:2")
        assert isinstance(reject, SourceReject) and reject.reason == "invalid_record"
        assert reject.where == "f:2"


def test_a_missing_source_file_is_a_clear_error(tmp_path: Path) -> None:
    config = CollectConfig(
        sources=[FileSourceConfig(records=str(tmp_path / "nope.jsonl"))],
        output_dir=str(tmp_path / "out"),
    )
    summary = collect_all(config)
    assert "nope.jsonl" in summary["sources"][0]["error"]


def test_streamguard_collect_command(tmp_path: Path, source, capsys) -> None:
    from streamguard_core.cli import main
    from streamguard_core.config import save_yaml

    path = save_yaml(CollectConfig(sources=[source]), tmp_path / "collect.yaml")
    out = tmp_path / "cli-out"
    assert main(["collect", "--config", str(path), "--output-dir", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["totals"]["functions"] == 10 and printed["output_dir"] == str(out)
    assert (out / "collect_summary.json").exists()
    # every source failing is exit 1, naming the problem
    bad = save_yaml(
        CollectConfig(sources=[FileSourceConfig(records=str(tmp_path / "nope.jsonl"))]),
        tmp_path / "bad.yaml",
    )
    assert main(["collect", "--config", str(bad), "--output-dir", str(tmp_path / "o2")]) == 1
    assert "nope.jsonl" in capsys.readouterr().out
