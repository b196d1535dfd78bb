"""The ``streamguard`` command: drives the core without any orchestrator.

Exit codes: 0 success, 1 failure (bad data, missing input, tokenizer trouble), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streamguard_core import __version__

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input and splits")
    g.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="[SPLIT=]PATH",
        help="input file (repeatable); prefix with train=/valid=/test= to fix its split. "
        "Formats: Devign function.json, CodeXGLUE/Devign .jsonl, Juliet .jsonl, generic "
        ".jsonl/.csv, any of them .gz. No --input: the embedded synthetic data set.",
    )
    g.add_argument(
        "--format",
        default="auto",
        choices=["auto", "devign", "codexglue", "juliet", "jsonl", "csv", "hf"],
        help="input format ('hf' loads CodeXGLUE from the Hugging Face hub; needs network)",
    )
    g.add_argument("--codexglue-splits", metavar="DIR", help="dir with train/valid/test.txt")
    g.add_argument(
        "--split-strategy",
        default="auto",
        choices=["auto", "codexglue", "explicit", "random", "project", "group", "time"],
        help="auto: codexglue with --codexglue-splits, explicit with SPLIT= inputs, else random",
    )
    g.add_argument(
        "--split-ratios", nargs=3, type=float, default=(0.8, 0.1, 0.1), metavar=("TR", "VA", "TE")
    )
    g.add_argument("--seed", type=int, default=42, help="seed for splits and synthetic data")
    g.add_argument("--dedup", default="normalized", choices=["none", "exact", "normalized"])
    g.add_argument(
        "--juliet-text-field",
        default="func_anon",
        choices=["func_anon", "func"],
        help="Juliet text; 'func' leaks labels through names and comments",
    )
    g.add_argument("--func-field", default="func", help="generic JSONL/CSV: source field")
    g.add_argument("--label-field", default="target", help="generic JSONL/CSV: 0/1 label field")
    g.add_argument("--id-field", default=None, help="generic JSONL/CSV: record id field")
    g.add_argument("--max-records", type=int, default=None, help="read at most N per input")
    g.add_argument(
        "--synthetic-pairs-per-cwe", type=int, default=40, help="embedded synthetic data size"
    )


def _add_preprocess_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preprocessing")
    g.add_argument(
        "--tokenizer",
        default=None,
        help="HF tokenizer name or dir (e.g. microsoft/codebert-base); default: train a "
        "byte-level BPE on the train split",
    )
    g.add_argument("--vocab-size", type=int, default=8000, help="vocabulary of a trained BPE")
    g.add_argument("--max-seq-len", type=int, default=512, help="tokens incl. <s> and </s>")
    g.add_argument(
        "--trimming", default="vulnerability_aware", choices=["vulnerability_aware", "head"]
    )
    g.add_argument("--language", default="auto", choices=["auto", "c", "cpp"])
    g.add_argument("--max-func-chars", type=int, default=1_000_000, help="reject longer ones")
    g.add_argument("--max-nodes", type=int, default=20_000, help="cut larger AST graphs")
    g.add_argument("--workers", type=int, default=0, help="worker processes; 0 = all cores")
    g.add_argument(
        "--gnn-memory-budget-mb",
        type=float,
        default=2048.0,
        help="memory budget for the recommended GNN batch size",
    )
    g.add_argument("--quick-test", action="store_true", help="at most 300 records per input")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _configs(args: argparse.Namespace) -> tuple[Any, Any]:
    from streamguard_core.config import DataConfig, FieldMap, PreprocessConfig

    data = DataConfig(
        inputs=args.input,
        format=args.format,
        fields=FieldMap(func=args.func_field, label=args.label_field, id=args.id_field),
        juliet_text_field=args.juliet_text_field,
        codexglue_splits=args.codexglue_splits,
        split_strategy=args.split_strategy,
        split_ratios=tuple(args.split_ratios),
        seed=args.seed,
        dedup=args.dedup,
        synthetic_pairs_per_cwe=args.synthetic_pairs_per_cwe,
        max_records=args.max_records,
    )
    prep = PreprocessConfig(
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        max_seq_len=args.max_seq_len,
        trimming=args.trimming,
        language=args.language,
        max_func_chars=args.max_func_chars,
        max_nodes=args.max_nodes,
        workers=args.workers,
        gnn_memory_budget_mb=args.gnn_memory_budget_mb,
        quick_test=args.quick_test,
    )
    return data, prep


def _summary(meta: dict[str, Any], out_dir: Path) -> str:
    c, ast, trim = meta["counts"], meta["ast"], meta["trimming"]
    stats = meta["graph_stats"]["all"]
    lines = [
        f"processed data set: {out_dir}",
        f"  read {c['read']:,} = kept {c['kept']:,} + rejected {c['rejected']:,} "
        f"+ deduplicated {c['deduplicated']:,}",
        "  kept per split: " + ", ".join(f"{k} {v:,}" for k, v in c["kept_per_split"].items()),
        f"  split strategy: {meta['split_strategy']}",
        f"  AST success {ast['success_rate']:.1%} (clean {ast['clean_rate']:.1%}, "
        f"fallback graphs {ast['fallback']:,})",
        f"  trimmed {trim['trimmed']:,} functions to {trim['max_seq_len']} tokens",
        f"  graph nodes mean {stats.get('nodes_mean', 0)} p95 {stats.get('nodes_p95', 0)} "
        f"max {stats.get('nodes_max', 0)}; recommended GNN batch size "
        f"{meta['gnn_batch_size']['recommended_batch_size']}",
        f"  {meta['functions_per_s']:,} functions/s ({meta['timings']['total_s']} s, "
        f"{meta['workers']} workers)",
    ]
    if c["rejected"]:
        lines.append(
            f"  rejects by reason: {c['rejected_by_reason']} -> {out_dir / 'rejects.jsonl'}"
        )
    lines += [f"  warning: {w}" for w in meta["warnings"]]
    return "\n".join(lines)


def cmd_preprocess(args: argparse.Namespace) -> int:
    """streamguard data preprocess."""
    from streamguard_core.preprocess.run import preprocess

    data, prep = _configs(args)
    out_dir = Path(args.output_dir)
    meta = preprocess(data, prep, out_dir, show_progress=not args.no_progress)
    print(_summary(meta, out_dir))
    return EXIT_OK


def cmd_synthesize(args: argparse.Namespace) -> int:
    """streamguard data synthesize."""
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.io import write_jsonl

    cwes = args.cwes.split(",") if args.cwes else None
    records = generate_synthetic(pairs_per_cwe=args.pairs_per_cwe, seed=args.seed, cwes=cwes)
    n = write_jsonl(args.output, (r.to_dict() for r in records))
    print(f"wrote {n:,} synthetic functions to {args.output}")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    """streamguard data stats."""
    from streamguard_core.preprocess.dataset import load_metadata
    from streamguard_core.preprocess.run import recommend_batch_size

    meta = load_metadata(args.data_dir)
    stats = meta["graph_stats"]
    budget = args.memory_budget_mb or meta["gnn_batch_size"]["memory_budget_mb"]
    sizing = recommend_batch_size(
        stats["all"].get("nodes_p95", 0.0),
        stats["all"].get("edges_p95", 0.0),
        budget,
        args.hidden_dim,
        args.num_layers,
    )
    report = {
        "counts": meta["counts"],
        "ast": meta["ast"],
        "trimming": meta["trimming"],
        "graph_stats": stats,
        "gnn_batch_size": sizing,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"data set: {args.data_dir}")
        for split, s in stats.items():
            if s.get("graphs"):
                print(
                    f"  {split:5s} graphs {s['graphs']:>7,}  nodes mean {s['nodes_mean']:>8} "
                    f"p50 {s['nodes_p50']:>7} p95 {s['nodes_p95']:>7} max {s['nodes_max']:>6}  "
                    f"edges mean {s['edges_mean']:>8} p95 {s['edges_p95']:>7}"
                )
        print(
            f"  recommended GNN batch size {sizing['recommended_batch_size']} for "
            f"{budget:g} MB (hidden {args.hidden_dim}, {args.num_layers} layers)"
        )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """streamguard demo: the main job on the embedded synthetic data (no files, GPU or cloud)."""
    from streamguard_core.preprocess.run import preprocess

    args.input = []
    data, prep = _configs(args)
    out_dir = Path(args.output_dir)
    print(
        "[1/3] synthesize: embedded CWE-template generator "
        f"({args.synthetic_pairs_per_cwe} pairs per CWE, seed {args.seed})"
    )
    print("[2/3] preprocess: split, dedup, tree-sitter graphs, BPE tokens, trimming")
    meta = preprocess(data, prep, out_dir, show_progress=not args.no_progress)
    print("[3/3] stats")
    print(_summary(meta, out_dir))
    print(f"metadata: {out_dir / 'preprocessing_metadata.json'}")
    return EXIT_OK


def cmd_train_baseline(args: argparse.Namespace) -> int:
    """streamguard train baseline."""
    from streamguard_core.evaluation.metrics import classification_metrics
    from streamguard_core.io import atomic_write_json
    from streamguard_core.models.baseline import BaselineConfig, BaselineDetector
    from streamguard_core.models.registry import load_labelled

    train, _ = load_labelled(args.train_data)
    valid, _ = load_labelled(args.val_data)
    config = BaselineConfig(ngram_max=args.ngram_max, min_df=args.min_df, C=args.C, seed=args.seed)
    det = BaselineDetector(config)
    valid_metrics = det.fit(
        [r.func for r in train],
        [r.label for r in train],
        [r.func for r in valid],
        [r.label for r in valid],
    )
    out = Path(args.output_dir)
    results: dict[str, Any] = {"valid": valid_metrics}
    if args.test_data:
        test, _ = load_labelled(args.test_data)
        results["test"] = classification_metrics(
            [r.label for r in test], det.predict_proba([r.func for r in test]), det.threshold
        )
    det.save(out / "model", extra_card={"metrics": results})
    atomic_write_json(out / "metrics.json", results)
    atomic_write_json(
        out / "exp_config.json",
        {
            "model": config.model_dump(mode="json"),
            "train_data": args.train_data,
            "val_data": args.val_data,
            "test_data": args.test_data,
        },
    )
    for split, m in results.items():
        print(
            f"{split}: accuracy {m['accuracy']:.4f}  f1 {m['f1']:.4f}  roc_auc "
            f"{m['roc_auc'] if m['roc_auc'] is None else round(m['roc_auc'], 4)}  "
            f"(threshold {m['threshold']:.3f}, n={m['n']})"
        )
    print(f"model: {out / 'model'}")
    return EXIT_OK


def cmd_train_neural(args: argparse.Namespace) -> int:
    """streamguard train gnn|transformer."""
    from streamguard_core.data.loaders import DataError
    from streamguard_core.training.collapse import COLLAPSE_EXIT_CODE, CollapseError
    from streamguard_core.training.loop import TrainConfig
    from streamguard_core.training.run import RunExistsError, train_neural

    kind = args.model_kind
    if kind == "gnn":
        from streamguard_core.models.gnn import GNNConfig

        model_cfg: Any = GNNConfig(
            arch=args.arch, hidden_dim=args.hidden_dim, num_layers=args.num_layers,
            dropout=args.dropout,
        )  # fmt: skip
    else:
        from streamguard_core.models.transformer import TransformerConfig

        model_cfg = TransformerConfig(
            model_name_or_path=args.model, hidden_size=args.hidden_dim,
            num_layers=args.num_layers, dropout=args.dropout, max_seq_len=args.max_seq_len,
        )  # fmt: skip
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        accumulation_steps=args.accumulation_steps, mixed_precision=args.mixed_precision,
        early_stopping_patience=args.early_stopping_patience, use_weights=args.use_weights,
        seed=args.seed, checkpoint_every_steps=args.checkpoint_every_steps,
        max_steps_per_epoch=8 if args.quick_test else None, num_threads=args.num_threads,
        lr_finder=args.lr_finder, lr_finder_steps=args.lr_finder_steps,
        lr_cache_dir=args.lr_cache_dir, auto_batch_size=args.auto_batch_size,
        memory_budget_mb=args.memory_budget_mb,
    )  # fmt: skip
    try:
        data_dir = _training_data(args)
    except (DataError, ValueError) as exc:
        print(f"streamguard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        results = train_neural(kind, model_cfg, cfg, data_dir, args.output_dir, args.resume,
                               args.device)  # fmt: skip
    except CollapseError as exc:
        print(f"streamguard: training collapsed: {exc.event.reason}: {exc.event.detail}; "
              f"see {Path(args.output_dir) / 'collapse_report.json'}", file=sys.stderr)  # fmt: skip
        return COLLAPSE_EXIT_CODE
    except RunExistsError as exc:
        print(f"streamguard: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for split, m in results.items():
        print(f"{split}: accuracy {m['accuracy']:.4f}  f1 {m['f1']:.4f}  roc_auc {m['roc_auc']}")
    print(f"model: {Path(args.output_dir) / 'model'}")
    return EXIT_OK


def _training_data(args: argparse.Namespace) -> Path:
    """The processed data set to train on: --data, or --train/--val/--test-data resolved.

    Processed split directories (``DIR/train`` + ``DIR/valid``) resolve to their common parent;
    raw files are preprocessed (explicit splits) into ``OUTPUT/data`` unless that already holds
    the same files' processed set (a resumed run).
    """
    from streamguard_core.config import DataConfig, PreprocessConfig
    from streamguard_core.data.loaders import DataError
    from streamguard_core.preprocess.run import preprocess

    split_args = {"train": args.train_data, "valid": args.val_data, "test": args.test_data}
    if args.data:
        if args.train_data or args.val_data or args.test_data:
            raise ValueError("give either --data or --train-data/--val-data/--test-data, not both")
        return Path(args.data)
    if not (args.train_data and args.val_data):
        raise ValueError("give --data DIR, or --train-data and --val-data (and --test-data)")
    given = {k: Path(v) for k, v in split_args.items() if v}
    if all((p / "records.jsonl").exists() for p in given.values()):
        parents = {p.resolve().parent for p in given.values()}
        if len(parents) != 1 or any(p.name != k for k, p in given.items()):
            raise ValueError(
                "processed splits must be DIR/train, DIR/valid (and DIR/test) of one data set"
            )
        return parents.pop()
    for path in given.values():
        if not path.is_file():
            raise DataError(f"{path}: no such file (expected a raw input file or DIR/<split>)")
    out = Path(args.output_dir) / "data"
    inputs = [f"{split}={path}" for split, path in given.items()]
    meta_file = out / "preprocessing_metadata.json"
    if (
        meta_file.exists()
        and json.loads(meta_file.read_text())["config"]["data"]["inputs"] == inputs
    ):
        print(f"using the processed data already in {out}")
        return out
    print(f"preprocessing {', '.join(inputs)} -> {out}")
    preprocess(
        DataConfig(inputs=inputs, split_strategy="explicit"),
        PreprocessConfig(max_seq_len=args.max_seq_len if args.model_kind == "transformer" else 512),
        out,
        show_progress=True,
    )
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    """streamguard evaluate."""
    from streamguard_core.evaluation.metrics import classification_metrics
    from streamguard_core.io import atomic_write_json, write_jsonl
    from streamguard_core.models.registry import load_detector, load_labelled

    det = load_detector(args.model_dir)
    records, rejects = load_labelled(args.data)
    probs = det.predict_proba([r.func for r in records])
    threshold = det.threshold if args.threshold is None else args.threshold
    metrics = classification_metrics([r.label for r in records], probs, threshold)
    metrics["rejected_records"] = len(rejects)
    metrics["data"] = str(args.data)
    if args.output:
        atomic_write_json(args.output, metrics)
    if args.predictions:
        write_jsonl(
            args.predictions,
            (
                {
                    "id": r.id,
                    "label": r.label,
                    "probability": float(p),
                    "prediction": int(p >= threshold),
                }
                for r, p in zip(records, probs, strict=True)
            ),
        )
    print(json.dumps({k: v for k, v in metrics.items() if k != "confusion_matrix"}, indent=2))
    return EXIT_OK


def cmd_preflight(args: argparse.Namespace) -> int:
    """streamguard preflight: go/no-go checks before a long training run (exit 0 go, 1 no-go)."""
    from streamguard_core.training.preflight import run_preflight

    hidden: dict[str, int] = {}
    for part in (args.hidden_dim or "").split(","):
        kind, _, value = part.strip().rpartition("=")
        if value:
            for k in [kind.strip()] if kind else ["gnn", "transformer"]:
                hidden[k] = int(value)
    try:
        report = run_preflight(
            args.data, [m.strip() for m in args.models.split(",") if m.strip()],
            batch_size=args.batch_size, max_seq_len=args.max_seq_len, hidden_dims=hidden,
            device=args.device, lr_cache_dir=args.lr_cache_dir, output=args.output,
            overfit_steps=args.overfit_steps, memory_capacity_mb=args.memory_capacity_mb,
            seed=args.seed, num_threads=args.num_threads, echo=print,
        )  # fmt: skip
    except OSError as exc:
        print(f"streamguard: error: cannot write the preflight report: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"report: {args.output}")
    print("GO" if report["go"] else "NO-GO")
    return EXIT_OK if report["go"] else EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render --help in the README)."""
    parser = argparse.ArgumentParser(
        prog="streamguard",
        description="StreamGuard: train and run function-level vulnerability detectors for "
        "C/C++.\n\nExit codes: 0 ok, 1 failure (bad data, missing input), 2 usage error, "
        "3 training collapsed.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"streamguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser(
        "data", help="ingest, synthesize, preprocess and inspect data", formatter_class=_Formatter
    )
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    pre = dsub.add_parser(
        "preprocess",
        help="raw functions -> processed data set (tokens, graphs, splits, metadata)",
        description="Read inputs, reject bad records (rejects.jsonl), split, deduplicate "
        "(leakage_report.json), parse with tree-sitter into AST graphs, encode with a fast "
        "tokenizer (offsets kept), trim long functions around risky constructs, and write a "
        "self-describing data set with preprocessing_metadata.json.",
        formatter_class=_Formatter,
    )
    pre.add_argument("--output-dir", required=True, help="where the processed data set goes")
    _add_data_args(pre)
    _add_preprocess_args(pre)
    pre.set_defaults(func=cmd_preprocess)

    syn = dsub.add_parser(
        "synthesize",
        help="write the seeded synthetic CWE data set as JSONL",
        formatter_class=_Formatter,
    )
    syn.add_argument("--output", required=True, help="output .jsonl (or .jsonl.gz)")
    syn.add_argument("--pairs-per-cwe", type=int, default=40)
    syn.add_argument("--seed", type=int, default=42)
    syn.add_argument("--cwes", default=None, help="comma-separated subset, e.g. CWE-121,CWE-416")
    syn.set_defaults(func=cmd_synthesize)

    st = dsub.add_parser(
        "stats",
        help="graph statistics and a GNN batch size for a memory budget",
        formatter_class=_Formatter,
    )
    st.add_argument("data_dir", help="a processed data set directory")
    st.add_argument("--memory-budget-mb", type=float, default=None, help="default: as processed")
    st.add_argument("--hidden-dim", type=int, default=256)
    st.add_argument("--num-layers", type=int, default=4)
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_stats)

    train = sub.add_parser("train", help="train a detector", formatter_class=_Formatter)
    tsub = train.add_subparsers(dest="model_kind", metavar="KIND", required=True)
    base = tsub.add_parser(
        "baseline",
        help="TF-IDF (code token n-grams) + logistic regression, the bar every model must clear",
        description="Fit on --train-data, tune the decision threshold for vulnerable-class F1 on "
        "--val-data, score --test-data. Data: a processed split directory (DIR/train) or any raw "
        "input file (Devign/CodeXGLUE/Juliet/JSONL/CSV, .gz ok). Writes OUTPUT/model/ "
        "(model_card.json, vocabulary.json, weights.npz; no pickle), metrics.json, "
        "exp_config.json. (The transformer and GNN kinds arrive with the training engine.)",
        formatter_class=_Formatter,
    )
    base.add_argument("--train-data", required=True)
    base.add_argument("--val-data", required=True)
    base.add_argument("--test-data", default=None)
    base.add_argument("--output-dir", required=True)
    base.add_argument("--ngram-max", type=int, default=2)
    base.add_argument("--min-df", type=int, default=2)
    base.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    base.add_argument("--seed", type=int, default=42)
    base.set_defaults(func=cmd_train_baseline)

    for kind, help_text in (
        ("gnn", "4-layer GCN (or GGNN) over the AST graphs of a processed data set"),
        ("transformer", "RoBERTa classifier: 'tiny' from scratch (offline) or a HF name/dir"),
    ):
        p = tsub.add_parser(
            kind,
            help=help_text,
            description=f"{help_text}. --data is a directory written by `streamguard data "
            "preprocess`. Writes OUTPUT/{exp_config.json, training_metadata.json, training.log, "
            "checkpoints/{latest,best,epoch_<k>}, model/, metrics.json, predictions.jsonl}; "
            "collapse_report.json and exit code 3 when the run collapses.",
            formatter_class=_Formatter,
        )
        src = p.add_argument_group(
            "data (either --data, or --train-data and --val-data)",
            "Raw files (Devign/CodeXGLUE/Juliet/JSONL/CSV, .gz ok) are preprocessed with "
            "their split given by the flag into OUTPUT/data first (BPE trained on the train "
            "file, --max-seq-len tokens); processed split directories (DIR/train) are used as is.",
        )
        src.add_argument("--data", default=None, help="processed data set directory")
        src.add_argument("--train-data", default=None, help="raw train file or DIR/train")
        src.add_argument("--val-data", default=None, help="raw validation file or DIR/valid")
        src.add_argument("--test-data", default=None, help="raw test file or DIR/test (optional)")
        p.add_argument("--output-dir", required=True)
        p.add_argument("--epochs", type=int, default=10)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--lr", type=float, default=None, help="default: 2.5e-5 / 5e-4 by kind")
        p.add_argument("--lr-finder", action="store_true", help="without --lr: LR range test")
        p.add_argument("--lr-finder-steps", type=int, default=100)
        p.add_argument("--lr-cache-dir", default="~/.cache/streamguard/lr")
        p.add_argument(
            "--auto-batch-size",
            action="store_true",
            help="GNN: from graph statistics; transformer: CUDA probe",
        )
        p.add_argument(
            "--memory-budget-mb",
            type=float,
            default=None,
            help="for --auto-batch-size (default: 80%% of GPU memory, else 2048)",
        )
        p.add_argument("--weight-decay", type=float, default=0.01)
        p.add_argument("--warmup-ratio", type=float, default=0.1)
        p.add_argument("--accumulation-steps", type=int, default=1)
        p.add_argument("--mixed-precision", default="auto", choices=["auto", "off", "fp16", "bf16"])
        p.add_argument("--early-stopping-patience", type=int, default=3)
        p.add_argument("--use-weights", action="store_true", help="per-record loss weights")
        p.add_argument("--dropout", type=float, default=0.3 if kind == "gnn" else 0.1)
        p.add_argument("--hidden-dim", type=int, default=256 if kind == "gnn" else 128)
        p.add_argument("--num-layers", type=int, default=4 if kind == "gnn" else 2)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--checkpoint-every-steps", type=int, default=50)
        p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
        p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: best)")
        p.add_argument("--quick-test", action="store_true", help="8 steps an epoch")
        p.add_argument("--resume", action="store_true", help="continue from checkpoints/latest")
        if kind == "gnn":
            p.add_argument("--arch", default="gcn", choices=["gcn", "ggnn"])
        else:
            p.add_argument("--model", default="tiny", help="tiny, a HF name or a local dir")
            p.add_argument("--max-seq-len", type=int, default=512)
        p.set_defaults(func=cmd_train_neural)

    ev = sub.add_parser(
        "evaluate",
        help="score a saved model on any labelled data set",
        description="Load a model directory (by its model_card.json kind) and score it on a "
        "processed split directory or a raw Devign/Juliet/JSONL file.",
        formatter_class=_Formatter,
    )
    ev.add_argument("--model-dir", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--output", default=None, help="write metrics JSON here")
    ev.add_argument("--predictions", default=None, help="write per-function probabilities here")
    ev.add_argument("--threshold", type=float, default=None, help="default: the model's own")
    ev.set_defaults(func=cmd_evaluate)

    pf = sub.add_parser(
        "preflight",
        help="go/no-go checks before a long training run",
        description="Check the device, the processed data set, that each model can overfit 32 "
        "training examples, that a batch of the largest examples fits in memory, that the LR "
        "cache is writable and that there is disk space. Writes --output (JSON) and prints one "
        "line per check, then GO or NO-GO. Exit code 0 go, 1 no-go (warnings do not block).",
        formatter_class=_Formatter,
    )
    pf.add_argument("--data", required=True, help="processed data set directory")
    pf.add_argument("--models", default="gnn,transformer,baseline", help="kinds to check")
    pf.add_argument("--batch-size", type=int, default=32, help="planned batch size (memory test)")
    pf.add_argument("--max-seq-len", type=int, default=512, help="transformer position limit")
    pf.add_argument(
        "--hidden-dim", default=None, metavar="N|KIND=N,...",
        help="hidden size of both neural kinds, or per kind (gnn=64,transformer=32); "
        "default: gnn 256, transformer 128",
    )  # fmt: skip
    pf.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    pf.add_argument("--lr-cache-dir", default="~/.cache/streamguard/lr", help="LR finder cache")
    pf.add_argument("--output", default="preflight_report.json", help="report path")
    pf.add_argument("--overfit-steps", type=int, default=60, help="most smoke-test steps")
    pf.add_argument(
        "--memory-capacity-mb", type=float, default=None,
        help="memory capacity override (default: GPU total memory, else available RAM)",
    )  # fmt: skip
    pf.add_argument("--seed", type=int, default=42)
    pf.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    pf.set_defaults(func=cmd_preflight)

    from streamguard_core.aws.cost import add_cost_parser

    add_cost_parser(sub)

    demo = sub.add_parser(
        "demo",
        help="the data stages on the embedded synthetic data, without Prefect: synthesize -> "
        "preprocess -> stats (the main job is `make demo`: the Prefect pipeline)",
        formatter_class=_Formatter,
    )
    demo.add_argument("--output-dir", default="runs/demo", help="where outputs go")
    _add_data_args(demo)
    _add_preprocess_args(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from pydantic import ValidationError

    from streamguard_core.data.loaders import DataError
    from streamguard_core.preprocess.tokens import TokenizerError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        print(f"streamguard: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, TokenizerError, FileNotFoundError, ValueError) as exc:
        print(f"streamguard: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("streamguard: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
