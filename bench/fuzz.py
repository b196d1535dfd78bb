"""Fuzz the raw-input paths with atheris (coverage-guided libFuzzer), as one JSON line.

Targets (each fed bytes; any exception other than the documented clear error is a crash):

``loaders``     the bytes become a file (JSONL, CSV, Devign ``function.json``, Juliet JSONL,
                gzip'd or not; the format given or ``auto``) read by
                :func:`~streamguard_core.data.loaders.iter_records`. It must yield records or
                rejects, or raise ``DataError``; every item must be writable as a UTF-8 JSON
                line, every record valid (non-empty text, label 0/1, finite weight >= 0), and a
                JSON Lines file must give one item per non-blank line (nothing dropped).
``preprocess``  the bytes become one function's text (UTF-8, lossily decoded), validated and
                preprocessed as in training (tree-sitter parse, AST graph, BPE tokens,
                vulnerability-aware trimming; a small ``max_seq_len``/``max_nodes`` so trimming
                and truncation happen); the arrays must be consistent (edges inside the graph,
                tokens within the budget).
``evaluate``    the bytes become a raw data file read and scored the way ``streamguard
                evaluate`` does (``load_labelled`` then ``predict_proba`` of a tiny baseline
                trained at start; only ``DataError`` may escape); every input that loads also
                goes through the whole ``streamguard evaluate`` command (``cli.main``) with at
                most ``--cli-every``'s share, which must exit 0 (metrics JSON written) or 1 with
                one ``streamguard: error:`` line.

Each target runs in its own process (libFuzzer runs once per process) for its share of
``--inputs`` (loaders 50 %, preprocess 30 %, evaluate 20 %) and of ``--seconds``; a crash is
recorded (input saved under ``--crash-dir``, traceback in ``crashes.jsonl``) and fuzzing goes
on. The bare baseline is the same harness with a no-op target: the harness's own inputs/s.
Without atheris (``--engine random``, or atheris not installed) a seeded random mutator over
the same seed inputs is used. Exit code 1 when any crash was found.

    python bench/fuzz.py [--inputs 100000] [--seconds 1800] [--target loaders,preprocess,evaluate]
                         [--engine atheris|random] [--crash-dir DIR] [--seed 0]

Prints e.g. ``{"engine": "atheris", "inputs": 100000, "crashes": 0, "targets": {"loaders":
{"inputs": 50000, "crashes": 0, "inputs_per_s": ...}, ...}, "baseline_noop": {...}}``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import importlib.util
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARES = {"loaders": 0.5, "preprocess": 0.3, "evaluate": 0.2}
BASELINE_INPUTS = 20_000
MAX_LEN = 4096  # bytes per input: several records or a long function; larger only slows it
FLUSH_EVERY_S = 0.5

# file names a loaders input is written under (the suffix and the name pick the format in "auto")
LOADER_NAMES = (
    "data.jsonl", "data.csv", "function.json", "juliet_cwe121.jsonl", "data.jsonl.gz",
    "data.csv.gz", "function.json.gz", "records.txt",
)  # fmt: skip
LOADER_FORMATS = ("auto", "devign", "codexglue", "juliet", "jsonl", "csv")
EVALUATE_NAMES = ("eval.jsonl", "eval.csv", "function.json", "juliet_eval.jsonl", "eval.jsonl.gz")
MUTATION_TOKENS = (
    b'"', b"{", b"}", b"[", b"]", b",", b":", b"\n", b"\r\n", b"\\", b"\\ud800", b"\\udc80",
    b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"\x80", b"\xed\xa0\x80", b"1e999", b"NaN", b"-1",
    b"true", b"null", b"123456789012345678901234567890", b'"target"', b'"func"', b'"label"',
    b'"weight"', b'"func_anon"', b'"idx"', b"\x1f\x8b", b"/*", b"*/", b"//", b"#define",
    b"strcpy(", b"buf[", b"{{{{", b"}}}}", b"\t",
)  # fmt: skip


# --------------------------------------------------------------------------- seed inputs


def _seed_functions() -> list[str]:
    from streamguard_core.data.synthetic import generate_synthetic

    funcs = [r.func for r in generate_synthetic(pairs_per_cwe=1, seed=5)][:6]
    funcs.append("template <typename T> T max(T a, T b) { return a > b ? a : b; }")
    funcs.append("int f(char *s) {\n  char b[8];\n  strcpy(b, s);\n  return b[0];\n}\n")
    return funcs


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _csv(rows: list[dict[str, Any]]) -> bytes:
    import csv

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _data_seeds(funcs: list[str]) -> list[bytes]:
    """Valid files of every format (the fuzzer mutates from there)."""
    pairs = [(f, i % 2) for i, f in enumerate(funcs[:4])]
    return [
        _jsonl([{"func": f, "target": y, "idx": i} for i, (f, y) in enumerate(pairs)]),
        _jsonl([{"func": f, "label": y, "weight": 0.5, "cwe": "CWE121"} for f, y in pairs]),
        _jsonl([{"func_anon": f, "target": y, "testcase": "a.cpp"} for f, y in pairs]),
        _csv([{"func": f, "label": y, "weight": 1.0} for f, y in pairs]),
        json.dumps([{"func": f, "target": y, "project": "p"} for f, y in pairs]).encode(),
        b"\xef\xbb\xbf" + _jsonl([{"func": f, "target": y} for f, y in pairs[:2]]),
    ]


def seeds_for(target: str) -> list[bytes]:
    """Seed inputs of a target: a mode byte, then the content."""
    if target == "noop":
        return [b""]
    funcs = _seed_functions()
    if target == "preprocess":
        return [bytes([i % 3]) + f.encode() for i, f in enumerate(funcs)]
    data = _data_seeds(funcs)
    names = LOADER_NAMES if target == "loaders" else EVALUATE_NAMES
    out = []
    for content in data:
        for mode in range(len(names)):
            out.append(bytes([mode]) + content)
    return out


# --------------------------------------------------------------------------- targets


class Skip(Exception):
    """Not a crash: the input was refused the documented way."""


def _write_input(root: Path, name: str, content: bytes, mode: int) -> Path:
    path = root / name
    if name.endswith(".gz"):
        # mostly valid gzip; sometimes raw bytes (the loader sniffs the magic) or a cut stream
        if mode & 0x80:
            content = gzip.compress(content, mtime=0)[: max(10, len(content) // 2)]
        elif not mode & 0x40:
            content = gzip.compress(content, mtime=0)
    path.write_bytes(content)
    return path


def _check_items(items: list[Any], path: Path) -> None:
    """Records valid, and every item writable as a UTF-8 JSON line."""
    from streamguard_core.io import _dumps_line, to_jsonable
    from streamguard_core.schema import FunctionRecord, Reject

    for item in items:
        if isinstance(item, FunctionRecord):
            assert isinstance(item.func, str) and item.func.strip(), "empty function kept"
            assert item.label in (0, 1), f"label {item.label!r}"
            assert math.isfinite(item.weight) and item.weight >= 0, f"weight {item.weight!r}"
            assert isinstance(item.id, str) and item.id, "record without an id"
        else:
            assert isinstance(item, Reject), f"yielded {type(item).__name__}"
            assert item.line >= 1 and item.reason and item.detail, f"vague reject {item}"
        _dumps_line(to_jsonable(item.to_dict())).encode("utf-8")


def _jsonl_lines(path: Path) -> int:
    """Non-blank lines of a (gzip'd) JSON Lines file, as the loader splits them."""
    from streamguard_core.io import open_binary

    with open_binary(path) as fh:
        content = fh.read()
    content = content.removeprefix(b"\xef\xbb\xbf")
    return sum(1 for line in content.split(b"\n") if line.strip())


def make_loaders_target(root: Path) -> Callable[[bytes], None]:
    from streamguard_core.data.loaders import DataError, detect_format, iter_records

    def target(data: bytes) -> None:
        if not data:
            raise Skip
        mode, content = data[0], data[1:]
        name = LOADER_NAMES[mode % len(LOADER_NAMES)]
        fmt = LOADER_FORMATS[(mode >> 3) % len(LOADER_FORMATS)]
        path = _write_input(root, name, content, mode)
        try:
            items = list(iter_records(path, fmt))
        except DataError:
            raise Skip from None
        _check_items(items, path)
        used = detect_format(path) if fmt == "auto" else fmt
        if used in ("codexglue", "juliet", "jsonl"):
            lines = _jsonl_lines(path)
            assert len(items) == lines, f"{lines} non-blank lines gave {len(items)} items"

    return target


def make_preprocess_target(root: Path, tokenizer_dir: Path) -> Callable[[bytes], None]:
    import numpy as np

    from streamguard_core.config import PreprocessConfig
    from streamguard_core.preprocess.run import process_functions, validate_records
    from streamguard_core.schema import FunctionRecord

    cfg = PreprocessConfig(max_seq_len=48, max_nodes=300, max_func_chars=MAX_LEN, workers=1)
    hints = (None, "c", "cpp")

    def target(data: bytes) -> None:
        if not data:
            raise Skip
        text = data[1:].decode("utf-8", errors="replace")
        record = FunctionRecord(id="fuzz:1", func=text, label=0, source="fuzz")
        kept, _ = validate_records([record], cfg)
        if not kept or not text.strip():
            raise Skip  # the pipeline writes a reject for it
        (chunk,) = process_functions([(text, hints[data[0] % 3])], tokenizer_dir, cfg, workers=1)
        n_tok, n_nodes, n_edges = (
            int(chunk.n_tokens[0]),
            int(chunk.n_nodes[0]),
            int(chunk.n_edges[0]),
        )
        assert 2 <= n_tok <= cfg.max_seq_len and len(chunk.input_ids) == n_tok, "token budget"
        assert chunk.offsets.shape[0] == n_tok, "offsets per token"
        assert len(chunk.node_type) == n_nodes == len(chunk.node_token), "node arrays"
        assert chunk.edge_index.shape == (2, n_edges) and len(chunk.edge_type) == n_edges
        if n_edges:
            assert int(chunk.edge_index.min()) >= 0 and int(chunk.edge_index.max()) < n_nodes
        assert np.all(chunk.input_ids >= 0), "negative token id"

    return target


def make_evaluate_target(root: Path, model_dir: Path, cli_every: int) -> Callable[[bytes], None]:
    from streamguard_core import cli
    from streamguard_core.data.loaders import DataError
    from streamguard_core.models.registry import load_detector, load_labelled

    detector = load_detector(model_dir)
    state = {"loaded": 0}

    def target(data: bytes) -> None:
        if not data:
            raise Skip
        mode, content = data[0], data[1:]
        path = _write_input(root, EVALUATE_NAMES[mode % len(EVALUATE_NAMES)], content, mode)
        try:
            records, _ = load_labelled(path)
        except DataError:
            raise Skip from None
        probs = detector.predict_proba([r.func for r in records])
        assert len(probs) == len(records) and all(0.0 <= p <= 1.0 for p in probs)
        state["loaded"] += 1
        if state["loaded"] % cli_every:
            return
        out = root / "metrics.json"
        out.unlink(missing_ok=True)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            argv = ["evaluate", "--model-dir", str(model_dir), "--data", str(path)]
            rc = cli.main([*argv, "--output", str(out), "--predictions", str(root / "p.jsonl")])
        if rc == 0:
            assert json.loads(out.read_text())["data"] == str(path), "metrics not written"
        else:
            lines = stderr.getvalue().strip().splitlines()
            assert rc == 1 and len(lines) == 1 and lines[0].startswith("streamguard: error:"), (
                f"exit {rc}, stderr {stderr.getvalue()[:500]!r}"
            )

    return target


# --------------------------------------------------------------------------- worker


class Stats:
    """Counts of one worker, flushed to a JSON file (libFuzzer exits without atexit hooks)."""

    def __init__(self, path: Path, target: str, runs: int) -> None:
        self.path, self.target, self.runs = path, target, runs
        self.inputs = self.crashes = self.skipped = 0
        self.kinds: dict[str, int] = {}
        self.started = time.perf_counter()
        self.flushed = self.started

    def tick(self) -> None:
        self.inputs += 1
        now = time.perf_counter()
        if now - self.flushed >= FLUSH_EVERY_S or self.inputs >= self.runs:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        self.flushed = now
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "inputs": self.inputs, "crashes": self.crashes, "refused": self.skipped,
            "seconds": now - self.started, "crash_kinds": self.kinds,
        }))  # fmt: skip
        os.replace(tmp, self.path)


