"""``scan`` and ``streamguard scan`` with a real baseline detector over real C files."""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamguard_core.config import ScanConfig
from streamguard_core.data.synthetic import generate_synthetic
from streamguard_core.explain.lines import LineScore
from streamguard_core.io import read_jsonl
from streamguard_core.models.baseline import BaselineDetector
from streamguard_core.models.registry import load_detector
from streamguard_core.pipeline.registry import ModelRegistry
from streamguard_core.scan.cli import add_scan_parser
from streamguard_core.scan.discover import ScanError
from streamguard_core.scan.run import Finding, ScanResult, format_table, scan, write_jsonl

A_C = """\
#include <string.h>

int copy_name(char *dst, const char *src)
{
    char buf[16];
    strcpy(buf, src);
    memcpy(dst, buf, strlen(src));
    return 0;
}

static int add(int a, int b)
{
    return a + b;
}
"""
B_CPP = """\
namespace util {
int clamp(int v, int lo, int hi) {
    if (v < lo) return lo;
    if (v > hi) return hi;
    return v;
}
}
"""
BAD_C = """\
int good(int x) {
    return x + 1;
}

int broken(int y) {
    return y + ;
"""


def as_row(finding: Finding) -> dict[str, Any]:
    """A finding as a JSON Lines row reads back (its ``lines`` tuple becomes a list)."""
    return dict(json.loads(json.dumps(asdict(finding))))


def span(text: str, head: str) -> tuple[int, int]:
    """Lines (1-based, inclusive) of the function whose first line starts with ``head``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return start + 1, end + 1


def make_project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.c").write_text(A_C)
    (root / "src" / "b.cpp").write_text(B_CPP)
    (root / "bad.c").write_text(BAD_C)
    (root / "blob.c").write_bytes(b"\0\1\2")
    (root / "notes.txt").write_text("int f(void) { return 0; }\n")
    return root


def test_scan_finds_and_scores_every_function(tmp_path: Path, model_dir: Path) -> None:
    root = make_project(tmp_path / "proj")
    result = scan([str(root)], model_dir)
    found = {(f.file, f.function): f for f in result.findings}
    a, b, bad = str(root / "src" / "a.c"), str(root / "src" / "b.cpp"), str(root / "bad.c")
    assert set(found) >= {(a, "copy_name"), (a, "add"), (b, "util::clamp"), (bad, "good")}
    assert {k for k in found if k[0] != bad} == {(a, "copy_name"), (a, "add"), (b, "util::clamp")}
    assert (found[a, "copy_name"].start_line, found[a, "copy_name"].end_line) == span(
        A_C, "int copy"
    )
    assert (found[a, "add"].start_line, found[a, "add"].end_line) == span(A_C, "static int add")
    assert (found[b, "util::clamp"].start_line, found[b, "util::clamp"].end_line) == (2, 6)
    assert (found[bad, "good"].start_line, found[bad, "good"].end_line) == (1, 3)
    assert found[b, "util::clamp"].language == "cpp" and found[a, "add"].language == "c"
    assert result.files == 3 and result.parse_error_files == 1
    assert [(s.path, s.reason) for s in result.skipped] == [(str(root / "blob.c"), "binary")]
    assert result.skipped_by_reason == {"binary": 1}

    # probabilities are the detector's own, sorted, flagged by the model's threshold
    det = load_detector(model_dir)
    texts = [
        "\n".join(Path(f.file).read_text().splitlines()[f.start_line - 1 : f.end_line])
        for f in result.findings
    ]
    assert texts[[f.function for f in result.findings].index("add")] == (
        "static int add(int a, int b)\n{\n    return a + b;\n}"
    )
    expected = det.predict_proba(texts)
    np.testing.assert_allclose([f.probability for f in result.findings], expected, atol=1e-12)
    probs = [f.probability for f in result.findings]
    assert probs == sorted(probs, reverse=True)
    assert result.threshold == det.threshold
    assert all(f.flagged == (f.probability >= det.threshold) for f in result.findings)


def test_batches_threshold_and_long_functions(tmp_path: Path, model_dir: Path) -> None:
    root = make_project(tmp_path / "proj")
    whole = scan([str(root)], model_dir, batch_size=64)
    one_by_one = scan([str(root)], model_dir, batch_size=1)
    strip = [(f.file, f.function, f.start_line, f.flagged) for f in whole.findings]
    assert [(f.file, f.function, f.start_line, f.flagged) for f in one_by_one.findings] == strip
    np.testing.assert_allclose(
        [f.probability for f in one_by_one.findings],
        [f.probability for f in whole.findings],
        atol=1e-12,
    )
    middle = float(np.median([f.probability for f in whole.findings]))
    cut = scan([str(root)], model_dir, threshold=middle)
    assert cut.threshold == middle
    assert cut.flagged == sum(f.probability >= middle for f in cut.findings) >= 1
    assert any(not f.flagged for f in cut.findings)
    short = scan([str(root)], model_dir, max_function_lines=4)
    kept = {f.function for f in short.findings}
    assert kept == {f.function for f in whole.findings if f.end_line - f.start_line < 4}
    assert {"add", "good"} <= kept and not {"copy_name", "util::clamp"} & kept
    too_long = {s.path: s.detail for s in short.skipped if s.reason == "function_too_long"}
    lo, hi = span(A_C, "int copy")
    assert too_long[f"{root / 'src' / 'a.c'}:{lo}-{hi}"].startswith("copy_name: 7 lines")
    assert f"{root / 'src' / 'b.cpp'}:2-6" in too_long


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(repo), *args],
        capture_output=True, check=True,
    )  # fmt: skip


FIRST = """\
int f1(int a)
{
    return a;
}

