"""SARIF 2.1.0 output of ``scan``, validated against the official OASIS JSON schema."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from streamguard_core.explain.lines import LineScore
from streamguard_core.scan.discover import Skipped
from streamguard_core.scan.run import Finding, ScanResult, scan
from streamguard_core.scan.sarif import (
    FINGERPRINT_KEY,
    RULE_ID,
    SRCROOT,
    sarif_log,
    write_sarif,
)
from tests.core.scan.test_scan_run import A_C, BAD_C

# RFC 3986 characters (jsonschema checks "uri" formats only with rfc3986-validator installed)
URI_CHARS = re.compile(r"^(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$")


def assert_valid(validator: Any, log: dict[str, Any]) -> None:
    """No schema errors, and every URI is a well-formed RFC 3986 reference."""
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(log)]
    assert not errors, "\n".join(errors)
    for loc in artifact_locations(log):
        assert URI_CHARS.match(loc["uri"]), loc
        if "uriBaseId" in loc:  # a base id goes with a relative reference
            assert not loc["uri"].startswith(("/", "file:")), loc
        else:
            assert loc["uri"].startswith("file:///"), loc


def artifact_locations(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``artifactLocation`` (and ``originalUriBaseIds`` entry) in a SARIF log."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                key in ("artifactLocation", "location")
                and isinstance(value, dict)
                and ("uri" in value)
            ):
                yield value
            if key == "originalUriBaseIds":
                yield from value.values()
            yield from artifact_locations(value)
    elif isinstance(node, list):
        for value in node:
            yield from artifact_locations(value)


def expected_level(probability: float, threshold: float) -> str:
    """The documented rule: error from the midpoint between the threshold and 1."""
    return "error" if probability >= threshold + (1.0 - threshold) / 2 else "warning"


def by_function(log: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Results keyed by (function name, first line)."""
    out = {}
    for r in log["runs"][0]["results"]:
        loc = r["locations"][0]
        out[loc["logicalLocations"][0]["name"], loc["physicalLocation"]["region"]["startLine"]] = r
    return out