def _record_crash(stats: Stats, crash_dir: Path, data: bytes, exc: BaseException) -> None:
    stats.crashes += 1
    digest = hashlib.sha1(data).hexdigest()[:12]
    saved = crash_dir / f"{stats.target}-{digest}.bin"
    saved.write_bytes(data)
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "streamguard_core" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    kind = f"{type(exc).__name__} at {where}"
    stats.kinds[kind] = stats.kinds.get(kind, 0) + 1
    with open(crash_dir / "crashes.jsonl", "a") as fh:
        fh.write(json.dumps({
            "target": stats.target, "input": str(saved), "kind": kind,
            "message": str(exc)[:500], "traceback": traceback.format_exception(exc)[-6:],
        }) + "\n")  # fmt: skip


def run_worker(args: argparse.Namespace) -> None:
    """One target in this process, until ``--runs`` inputs or ``--max-seconds``."""
    work = Path(args.work_dir)  # inside the parent's temporary directory (removed with it)
    work.mkdir(parents=True, exist_ok=True)
    crash_dir = Path(args.crash_dir)
    stats = Stats(Path(args.stats_file), args.worker, args.runs)
    use_atheris = args.engine == "atheris"
    if use_atheris:
        import atheris

        # coverage guidance over our own code only (instrumenting numpy/sklearn costs much)
        with atheris.instrument_imports(include=["streamguard_core"]):
            target = _build_target(args, work)
    else:
        target = _build_target(args, work)

    def one_input(data: bytes) -> None:
        if stats.inputs >= args.runs:
            return
        try:
            target(data)
        except Skip:
            stats.skipped += 1
        except Exception as exc:  # every other exception is a crash: record it, go on
            _record_crash(stats, crash_dir, data, exc)
        stats.tick()

    seeds = seeds_for(args.worker)
    if use_atheris:
        corpus = work / "corpus"
        corpus.mkdir()
        for i, seed in enumerate(seeds):
            (corpus / f"seed{i}").write_bytes(seed)
        dictionary = work / "tokens.dict"  # parser-relevant tokens the mutator splices in
        dictionary.write_text("".join(f'"{_dict_escape(t)}"\n' for t in MUTATION_TOKENS))
        argv = [sys.argv[0], f"-runs={args.runs}", f"-max_total_time={args.max_seconds}",
                f"-max_len={MAX_LEN}", "-rss_limit_mb=4096", "-timeout=60",
                f"-seed={args.seed + 1}", f"-dict={dictionary}", str(corpus)]  # fmt: skip
        atheris.Setup(argv, one_input)
        stats.started = time.perf_counter()
        atheris.Fuzz()  # exits the process when done
    else:
        rng = random.Random(args.seed)
        deadline = time.perf_counter() + args.max_seconds
        stats.started = time.perf_counter()
        while stats.inputs < args.runs and time.perf_counter() < deadline:
            one_input(mutate(rng, seeds))
    stats.flush()


