"""The ``streamguard`` command: drives the core without any orchestrator.

Every setting flag is generated from a field of the configuration tree
(:mod:`streamguard_core.config`): ``--field-name``, the field's description as its help, its
``Literal`` values as choices, ``--x/--no-x`` for a bool. Flags default to
``argparse.SUPPRESS``, so only the flags given reach the config and the pydantic model stays
the one holder of every default (the help shows it, read from the field).

Exit codes: 0 success, 1 failure (bad data, missing input, failed run, a run that exists
without --resume), 2 usage error or invalid configuration, 3 training collapsed.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from streamguard_core import __version__
from streamguard_core.config import (
    MODEL_KINDS,
    DataConfig,
    FieldMap,
    GNNConfig,
    PipelineConfig,
    PreprocessConfig,
    TrainConfig,
    TrainingPlan,
    TrainJobSpec,
    load_yaml,
    model_config_for,
)
from streamguard_core.preprocess.dataset import METADATA_FILE, DatasetMetadata
from streamguard_core.training.collapse import COLLAPSE_EXIT_CODE
from streamguard_core.training.paths import RunPaths

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
QUICK_TEST_STEPS = 8
"""``train --quick-test``: optimizer steps per epoch (``train.max_steps_per_epoch``)."""
NONE_WORDS = ("none", "null", "")
"""What clears an optional setting on the command line (``--tokenizer none``)."""
DEMO_EXCLUDED = ("inputs", "format", "codexglue_splits", "juliet_text_field", "max_records")
"""DataConfig fields that mean nothing for the demo (it always uses the synthetic data set)."""


class UsageError(ValueError):
    """The command line does not describe a job (exit code 2)."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows a hand-written flag's default unless it is None or False (noise)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The subcommands of ``parser`` (its ``add_subparsers`` action), to add another one to.

    Raises:
        ValueError: ``parser`` has no subcommands.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise ValueError(f"{parser.prog}: has no subcommands")


# --------------------------------------------------------------------------- config flags


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def _field_flag(name: str) -> str:
    """``hidden_dim`` -> ``--hidden-dim``."""
    return f"--{_dashed(name)}"


def _fieldmap_flag(name: str) -> str:
    """A :class:`FieldMap` entry: ``weight`` -> ``--weight-field``."""
    return f"--{_dashed(name)}-field"


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A converter that also accepts 'none' for an optional setting."""

    def parse(text: str) -> Any:
        return None if text.strip().lower() in NONE_WORDS else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors
    return parse


def _show_default(value: Any) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _flag_kwargs(name: str, field: FieldInfo) -> dict[str, Any] | None:
    """argparse keywords for one field, from its annotation; None for a nested model.

    Raises:
        TypeError: a field type the generator does not know (add it here, not a hand flag).
    """
    annotation = field.annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) != 1 or len(get_args(annotation)) != 2:
            raise TypeError(f"{name}: cannot make a flag for {annotation}")
        annotation, optional = members[0], True
    origin = get_origin(annotation)

    def wrap(convert: Any) -> Callable[[str], Any]:
        return _or_none(convert) if optional else convert

    metavar = name.upper()
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        values = list(get_args(annotation))
        return {"type": wrap(type(values[0])), "choices": values + [None] * optional}
    if origin is tuple:
        items = get_args(annotation)
        if Ellipsis in items or len(set(items)) != 1:
            raise TypeError(f"{name}: cannot make a flag for {annotation}")
        return {"type": wrap(items[0]), "nargs": len(items), "metavar": metavar}
    if origin is list:
        (item,) = get_args(annotation)
        return {"type": item, "nargs": "+", "action": "extend", "metavar": metavar}
    if annotation in (int, float, str):
        return {"type": wrap(annotation), "metavar": metavar}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return None
    raise TypeError(f"{name}: cannot make a flag for {annotation}")


def _field_help(field: FieldInfo, optional: bool) -> str:
    """The field's description, its default (read from the model) and how to clear it."""
    text = (field.description or "").strip()
    default = field.get_default(call_default_factory=True)
    if default is not PydanticUndefined:
        text += f" (default: {_show_default(default)})"
    if optional:
        text += " ['none' clears it]"
    return text.replace("%", "%%")