def fingerprints(log: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Fingerprint of each result, keyed by (uri, function name)."""
    return {
        (
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["logicalLocations"][0]["name"],
        ): r["partialFingerprints"][FINGERPRINT_KEY]
        for r in log["runs"][0]["results"]
    }


def made_up_result(base: Path, outside: Path, shift: int = 0) -> ScanResult:
    """Findings of every kind the SARIF mapping distinguishes, lines shifted by ``shift``."""
    model = base / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "model_card.json").write_text(json.dumps({"kind": "baseline"}))

    def f(file: str, name: str, lo: int, hi: int, p: float, lines: tuple[int, ...] = ()) -> Finding:
        scores = tuple(LineScore(n + shift, 1.0 / (k + 1)) for k, n in enumerate(lines))
        return Finding(file, name, lo + shift, hi + shift, p, p >= 0.5, "c", scores)

    findings = [
        f("src/a.c", "copy_name", 3, 9, 0.95, (6, 7)),
        f(str(base / "inc" / "util h.h"), "operator[]", 2, 5, 0.6),
        f("src/a.c", "overload", 20, 22, 0.8, (21,)),
        f("src/a.c", "overload", 24, 26, 0.75),  # exactly at the error cutoff
        f(str(outside), "ext", 1, 3, 0.5),  # exactly at the threshold
        f("src/a.c", "add", 11, 14, 0.2),
    ]
    skipped = [
        Skipped(str(base / "blob.c"), "binary", "NUL byte in the first 8192 bytes"),
        Skipped("src/a.c:30-90", "function_too_long", "big: 61 lines > 50"),
    ]
    return ScanResult(findings, skipped, 0.5, str(model), files=4, parse_error_files=1)


def test_made_up_findings_map_to_valid_sarif(tmp_path: Path, sarif_validator: Any) -> None:
    base, outside = tmp_path / "proj", tmp_path / "elsewhere" / "x.c"
    result = made_up_result(base, outside)
    log = sarif_log(result, base_dir=base)
    assert_valid(sarif_validator, log)
    run = log["runs"][0]
    assert log["version"] == "2.1.0" and len(log["runs"]) == 1

    driver = run["tool"]["driver"]
    assert driver["name"] == "StreamGuard"
    assert driver["version"] == metadata.version("streamguard")
    (rule,) = driver["rules"]
    assert (rule["id"], rule["name"]) == (RULE_ID, "vulnerable-function")
    assert rule["properties"]["modelKind"] == "baseline"
    assert rule["properties"]["threshold"] == 0.5 and rule["properties"]["errorCutoff"] == 0.75
    assert rule["properties"]["modelDir"] == result.model_dir

    # one result per flagged finding, nothing for the unflagged one
    results = by_function(log)
    flagged = [f for f in result.findings if f.flagged]
    assert set(results) == {(f.function, f.start_line) for f in flagged}
    assert ("add", 11) not in results
    for finding in flagged:
        r = results[finding.function, finding.start_line]
        assert r["ruleId"] == RULE_ID and r["ruleIndex"] == 0
        assert r["level"] == expected_level(finding.probability, 0.5)
        region = r["locations"][0]["physicalLocation"]["region"]
        assert (region["startLine"], region["endLine"]) == (finding.start_line, finding.end_line)
        assert r["properties"]["probability"] == finding.probability
        assert f"{finding.probability:.4f}" in r["message"]["text"]
        assert "threshold 0.5000" in r["message"]["text"]
    levels = {k[0] + str(k[1]): r["level"] for k, r in results.items()}
    assert levels == {"copy_name3": "error", "operator[]2": "warning", "overload20": "error",
                      "overload24": "error", "ext1": "warning"}  # fmt: skip

    # URIs: relative under SRCROOT (percent-encoded), absolute file:// outside base_dir
    def artifact(key: tuple[str, int]) -> dict[str, Any]:
        return dict(results[key]["locations"][0]["physicalLocation"]["artifactLocation"])

    assert run["originalUriBaseIds"][SRCROOT]["uri"] == base.resolve().as_uri() + "/"
    a = artifact(("copy_name", 3))
    assert (a["uri"], a["uriBaseId"]) == ("src/a.c", SRCROOT)
    assert artifact(("operator[]", 2))["uri"] == "inc/util%20h.h"
    ext = artifact(("ext", 1))
    assert ext["uri"] == outside.resolve().as_uri() and "uriBaseId" not in ext
    for loc in artifact_locations(run["results"]):
        assert run["artifacts"][loc["index"]]["location"]["uri"] == loc["uri"]

    # the top lines as related locations inside the function, linked from the message
    copy_name = results["copy_name", 3]
    related = copy_name["relatedLocations"]
    assert [r["id"] for r in related] == [1, 2]
    assert [r["physicalLocation"]["region"]["startLine"] for r in related] == [6, 7]
    assert all(r["physicalLocation"]["region"]["endLine"] == r["physicalLocation"]["region"][
        "startLine"] for r in related)  # fmt: skip
    assert all(3 <= r["physicalLocation"]["region"]["startLine"] <= 9 for r in related)
    assert related[0]["message"]["text"] == "attribution score 1, rank 1"
    assert related[1]["message"]["text"] == "attribution score 0.5, rank 2"
    assert "[line 6](1), [line 7](2)" in copy_name["message"]["text"]
    assert "relatedLocations" not in results["operator[]", 2]
    assert "operator\\[\\]" in results["operator[]", 2]["message"]["text"]  # not a link

    # fingerprints: one per function (same-named functions apart), stable, line-independent
    prints = [r["partialFingerprints"][FINGERPRINT_KEY] for r in run["results"]]
    assert len(set(prints)) == len(prints) == 5
    assert sarif_log(result, base_dir=base) == log
    moved = sarif_log(made_up_result(base, outside, shift=10), base_dir=base)
    assert [r["partialFingerprints"] for r in moved["runs"][0]["results"]] == [
        r["partialFingerprints"] for r in run["results"]
    ]
    assert by_function(moved)["copy_name", 13]["relatedLocations"][0]["physicalLocation"][
        "region"]["startLine"] == 16  # fmt: skip

    # every skipped item and the parse errors are notes, nothing dropped
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is True
    notes = invocation["toolExecutionNotifications"]
    assert [n["properties"]["reason"] for n in notes] == [
        "binary", "function_too_long", "parse_errors",
    ]  # fmt: skip
    assert all(n["level"] == "note" for n in notes)
    binary = notes[0]["locations"][0]["physicalLocation"]
    assert binary["artifactLocation"]["uri"] == "blob.c" and "region" not in binary
    assert "NUL byte" in notes[0]["message"]["text"]
    too_long = notes[1]["locations"][0]["physicalLocation"]
    assert too_long["artifactLocation"]["uri"] == "src/a.c"
    assert too_long["region"] == {"startLine": 30, "endLine": 90}
    assert notes[2]["properties"]["count"] == 1
    assert run["properties"]["skippedByReason"] == {"binary": 1, "function_too_long": 1}


def test_source_root_and_write(tmp_path: Path, sarif_validator: Any) -> None:
    base, outside = tmp_path / "proj", tmp_path / "elsewhere" / "x.c"
    result = made_up_result(base, outside)
    # relative paths read against another root (a git-diff scan: relative to the repository)
    nested = sarif_log(result, base_dir=tmp_path, source_root=base)
    assert_valid(sarif_validator, nested)
    uris = {u for u, _ in fingerprints(nested)}
    assert uris == {"proj/src/a.c", "proj/inc/util%20h.h", "elsewhere/x.c"}

    path = write_sarif(result, tmp_path / "out" / "results.sarif", base_dir=base)
    assert json.loads(path.read_text()) == sarif_log(result, base_dir=base)
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.sarif"]  # no temp file

    empty = ScanResult([], [], 0.3, str(tmp_path / "no-model"))
    log = sarif_log(empty, base_dir=tmp_path)
    assert_valid(sarif_validator, log)
    assert log["runs"][0]["results"] == []
    assert log["runs"][0]["invocations"][0]["toolExecutionNotifications"] == []
    assert "modelKind" not in log["runs"][0]["tool"]["driver"]["rules"][0]["properties"]


def test_schema_rejects_broken_logs(tmp_path: Path, sarif_validator: Any) -> None:
    log = sarif_log(made_up_result(tmp_path, tmp_path / "x.c"), base_dir=tmp_path)
    assert not list(sarif_validator.iter_errors(log))

    def broken(edit: Any) -> list[str]:
        bad = copy.deepcopy(log)
        edit(bad["runs"][0])
        return [e.message for e in sarif_validator.iter_errors(bad)]

    region = ("results", 0, "locations", 0, "physicalLocation", "region")

    def set_path(run: dict[str, Any], path: tuple[Any, ...], key: str, value: Any) -> None:
        node: Any = run
        for step in path:
            node = node[step]
        node[key] = value

    assert broken(lambda run: set_path(run, region, "startLine", "3"))
    assert broken(lambda run: set_path(run, region, "startLine", 0))
    assert broken(lambda run: set_path(run, ("results", 0), "level", "fatal"))
    assert broken(lambda run: set_path(run, ("invocations", 0), "executionSuccessful", "yes"))
    assert broken(lambda run: run["tool"].pop("driver"))
    bad_version = copy.deepcopy(log)
    bad_version["version"] = "2.0.0"
    assert list(sarif_validator.iter_errors(bad_version))


UTIL_H = """\
static inline int read_index(const int *table, int i)
{
    return table[i];
}
"""
MAIN_C = """\
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    char line[64];
    if (argc < 2) return 1;
    sprintf(line, "%s", argv[1]);
    gets(line);
    return atoi(line);
}