def _dict_escape(token: bytes) -> str:
    """A libFuzzer dictionary entry's body: printable ASCII as is, the rest as \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02X}" for b in token)


def _build_target(args: argparse.Namespace, work: Path) -> Callable[[bytes], None]:
    if args.worker == "noop":
        return lambda data: None
    if args.worker == "loaders":
        return make_loaders_target(work)
    if args.worker == "preprocess":
        return make_preprocess_target(work, Path(args.tokenizer_dir))
    return make_evaluate_target(work, Path(args.model_dir), args.cli_every)


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    """A seeded random mutation of a seed input (the engine without atheris)."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        pos = rng.randint(0, len(data))
        if op == 0 and data:  # flip a byte
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:  # insert random bytes
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 2 and data:  # delete a range
            del data[pos : pos + rng.randint(1, 32)]
        elif op == 3:  # insert a token that matters to a parser
            data[pos:pos] = rng.choice(MUTATION_TOKENS)
        elif op == 4 and data:  # duplicate a range
            a = rng.randrange(len(data))
            data[pos:pos] = data[a : a + rng.randint(1, 64)]
        else:  # splice with another seed
            other = rng.choice(seeds)
            data[pos:] = other[rng.randint(0, len(other)) :]
    if data:
        data[0] = rng.randrange(256)  # the mode byte
    return bytes(data[:MAX_LEN])