def add_config_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    section: str,
    *,
    include: Collection[str] | None = None,
    exclude: Collection[str] = (),
    flag: Callable[[str], str] = _field_flag,
    names: dict[str, str] | None = None,
) -> None:
    """One flag per field of ``model``, stored as ``<section>.<field>`` (read back with
    :func:`config_values`); nested models are skipped (give them their own section).

    Args:
        include: only these fields (default: all).
        exclude: not these fields.
        flag: the flag spelling of a field name.
        names: flag spellings that differ from ``flag``'s (``{"inputs": "--input"}``).
    """
    for name, field in model.model_fields.items():
        if (include is not None and name not in include) or name in exclude:
            continue
        kwargs = _flag_kwargs(name, field)
        if kwargs is None:
            continue
        optional = get_origin(field.annotation) in (Union, types.UnionType)
        parser.add_argument(
            (names or {}).get(name) or flag(name),
            dest=f"{section}.{name}",
            default=argparse.SUPPRESS,
            help=_field_help(field, optional and kwargs.get("action") != "extend"),
            **kwargs,
        )


def config_values(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The fields of ``section`` given on the command line (``{field: value}``)."""
    prefix = f"{section}."
    return {k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix)}


def _validation_message(exc: ValidationError) -> str:
    """One line per invalid field, named by its path in the config (``train.epochs``)."""
    lines = [f"streamguard: invalid configuration ({exc.title}):"]
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        given = err.get("input")
        shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
        lines.append(f"  {where}: {err['msg']}{shown}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- data commands


def _add_data_args(p: argparse.ArgumentParser, demo: bool = False) -> None:
    g = p.add_argument_group(
        "input and splits (DataConfig)",
        "Formats: Devign function.json, CodeXGLUE/Devign .jsonl, Juliet .jsonl, generic "
        ".jsonl/.csv, any of them .gz.",
    )
    add_config_flags(g, DataConfig, "data", exclude=DEMO_EXCLUDED if demo else (),
                     names={"inputs": "--input"})  # fmt: skip
    if not demo:
        add_config_flags(
            p.add_argument_group("fields of a generic JSONL/CSV file (FieldMap)"),
            FieldMap, "fields", flag=_fieldmap_flag,
        )  # fmt: skip


def _add_preprocess_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preprocessing (PreprocessConfig)")
    add_config_flags(g, PreprocessConfig, "prep")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def preprocess_configs(args: argparse.Namespace) -> tuple[DataConfig, PreprocessConfig]:
    """The data and preprocessing configs of a ``data preprocess``/``demo`` command line."""
    data = DataConfig.model_validate(
        {**config_values(args, "data"), "fields": config_values(args, "fields")}
    )
    return data, PreprocessConfig.model_validate(config_values(args, "prep"))


def _summary(meta: DatasetMetadata, out_dir: Path) -> str:
    c, ast = meta.counts, meta.ast
    stats = meta.graph_stats.get("all", {})
    lines = [
        f"processed data set: {out_dir}",
        f"  read {c.read:,} = kept {c.kept:,} + rejected {c.rejected:,} "
        f"+ deduplicated {c.deduplicated:,}",
        "  kept per split: " + ", ".join(f"{k} {v:,}" for k, v in c.kept_per_split.items()),
        f"  split strategy: {meta.split_strategy}",
        f"  AST success {ast['success_rate']:.1%} (clean {ast['clean_rate']:.1%}, "
        f"fallback graphs {ast['fallback']:,})",
        f"  trimmed {meta.trimming['trimmed']:,} functions to "
        f"{meta.config.preprocess.max_seq_len} tokens",
        f"  graph nodes mean {stats.get('nodes_mean', 0)} p95 {stats.get('nodes_p95', 0)} "
        f"max {stats.get('nodes_max', 0)}; recommended GNN batch size "
        f"{meta.gnn_batch_size.get('recommended_batch_size')}",
        f"  {meta.functions_per_s or 0:,} functions/s ({meta.timings.get('total_s')} s, "
        f"{meta.workers} workers)",
    ]
    if c.rejected:
        lines.append(f"  rejects by reason: {c.rejected_by_reason} -> {out_dir / 'rejects.jsonl'}")
    lines += [f"  warning: {w}" for w in meta.warnings]
    return "\n".join(lines)


def _preprocess(data: DataConfig, prep: PreprocessConfig, out_dir: Path, progress: bool
                ) -> DatasetMetadata:  # fmt: skip
    """Run the preprocessing and read back the typed metadata it wrote."""
    from streamguard_core.preprocess.dataset import ProcessedDataset
    from streamguard_core.preprocess.run import preprocess

    preprocess(data, prep, out_dir, show_progress=progress)
    return ProcessedDataset(out_dir).metadata


def cmd_preprocess(args: argparse.Namespace) -> int:
    """streamguard data preprocess."""
    data, prep = preprocess_configs(args)
    out_dir = Path(args.output_dir)
    print(_summary(_preprocess(data, prep, out_dir, not args.no_progress), out_dir))
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
    from streamguard_core.preprocess.dataset import ProcessedDataset
    from streamguard_core.preprocess.run import recommend_batch_size

    meta = ProcessedDataset(args.data_dir).metadata
    gnn = GNNConfig.model_validate(config_values(args, "gnn"))
    stats = meta.graph_stats
    budget = args.memory_budget_mb or meta.config.preprocess.gnn_memory_budget_mb
    sizing = recommend_batch_size(
        stats["all"].get("nodes_p95", 0.0), stats["all"].get("edges_p95", 0.0), budget,
        gnn.hidden_dim, gnn.num_layers,
    )  # fmt: skip
    report = {
        "counts": meta.counts.model_dump(mode="json"),
        "ast": meta.ast,
        "trimming": meta.trimming,
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
            f"{budget:g} MB (hidden {gnn.hidden_dim}, {gnn.num_layers} layers)"
        )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """streamguard demo: the data stages on the embedded synthetic data (no files, GPU or cloud)."""
    data, prep = preprocess_configs(args)
    out_dir = Path(args.output_dir)
    print(
        "[1/3] synthesize: embedded CWE-template generator "
        f"({data.synthetic_pairs_per_cwe} pairs per CWE, seed {data.seed})"
    )
    print("[2/3] preprocess: split, dedup, tree-sitter graphs, BPE tokens, trimming")
    meta = _preprocess(data, prep, out_dir, not args.no_progress)
    print("[3/3] stats")
    print(_summary(meta, out_dir))
    print(f"metadata: {out_dir / METADATA_FILE}")
    return EXIT_OK


# --------------------------------------------------------------------------- train


def _read_job_file(path: str | Path) -> dict[str, Any]:
    """A job file as a mapping: a complete :class:`TrainJobSpec` (an earlier run's
    ``exp_config.json`` too) goes through ``load_spec``; a template may lack the paths."""
    from streamguard_core.training.job import load_spec

    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"--config {path}: cannot read a job spec: {exc}") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a mapping (a TrainJobSpec), got {raw!r}")
    if "data_dir" in raw and "run_dir" in raw:
        return load_spec(path).model_dump(mode="json")
    return raw


def _with_train_kind(argv: list[str]) -> list[str]:
    """``train --config FILE [KIND] ...``: as ``train KIND --config FILE ...``, KIND defaulting
    to the file's model kind, so that the kind's flags apply."""
    if len(argv) < 2 or argv[0] != "train":
        return argv
    rest = argv[1:]
    if rest[0] == "--config" and len(rest) >= 2:
        config, tail = rest[1], rest[2:]
    elif rest[0].startswith("--config="):
        config, tail = rest[0].partition("=")[2], rest[1:]
    else:
        return argv
    if tail and tail[0] in MODEL_KINDS:
        return ["train", tail[0], "--config", config, *tail[1:]]
    kind = (_read_job_file(config).get("model") or {}).get("kind")
    return ["train", kind, "--config", config, *tail] if kind in MODEL_KINDS else argv


def _merged_model(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a model config mapping) updated with ``overrides`` (derived sizes stay empty
    in a config, so ``--hidden-size 64`` on an earlier run's spec gets the 64-wide shape)."""
    return {**base, **overrides}


def _data_source(args: argparse.Namespace, run_dir: str, file_data_dir: str | None
                 ) -> tuple[str, list[str] | None]:  # fmt: skip
    """The data set to train on and, for raw files, the inputs to preprocess into it.

    Processed split directories (``DIR/train`` + ``DIR/valid``) resolve to their common parent;
    raw files become ``RUN_DIR/data`` (their split given by the flag).
    """
    given = {split: Path(path) for split, path in
             (("train", args.train_data), ("valid", args.val_data), ("test", args.test_data))
             if path}  # fmt: skip
    if args.data:
        if given:
            raise UsageError("give either --data or --train-data/--val-data/--test-data, not both")
        return str(args.data), None
    if not given and file_data_dir:
        return file_data_dir, None
    if not (args.train_data and args.val_data):
        raise UsageError("give --data DIR, or --train-data and --val-data (and --test-data)")
    if all((p / "records.jsonl").exists() for p in given.values()):
        parents = {p.resolve().parent for p in given.values()}
        if len(parents) != 1 or any(p.name != k for k, p in given.items()):
            raise UsageError(
                "processed splits must be DIR/train, DIR/valid (and DIR/test) of one data set"
            )
        return str(parents.pop()), None
    for path in given.values():
        if not path.is_file():
            raise UsageError(f"{path}: no such file (expected a raw input file or DIR/<split>)")
    return str(Path(run_dir) / "data"), [f"{split}={path}" for split, path in given.items()]


def build_job(args: argparse.Namespace) -> tuple[TrainJobSpec, list[str] | None]:
    """The job a ``train`` command line describes: the ``--config`` file, then the flags.

    Returns:
        The validated spec and, when raw files were given, the inputs to preprocess into
        ``spec.data_dir`` first.

    Raises:
        UsageError: no model kind, output directory or data.
        ValidationError: the merged settings are invalid (the field is named).
    """
    kind = getattr(args, "model_kind", None)
    if kind is None:  # `train --config FILE` whose model kind is missing or unknown
        raise UsageError(
            f"give a model KIND ({', '.join(MODEL_KINDS)}), or a --config job file whose "
            "model.kind is one of them"
        )
    base = _read_job_file(args.config) if args.config else {}
    model = dict(base.get("model") or {})
    if model.get("kind", kind) != kind:
        raise UsageError(f"--config {args.config} holds a {model['kind']} model, not {kind}")
    model["kind"] = kind
    train_flags = config_values(args, "train")
    if args.quick_test:
        train_flags.setdefault("max_steps_per_epoch", QUICK_TEST_STEPS)
    run_dir = args.output_dir or base.get("run_dir")
    if not run_dir:
        raise UsageError("give --output-dir (or a --config job file with run_dir)")
    data_dir, inputs = _data_source(args, str(run_dir), base.get("data_dir"))
    fields: dict[str, Any] = {
        **base,
        "model": _merged_model(model, config_values(args, "model")),
        "train": {**(base.get("train") or {}), **train_flags},
        "data_dir": data_dir,
        "run_dir": str(run_dir),
        **config_values(args, "spec"),
    }
    return TrainJobSpec.model_validate(fields), inputs


def _preprocess_splits(inputs: list[str], spec: TrainJobSpec) -> None:
    """Preprocess raw split files into ``spec.data_dir`` unless it already holds them."""
    from streamguard_core.preprocess.dataset import ProcessedDataset

    # a transformer sized for N positions gets N-token sequences; all else: the defaults
    max_seq_len = getattr(spec.model, "max_seq_len", None)
    prep = PreprocessConfig(**({"max_seq_len": max_seq_len} if max_seq_len else {}))
    data = DataConfig(inputs=inputs, split_strategy="explicit")
    out = Path(spec.data_dir)
    if (out / METADATA_FILE).exists():
        built = ProcessedDataset(out).metadata.config
        if built.data == data and built.preprocess == prep:
            print(f"using the processed data already in {out}")
            return
    print(f"preprocessing {', '.join(inputs)} -> {out}")
    _preprocess(data, prep, out, progress=True)


def _print_metrics(paths: RunPaths) -> None:
    for split, m in json.loads(paths.metrics.read_text()).items():
        auc = m.get("roc_auc")
        print(
            f"{split}: accuracy {m['accuracy']:.4f}  f1 {m['f1']:.4f}  roc_auc "
            f"{'n/a' if auc is None else f'{auc:.4f}'}  (threshold {m['threshold']:.3f}, "
            f"n={m['n']})"
        )
    print(f"model: {paths.model}")


def cmd_train(args: argparse.Namespace) -> int:
    """streamguard train: build the job spec, then run it through ``run_job``."""
    spec, inputs = build_job(args)
    if args.print_config:
        print(spec.model_dump_json(indent=2))
        return EXIT_OK
    from streamguard_core.training.checkpoint import is_valid_checkpoint
    from streamguard_core.training.job import run_job

    paths = RunPaths(spec.run_dir)
    if not args.resume and is_valid_checkpoint(paths.latest):
        print(
            f"streamguard: error: {paths.root} already holds a run; pass --resume to continue "
            "it or choose a new --output-dir",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if inputs:
        _preprocess_splits(inputs, spec)
    status = run_job(spec, device=args.device)
    if status.status == "completed":
        _print_metrics(paths)
        return EXIT_OK
    if status.status == "collapsed":
        print(
            f"streamguard: training collapsed: {status.error}; see {paths.collapse_report}",
            file=sys.stderr,
        )
        return COLLAPSE_EXIT_CODE
    print(f"streamguard: error: training failed: {status.error} (log: {paths.log})",
          file=sys.stderr)  # fmt: skip
    return EXIT_FAILURE


def _add_job_args(p: argparse.ArgumentParser) -> None:
    """The flags that place one job: its file, data, output directory, seed, device."""
    spec_fields = TrainJobSpec.model_fields
    g = p.add_argument_group("job")
    g.add_argument(
        "--config", default=None, metavar="FILE",
        help="a TrainJobSpec (JSON or YAML; an earlier run's exp_config.json works); flags "
        "override it. data_dir/run_dir may be left out when --data/--output-dir are given.",
    )  # fmt: skip
    g.add_argument("--output-dir", default=None, help=spec_fields["run_dir"].description)
    add_config_flags(g, TrainJobSpec, "spec", include=("seed",))
    g.add_argument("--device", default=None, help="cuda, cuda:1, mps, cpu (default: the best)")
    g.add_argument("--resume", action="store_true", help="continue from checkpoints/latest")
    g.add_argument(
        "--quick-test", action="store_true",
        help=f"cut every epoch to {QUICK_TEST_STEPS} optimizer steps (train.max_steps_per_epoch)",
    )  # fmt: skip
    g.add_argument(
        "--print-config", action="store_true",
        help="print the job spec as JSON and exit (start a job file from flags)",
    )  # fmt: skip
    src = p.add_argument_group(
        "data (--data, or --train-data and --val-data)",
        "Raw files (Devign/CodeXGLUE/Juliet/JSONL/CSV, .gz ok) are preprocessed with their "
        "split given by the flag into OUTPUT/data first (PreprocessConfig defaults; a "
        "transformer's max_seq_len when set); processed split directories (DIR/train) are "
        "used as they are.",
    )
    src.add_argument("--data", default=None, help=spec_fields["data_dir"].description)
    src.add_argument("--train-data", default=None, help="raw train file or DIR/train")
    src.add_argument("--val-data", default=None, help="raw validation file or DIR/valid")
    src.add_argument("--test-data", default=None, help="raw test file or DIR/test (optional)")


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train a detector (one job: model x training settings x seed)",
        description="Train one model. `streamguard train KIND [flags]`, or `streamguard train "
        "--config job.yaml [flags]` (the kind comes from the file). Every model and training "
        "flag is a field of the kind's model config or of TrainConfig (see `train KIND "
        "--help`). Writes OUTPUT/{exp_config.json, run_status.json, training_metadata.json, "
        "training.log, checkpoints/, model/, metrics.json, predictions.jsonl}; "
        "collapse_report.json and exit code 3 when the run collapses.",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    train.add_argument("--config", default=None, metavar="FILE", help="a TrainJobSpec file")
    train.set_defaults(func=cmd_train, model_kind=None)
    kinds = train.add_subparsers(dest="model_kind", metavar="KIND")
    for kind in MODEL_KINDS:
        model_cls = type(model_config_for(kind))
        summary = (model_cls.__doc__ or kind).strip().splitlines()[0]
        p = kinds.add_parser(kind, help=summary, description=summary,
                             formatter_class=_Formatter, allow_abbrev=False)  # fmt: skip
        _add_job_args(p)
        add_config_flags(p.add_argument_group(f"model ({model_cls.__name__})"), model_cls,
                         "model", exclude=("kind",))  # fmt: skip
        # train.seed is the job's seed (--seed): TrainJobSpec copies it in
        add_config_flags(p.add_argument_group("training (TrainConfig)"), TrainConfig, "train",
                         exclude=("seed",))  # fmt: skip
        p.set_defaults(func=cmd_train)


# --------------------------------------------------------------------------- evaluate, preflight


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


def _chosen_models(plan: TrainingPlan, names: str) -> Iterator[Any]:
    """``--models``: each entry a run name of the plan, else a kind (the plan's models of
    that kind, or the kind's defaults when the plan has none)."""
    for token in (t.strip() for t in names.split(",")):
        if not token:
            continue
        if token in plan.names:
            yield plan.model(token)
            continue
        if token not in MODEL_KINDS:
            raise UsageError(
                f"--models: {token!r} is neither a model of the plan ({', '.join(plan.names)}) "
                f"nor a model kind ({', '.join(MODEL_KINDS)})"
            )
        of_kind = [m for m in plan.models if m.kind == token]
        if of_kind:
            yield from of_kind
        else:
            yield model_config_for(token)


def preflight_plan(args: argparse.Namespace) -> TrainingPlan:
    """The plan a ``preflight`` command line checks: a pipeline preset's plan, a plan file or
    the defaults, narrowed by --models and with --seeds and the training flags applied."""
    if args.config:
        plan = load_yaml(args.config, PipelineConfig).plan
    elif args.plan:
        plan = load_yaml(args.plan, TrainingPlan)
    else:
        plan = TrainingPlan()
    models = list(_chosen_models(plan, args.models)) if args.models else plan.models
    return TrainingPlan.model_validate({
        "models": models,
        "seeds": config_values(args, "plan").get("seeds", plan.seeds),
        "train": {**plan.train.model_dump(exclude_unset=True), **config_values(args, "train")},
    })  # fmt: skip


def cmd_preflight(args: argparse.Namespace) -> int:
    """streamguard preflight: go/no-go checks before a long training run (exit 0 go, 1 no-go)."""
    import inspect

    from streamguard_core.training.preflight import run_preflight

    plan = preflight_plan(args)
    options = config_values(args, "preflight")
    output = options.get("output", inspect.signature(run_preflight).parameters["output"].default)
    try:
        report = run_preflight(args.data, plan, device=args.device, echo=print, **options)
    except OSError as exc:
        print(f"streamguard: error: cannot write the preflight report: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"report: {output}")
    print("GO" if report["go"] else "NO-GO")
    return EXIT_OK if report["go"] else EXIT_FAILURE


def _add_preflight_parser(sub: argparse._SubParsersAction) -> None:
    pf = sub.add_parser(
        "preflight",
        help="go/no-go checks of exactly the planned models before a long training run",
        description="Check the device, the processed data set, that each planned model can "
        "overfit 32 training examples through the real fit() path, that a batch of the largest "
        "examples fits in memory, that the LR cache is writable and that there is disk space. "
        "The plan comes from --config (a pipeline preset), --plan (a TrainingPlan YAML) or the "
        "defaults; --models narrows it and the training flags override its train settings. "
        "Writes --output (JSON) and prints one line per check, then GO or NO-GO. Exit code 0 "
        "go, 1 no-go (warnings do not block).",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    pf.add_argument("--data", required=True, help="processed data set directory")
    source = pf.add_mutually_exclusive_group()
    source.add_argument("--config", default=None, metavar="FILE",
                        help="a PipelineConfig YAML (a preset): check its plan")  # fmt: skip
    source.add_argument("--plan", default=None, metavar="FILE", help="a TrainingPlan YAML")
    pf.add_argument(
        "--models", default=None, metavar="NAME|KIND,...",
        help="check only these models: run names of the plan, or kinds (a kind the plan lacks "
        "gets its defaults)",
    )  # fmt: skip
    add_config_flags(pf, TrainingPlan, "plan", include=("seeds",))
    pf.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    g = pf.add_argument_group("checks (default: run_preflight's)")
    g.add_argument("--output", dest="preflight.output", default=argparse.SUPPRESS,
                   help="report path")  # fmt: skip
    g.add_argument("--overfit-steps", dest="preflight.overfit_steps", type=int,
                   default=argparse.SUPPRESS, help="most smoke-test steps per model")  # fmt: skip
    g.add_argument(
        "--memory-capacity-mb", dest="preflight.memory_capacity_mb", type=float,
        default=argparse.SUPPRESS,
        help="memory capacity override (default: GPU total memory, else available RAM)",
    )  # fmt: skip
    add_config_flags(pf.add_argument_group("training (TrainConfig) overrides of the plan"),
                     TrainConfig, "train", exclude=("seed",))  # fmt: skip
    pf.set_defaults(func=cmd_preflight)


# --------------------------------------------------------------------------- parser, main


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render --help in the README)."""
    parser = argparse.ArgumentParser(
        prog="streamguard",
        description="StreamGuard: train and run function-level vulnerability detectors for "
        "C/C++.\n\nExit codes: 0 ok, 1 failure (bad data, missing input, failed run), 2 usage "
        "error or invalid configuration, 3 training collapsed.",
        formatter_class=_Formatter,
        allow_abbrev=False,
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
        allow_abbrev=False,
    )
    pre.add_argument("--output-dir", required=True, help="where the processed data set goes")
    _add_data_args(pre)
    _add_preprocess_args(pre)
    pre.set_defaults(func=cmd_preprocess)

    data_fields = DataConfig.model_fields
    syn = dsub.add_parser(
        "synthesize",
        help="write the seeded synthetic CWE data set as JSONL",
        formatter_class=_Formatter,
    )
    syn.add_argument("--output", required=True, help="output .jsonl (or .jsonl.gz)")
    syn.add_argument("--pairs-per-cwe", type=int,
                     default=data_fields["synthetic_pairs_per_cwe"].default)  # fmt: skip
    syn.add_argument("--seed", type=int, default=data_fields["seed"].default)
    syn.add_argument("--cwes", default=None, help="comma-separated subset, e.g. CWE-121,CWE-416")
    syn.set_defaults(func=cmd_synthesize)

    st = dsub.add_parser(
        "stats",
        help="graph statistics and a GNN batch size for a memory budget",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    st.add_argument("data_dir", help="a processed data set directory")
    st.add_argument("--memory-budget-mb", type=float, default=None,
                    help="default: the data set's gnn_memory_budget_mb")  # fmt: skip
    add_config_flags(st, GNNConfig, "gnn", include=("hidden_dim", "num_layers"))
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_stats)

    _add_train_parser(sub)

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

    _add_preflight_parser(sub)

    from streamguard_core.aws.cost import add_cost_parser

    aws = add_cost_parser(sub)

    from streamguard_core.evaluation.compare import add_compare_parser

    add_compare_parser(sub)

    from streamguard_core.collect.cli import add_collect_parser

    add_collect_parser(sub)

    from streamguard_core.scan.cli import add_scan_parser

    add_scan_parser(sub)

    from streamguard_core.export.cli import add_export_parser

    add_export_parser(sub)

    from streamguard_core.explain.measure import add_explain_eval_parser

    add_explain_eval_parser(sub)

    from streamguard_core.aws.deploy import add_deploy_parsers
    from streamguard_core.aws.logs import add_logs_parser
    from streamguard_core.aws.setup import add_setup_parser
    from streamguard_core.serve.cli import add_serve_parser

    add_serve_parser(sub)
    add_deploy_parsers(aws)
    add_setup_parser(aws)
    add_logs_parser(aws)

    demo = sub.add_parser(
        "demo",
        help="the data stages on the embedded synthetic data, without Prefect: synthesize -> "
        "preprocess -> stats (the main job is `make demo`: the Prefect pipeline)",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    demo.add_argument("--output-dir", default="runs/demo", help="where outputs go")
    _add_data_args(demo, demo=True)
    _add_preprocess_args(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from streamguard_core.data.loaders import DataError
    from streamguard_core.preprocess.tokens import TokenizerError
    from streamguard_core.redact import redact_text  # errors echo paths and URLs: no secrets

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(_with_train_kind(argv))
        return int(args.func(args))
    except ValidationError as exc:
        print(redact_text(_validation_message(exc)), file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(redact_text(f"streamguard: error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    # DataError covers ModelDirError: a model directory at fault, named in one line. OSError:
    # a file that cannot be read or written (permissions, a directory given for a file ...)
    except (DataError, TokenizerError, OSError, ValueError) as exc:
        print(redact_text(f"streamguard: error: {exc}"), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("streamguard: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