void long_one(void)
{
    int a = 0;
    a++;
    a++;
    a++;
    a++;
    a++;
    a++;
}
"""


def make_project(root: Path) -> Path:
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.c").write_text(A_C)
    (root / "src" / "sub" / "util.h").write_text(UTIL_H)
    (root / "main.c").write_text(MAIN_C)
    (root / "bad.c").write_text(BAD_C)
    (root / "blob.c").write_bytes(b"\x7fELF\0\0\1")
    return root


def median_threshold(root: Path, model_dir: Path) -> float:
    """A threshold that flags some of the project's functions and leaves others."""
    probs = sorted(f.probability for f in scan([str(root)], model_dir, explain="none").findings)
    return probs[len(probs) // 2]


def test_scan_of_a_project_gives_valid_sarif(
    tmp_path: Path, model_dir: Path, sarif_validator: Any
) -> None:
    root = make_project(tmp_path / "proj")
    cut = median_threshold(root, model_dir)
    kwargs: dict[str, Any] = {"threshold": cut, "max_function_lines": 7, "explain": "none"}
    result = scan([str(root)], model_dir, **kwargs)
    assert 0 < result.flagged < result.functions
    log = sarif_log(result, base_dir=root)
    assert_valid(sarif_validator, log)
    run = log["runs"][0]

    flagged = {(Path(f.file).relative_to(root).as_posix(), f.function, f.start_line, f.end_line)
               for f in result.findings if f.flagged}  # fmt: skip
    got = set()
    for r in run["results"]:
        loc = r["locations"][0]
        region = loc["physicalLocation"]["region"]
        uri = loc["physicalLocation"]["artifactLocation"]["uri"]
        name = loc["logicalLocations"][0]["name"]
        got.add((uri, name, region["startLine"], region["endLine"]))
        # the region is the function in the file: its first line names it, its last closes it
        lines = (root / uri).read_text().splitlines()
        assert name in lines[region["startLine"] - 1]
        assert lines[region["endLine"] - 1].startswith("}")
        assert r["level"] == expected_level(r["properties"]["probability"], cut)
    assert got == flagged
    assert {u for u, *_ in got} <= {"src/a.c", "src/sub/util.h", "main.c", "bad.c"}

    notes = run["invocations"][0]["toolExecutionNotifications"]
    reasons = [n["properties"]["reason"] for n in notes]
    assert sorted(reasons) == ["binary", "function_too_long", "function_too_long", "parse_errors"]
    by_reason = {n["properties"]["reason"]: n for n in notes}
    assert by_reason["binary"]["locations"][0]["physicalLocation"]["artifactLocation"][
        "uri"] == "blob.c"  # fmt: skip
    long_regions = {
        (n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
         n["locations"][0]["physicalLocation"]["region"]["startLine"])
        for n in notes if n["properties"]["reason"] == "function_too_long"
    }  # fmt: skip
    assert long_regions == {("main.c", 4), ("main.c", 13)}

    # fingerprints: identical on a second scan; unchanged when lines are added above
    again = sarif_log(scan([str(root)], model_dir, **kwargs), base_dir=root)
    assert fingerprints(again) == fingerprints(log)
    (root / "src" / "a.c").write_text("/* licence */\n/* header */\n" + A_C)
    moved_log = sarif_log(scan([str(root)], model_dir, **kwargs), base_dir=root)
    assert fingerprints(moved_log) == fingerprints(log)
    before, after = by_function(log), by_function(moved_log)
    for name, start in before:
        uri = before[name, start]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert (name, start + 2 if uri == "src/a.c" else start) in after
    assert len(set(fingerprints(log).values())) == len(log["runs"][0]["results"])


def test_explained_scan_puts_top_lines_inside_the_function(
    tmp_path: Path, model_dir: Path, sarif_validator: Any
) -> None:
    """Needs :func:`streamguard_core.explain.load_explainer` (the explain helper's part)."""
    root = make_project(tmp_path / "proj")
    cut = median_threshold(root, model_dir)
    result = scan([str(root)], model_dir, threshold=cut, explain="flagged", top_lines=3)
    log = sarif_log(result, base_dir=root)
    assert_valid(sarif_validator, log)
    results = log["runs"][0]["results"]
    assert results and any("relatedLocations" in r for r in results)
    for r in results:
        region = r["locations"][0]["physicalLocation"]["region"]
        related = r.get("relatedLocations", [])
        assert 1 <= len(related) <= 3
        assert [x["id"] for x in related] == list(range(1, len(related) + 1))
        for x in related:
            line = x["physicalLocation"]["region"]["startLine"]
            assert region["startLine"] <= line <= region["endLine"]
            assert (
                x["physicalLocation"]["artifactLocation"]
                == (r["locations"][0]["physicalLocation"]["artifactLocation"])
            )
            assert x["message"]["text"].endswith(f"rank {x['id']}")
    unflagged = [f for f in result.findings if not f.flagged]
    assert unflagged and all(f.lines == () for f in unflagged)