# --------------------------------------------------------------------------- orchestration


def prepare(work: Path) -> tuple[Path, Path]:
    """A tiny baseline detector and a small BPE tokenizer, trained once (seconds)."""
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.models.baseline import BaselineDetector
    from streamguard_core.preprocess.tokens import train_bpe_tokenizer

    records = generate_synthetic(pairs_per_cwe=4, seed=3)
    det = BaselineDetector()
    det.fit([r.func for r in records], [r.label for r in records])
    model_dir = det.save(work / "baseline")
    tokenizer = train_bpe_tokenizer([r.func for r in records], work / "tokenizer", vocab_size=400)
    return model_dir, tokenizer


def run_target(
    target: str, runs: int, seconds: float, args: argparse.Namespace, work: Path,
    model_dir: Path, tokenizer: Path,
) -> dict[str, Any]:  # fmt: skip
    """Fuzz one target in a child process; its counts."""
    stats_file = work / f"{target}.stats.json"
    log = Path(args.crash_dir) / f"{target}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", target,
           "--runs", str(runs), "--max-seconds", str(max(1, int(seconds))),
           "--stats-file", str(stats_file), "--crash-dir", args.crash_dir,
           "--engine", args.engine, "--seed", str(args.seed), "--model-dir", str(model_dir),
           "--tokenizer-dir", str(tokenizer), "--cli-every", str(args.cli_every),
           "--work-dir", str(work / target)]  # fmt: skip
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=seconds + 300)
    result: dict[str, Any] = (
        json.loads(stats_file.read_text())
        if stats_file.exists()
        else {"inputs": 0, "crashes": 0, "refused": 0, "seconds": 0.0, "crash_kinds": {}}
    )
    if proc.returncode != 0:  # libFuzzer died (a hang, out of memory, a native crash)
        result["crashes"] += 1
        result["crash_kinds"][f"worker exit {proc.returncode} (see {log})"] = 1
    result["inputs_per_s"] = (
        round(result["inputs"] / result["seconds"], 1) if result["seconds"] else 0.0
    )
    result["seconds"] = round(result["seconds"], 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs over all targets")
    parser.add_argument("--seconds", type=float, default=1800, help="wall-time bound, all targets")
    parser.add_argument("--target", default=",".join(SHARES), help="comma-separated targets")
    parser.add_argument("--engine", choices=("atheris", "random"), default=None,
                        help="default: atheris when installed, else random")  # fmt: skip
    parser.add_argument("--crash-dir", default="runs/fuzz", help="crash inputs and worker logs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cli-every", type=int, default=20,
        help="evaluate: every Nth input that loads also runs the whole CLI",
    )  # fmt: skip
    parser.add_argument("--baseline-inputs", type=int, default=BASELINE_INPUTS)
    # worker-side (internal)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stats-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine is None:
        args.engine = "atheris" if importlib.util.find_spec("atheris") else "random"
    if args.worker:
        run_worker(args)
        return 0
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(SHARES))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {sorted(SHARES)}")
    Path(args.crash_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.crash_dir) / "crashes.jsonl").unlink(missing_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        work = Path(tmp)
        model_dir, tokenizer = prepare(work)
        total_share = sum(SHARES[t] for t in targets)
        baseline = run_target("noop", args.baseline_inputs, 60, args, work, model_dir, tokenizer)
        results = {}
        for target in targets:
            share = SHARES[target] / total_share
            runs, seconds = round(args.inputs * share), args.seconds * share
            results[target] = run_target(target, runs, seconds, args, work, model_dir, tokenizer)
    crashes = sum(r["crashes"] for r in results.values())
    report = {
        "engine": args.engine,
        "inputs": sum(r["inputs"] for r in results.values()),
        "inputs_requested": args.inputs,
        "crashes": crashes,
        "targets": results,
        "baseline_noop": {k: baseline[k] for k in ("inputs", "seconds", "inputs_per_s")},
        "crash_dir": args.crash_dir,
    }
    print(json.dumps(report))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