int f2(int a)
{
    return a + 2;
}

int f3(int a)
{
    int b = a;
    b += 3;
    return b;
}
"""


def test_git_diff_keeps_only_touched_functions(tmp_path: Path, model_dir: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.c").write_text(FIRST)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    second = FIRST.replace("return a + 2;", "return a * 2;").replace("    b += 3;\n", "")
    (repo / "a.c").write_text(second)
    (repo / "b.c").write_text("int f4(void)\n{\n    return 4;\n}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    # the work tree moves on: a range still reads the new side from git, not from the disk
    (repo / "a.c").write_text("/* new */\n/* lines */\n" + second.replace("return a;", "return 1;"))

    result = scan([], model_dir, git_diff="HEAD~1..HEAD", repo=repo)
    got = {(f.file, f.function, f.start_line, f.end_line) for f in result.findings}
    assert got == {
        ("a.c", "f2", *span(second, "int f2")),
        ("a.c", "f3", *span(second, "int f3")),
        ("b.c", "f4", 1, 4),
    }
    assert result.functions_outside_diff == 1  # f1

    against_work_tree = scan([], model_dir, git_diff="HEAD", repo=repo)
    assert [(f.file, f.function) for f in against_work_tree.findings] == [("a.c", "f1")]

    with pytest.raises(ScanError, match="'nope'"):
        scan([], model_dir, git_diff="nope..HEAD", repo=repo)


def cli(*argv: str) -> int:
    """Run ``streamguard scan`` through a parser built with :func:`add_scan_parser`."""
    parser = argparse.ArgumentParser(prog="streamguard")
    add_scan_parser(parser.add_subparsers())
    args = parser.parse_args(["scan", *argv])
    return int(args.func(args))


def test_cli_exit_codes_and_outputs(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_project(tmp_path / "proj")
    default = scan([str(root)], model_dir)
    top = default.findings[0].probability
    assert cli(str(root), "--model-dir", str(model_dir)) == 0
    out = capsys.readouterr().out
    # flagged findings are explained by default: their top lines get a column
    assert default.flagged and all(bool(f.lines) == f.flagged for f in default.findings)
    assert out.splitlines()[0].split() == ["probability", "flagged", "location", "lines",
                                           "function"]  # fmt: skip
    assert "copy_name" in out and "skipped:" in out and "binary" in out
    assert cli(str(root), "--model-dir", str(model_dir), "--fail-on", repr(top)) == 1
    capsys.readouterr()
    if top < 1.0:
        above = min(1.0, top + 1e-6)
        assert cli(str(root), "--model-dir", str(model_dir), "--fail-on", repr(above)) == 0
    capsys.readouterr()
    assert cli(str(root), "--model-dir", str(model_dir), "--top", "1") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("...") and "more below the top 1" in table[2]

    # usage errors: 2
    assert cli(str(root)) == 2
    assert "--model-dir" in capsys.readouterr().err
    assert cli("--model-dir", str(model_dir)) == 2
    assert cli(str(root), "--model-dir", str(tmp_path)) == 2  # not a model directory
    assert cli("--git-diff", "nope..HEAD", "--repo", str(root), "--model-dir", str(model_dir)) == 2
    with pytest.raises(SystemExit) as both:
        cli(str(root), "--model-dir", str(model_dir), "--registry", str(tmp_path))
    assert both.value.code == 2
    with pytest.raises(SystemExit) as bad_p:
        cli(str(root), "--model-dir", str(model_dir), "--fail-on", "1.5")
    assert bad_p.value.code == 2
    registry = tmp_path / "registry"
    assert cli(str(root), "--registry", str(registry)) == 2
    assert "no production model" in capsys.readouterr().err

    # the registry's production model is the one used
    reg = ModelRegistry(registry)
    version = reg.register(model_dir, model="baseline", seed=3, metrics={}, source_run="test")
    reg.promote(version, reason="test")
    out_file = tmp_path / "out" / "findings.jsonl"
    argv = [str(root), "--registry", str(registry), "--format", "jsonl", "--output", str(out_file)]
    assert cli(*argv) == 0
    rows = list(read_jsonl(out_file))
    direct = scan([str(root)], model_dir)
    assert rows[:-1] == [as_row(f) for f in direct.findings]
    summary = rows[-1]["summary"]
    assert summary["model_dir"] == str(registry / "models" / version)
    assert (summary["files"], summary["functions"], summary["flagged"]) == (
        direct.files, direct.functions, direct.flagged,
    )  # fmt: skip
    assert summary["skipped"] == [{"path": str(root / "blob.c"), "reason": "binary", "detail": (
        direct.skipped[0].detail)}]  # fmt: skip


def test_write_jsonl_and_table_round_trip(tmp_path: Path, model_dir: Path) -> None:
    root = make_project(tmp_path / "proj")
    result = scan([str(root)], model_dir)
    path = tmp_path / "findings.jsonl"
    assert write_jsonl(result, path) == result.functions + 1
    rows = list(read_jsonl(path))
    assert rows[:-1] == [as_row(f) for f in result.findings]
    assert rows[-1]["summary"]["skipped_by_reason"] == {"binary": 1}
    lines = format_table(result).splitlines()
    body = lines[1 : 1 + result.functions]
    for line, finding in zip(body, result.findings, strict=True):
        assert line.split()[:3] == [
            f"{finding.probability:.4f}",
            "yes" if finding.flagged else "no",
            f"{finding.file}:{finding.start_line}-{finding.end_line}",
        ]
        assert line.endswith(finding.function)
    # columns are aligned: the location column starts at the same offset on every row
    offsets = {line.index(str(root)) for line in body}
    assert len(offsets) == 1


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamguard")
    add_scan_parser(parser.add_subparsers())
    return parser.parse_args(["scan", *argv])


def test_cli_explain_flags_default_to_scan_config() -> None:
    defaults = ScanConfig()
    args = parse("src")
    assert (args.format, args.explain, args.top_lines, args.ig_steps, args.use_onnx) == (
        "table", defaults.explain, defaults.top_lines, defaults.ig_steps, defaults.use_onnx,
    )  # fmt: skip
    assert args.base_dir is None
    args = parse("src", "--explain", "all", "--top-lines", "3", "--ig-steps", "8", "--no-onnx")
    assert (args.explain, args.top_lines, args.ig_steps, args.use_onnx) == ("all", 3, 8, False)
    assert parse("src", "--onnx").use_onnx is True
    for bad in (["--top-lines", "0"], ["--top-lines", "101"], ["--ig-steps", "1"],
                ["--top-lines", "x"], ["--explain", "some"], ["--format", "xml"]):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            parse("src", *bad)
        assert exc.value.code == 2, bad


def test_format_table_shows_top_lines(tmp_path: Path) -> None:
    findings = [
        Finding("a.c", "f", 3, 9, 0.9, True, "c", (LineScore(6, 0.5), LineScore(5, 0.2))),
        Finding("long/path/b.c", "g", 10, 12, 0.7, True, "c", (LineScore(11, 0.1),)),
        Finding("a.c", "h", 11, 14, 0.1, False, "c"),
    ]
    table = format_table(ScanResult(findings, [], 0.5, "m", files=2)).splitlines()
    assert table[0].split() == ["probability", "flagged", "location", "lines", "function"]
    assert [row.split()[3:] for row in table[1:4]] == [["6,5", "f"], ["11", "g"], ["-", "h"]]
    # the column is aligned: it starts at the same offset on every row
    assert len({row.index(f" {row.split()[3]} ") for row in table[:4]}) == 1
    plain = format_table(ScanResult(findings[2:], [], 0.5, "m", files=1)).splitlines()
    assert plain[0].split() == ["probability", "flagged", "location", "function"]


def test_cli_sarif_output(
    tmp_path: Path,
    model_dir: Path,
    sarif_validator: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = make_project(tmp_path / "proj")
    monkeypatch.chdir(root)  # relative PATHs: URIs relative to the current directory
    direct = scan(["src", "bad.c", "blob.c"], model_dir, top_lines=2)
    assert direct.flagged
    out_file = tmp_path / "out" / "results.sarif"
    argv = ["src", "bad.c", "blob.c", "--model-dir", str(model_dir), "--format", "sarif"]
    assert cli(*argv, "--output", str(out_file), "--top-lines", "2") == 0
    log = json.loads(out_file.read_text())
    assert not [e.message for e in sarif_validator.iter_errors(log)]
    run = log["runs"][0]
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"] == root.resolve().as_uri() + "/"
    got = {
        (
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["logicalLocations"][0]["name"],
            tuple(x["physicalLocation"]["region"]["startLine"] for x in r["relatedLocations"]),
        )
        for r in run["results"]
    }
    assert got == {
        (f.file, f.function, tuple(s.line for s in f.lines)) for f in direct.findings if f.flagged
    }
    assert all(1 <= len(lines) <= 2 for *_, lines in got)
    notes = run["invocations"][0]["toolExecutionNotifications"]
    located = [n for n in notes if "locations" in n]
    assert [n["properties"]["reason"] for n in located] == ["binary"]
    assert located[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "blob.c"

    # stdout, no explanations, another base directory; the gate still applies
    top = direct.findings[0].probability
    assert cli(*argv, "--explain", "none", "--base-dir", str(tmp_path), "--fail-on", repr(top)) == 1
    streamed = json.loads(capsys.readouterr().out)
    assert not [e.message for e in sarif_validator.iter_errors(streamed)]
    results = streamed["runs"][0]["results"]
    assert len(results) == len(run["results"]) and not any("relatedLocations" in r for r in results)
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results} <= {
        "proj/src/a.c", "proj/src/b.cpp", "proj/bad.c",
    }  # fmt: skip

    assert cli(*argv, "--base-dir", str(tmp_path / "nope")) == 2
    assert "--base-dir" in capsys.readouterr().err


def test_cli_sarif_of_a_git_diff_is_relative_to_the_repo(
    tmp_path: Path, model_dir: Path, sarif_validator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.c").write_text(FIRST)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "sub").mkdir()
    (repo / "sub" / "b.c").write_text("int f4(void)\n{\n    return 4;\n}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    # run from elsewhere: diff paths are relative to --repo, and so are the URIs by default
    argv = ["--git-diff", "HEAD~1..HEAD", "--repo", str(repo), "--model-dir", str(model_dir),
            "--format", "sarif", "--threshold", "0", "--explain", "none"]  # fmt: skip
    assert cli(*argv) == 0
    log = json.loads(capsys.readouterr().out)
    assert not [e.message for e in sarif_validator.iter_errors(log)]
    run = log["runs"][0]
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"] == repo.resolve().as_uri() + "/"
    (result,) = run["results"]
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "sub/b.c", "uriBaseId": "SRCROOT", "index": 0}
    assert location["region"] == {"startLine": 1, "endLine": 4}
    assert result["level"] == "error" or result["properties"]["probability"] < 0.5
    assert run["properties"]["functionsOutsideDiff"] == 0


def test_a_model_without_line_signal_reports_no_lines(tmp_path: Path) -> None:
    """Trees over whole-function metrics cannot rank lines: flagged findings carry none
    (rather than the first lines with a zero score)."""
    from streamguard_core.config import BaselineConfig

    records = generate_synthetic(pairs_per_cwe=4, seed=3)
    det = BaselineDetector(BaselineConfig(features="metrics"))
    det.fit([r.func for r in records], [r.label for r in records])
    metrics_dir = det.save(tmp_path / "metrics")
    root = tmp_path / "proj"
    make_project(root)
    result = scan([str(root / "src")], metrics_dir, threshold=0.0, explain="all")
    assert result.findings and all(f.flagged and f.lines == () for f in result.findings)


def test_worker_processes_give_the_same_findings(tmp_path: Path, model_dir: Path) -> None:
    """Batches scored by 2 spawned processes (each loading the model) come back in order with
    the probabilities one process gives."""
    root = tmp_path / "proj"
    make_project(root)
    for i in range(6):  # enough functions for several batches of 2
        (root / "src" / f"extra{i}.c").write_text(f"int f{i}(int *p) {{ return p[{i}] + {i}; }}\n")
    one = scan([str(root)], model_dir, batch_size=2, explain="none")
    two = scan([str(root)], model_dir, batch_size=2, explain="none", workers=2)
    assert len(one.findings) >= 8
    assert [(f.file, f.function) for f in two.findings] == [
        (f.file, f.function) for f in one.findings
    ]
    np.testing.assert_allclose(
        [f.probability for f in two.findings], [f.probability for f in one.findings], rtol=1e-12
    )
    with pytest.raises(ValueError, match="workers must be >= 1"):
        scan([str(root)], model_dir, workers=0)
