"""``streamguard export onnx``: write a saved detector's ONNX graph and check it against torch."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DESCRIPTION = """\
Export a saved GNN or transformer to ONNX: DIR/model.onnx (collated tensors -> probability of
the vulnerable class, dynamic batch/length/node/edge axes) and DIR/onnx_export.json (opset,
versions, inputs, and max |p_onnx - p_torch| measured right after the export on the embedded
synthetic functions; above 1e-4 the export fails and nothing is written). A fusion model
exports each neural base under DIR/bases/<name>/. A baseline needs no export (numpy /
scikit-learn): it is reported and the command exits 0.

`streamguard scan` and `streamguard serve` then score with onnxruntime (use_onnx, on by
default) while model.onnx is newer than the model's files; otherwise they use torch.

  streamguard export onnx --model-dir runs/gnn/seed_42/model
  streamguard export onnx --registry runs/registry            # the production model
  streamguard export onnx --model-dir M --opset 18 --output /srv/models/gnn.onnx

Exit codes: 0 exported (or nothing to export), 1 the export failed, 2 a usage error.
"""


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``streamguard export`` (one format so far: ``onnx``)."""
    parser = subparsers.add_parser(
        "export", help="export a saved detector for other runtimes (onnx)",
        description="Export a saved detector for other runtimes.",
    )  # fmt: skip
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx", help="ONNX graph + parity record (onnxruntime scoring)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    model = onnx.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-dir", default=None, help="a saved detector directory")
    model.add_argument(
        "--registry", default=None, help="a model registry: export its production model"
    )
    onnx.add_argument(
        "--opset", type=int, default=None,
        help="ONNX opset (default: torch's; below 18 the exporter converts down and may fail)",
    )  # fmt: skip
    onnx.add_argument(
        "--output", default=None, metavar="FILE",
        help="the ONNX file (default DIR/model.onnx; onnx_export.json goes beside it; only "
        "DIR/model.onnx is picked up by load_detector)",
    )  # fmt: skip
    onnx.add_argument("--json", action="store_true", help="print the export records as JSON")
    onnx.set_defaults(func=cmd_export_onnx)
    return onnx


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """``streamguard export onnx``: 0 exported or nothing to export (errors raise DataError)."""
    from streamguard_core.export.onnx import export_model_dir
    from streamguard_core.scan.cli import resolve_model_dir

    model_dir = resolve_model_dir(args.model_dir, args.registry)
    outcomes = export_model_dir(model_dir, output=args.output, opset=args.opset)
    if args.json:
        print(json.dumps([o.model_dump(mode="json") for o in outcomes]))
        return 0
    for outcome in outcomes:
        info = outcome.info
        if info is None:
            print(f"{outcome.model_dir}: {outcome.note}", file=sys.stderr)
            continue
        parity = info.parity
        print(
            f"wrote {outcome.onnx_path} ({outcome.kind}, opset {info.opset}, "
            f"inputs {', '.join(info.inputs)}); max |p_onnx - p_torch| = "
            f"{parity.max_abs_diff:.2g} over {parity.functions} functions "
            f"(tolerance {parity.tolerance:g}), {info.export_seconds:.1f} s"
        )
    return 0
