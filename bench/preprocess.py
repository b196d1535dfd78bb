"""Preprocessing throughput vs the bare limit, printed as one JSON line.

Full: ``streamguard_core.preprocess.run.preprocess`` end to end (read, validate, split, BPE
training, parse + graph + encode + trim, dedup, write) on a Devign file.
Bare: the same functions, same cores and chunks, doing only a tree-sitter parse, a cursor walk
over every node, and a fast-tokenizer encode with offsets (the tokenizer the full run trained).

    python bench/preprocess.py [--input ../shared/data/devign_train.jsonl.gz] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_BARE: dict = {}


def _bare_init(tokenizer_json: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import tree_sitter
    import tree_sitter_c
    from tokenizers import Tokenizer

    _BARE["parser"] = tree_sitter.Parser(tree_sitter.Language(tree_sitter_c.language()))
    _BARE["tokenizer"] = Tokenizer.from_file(tokenizer_json)


def _bare_chunk(funcs: list[str]) -> int:
    parser, tokenizer = _BARE["parser"], _BARE["tokenizer"]
    nodes = 0
    for func in funcs:
        cursor = parser.parse(func.encode("utf-8", "surrogatepass")).walk()
        while True:
            _ = cursor.node.kind_id
            nodes += 1
            if cursor.goto_first_child():
                continue
            while not cursor.goto_next_sibling():
                if not cursor.goto_parent():
                    break
            else:
                continue
            break
    for enc in tokenizer.encode_batch(funcs, add_special_tokens=False):
        _ = enc.ids, enc.offsets
    return nodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--input", default=str(REPO.parent / "shared/data/devign_train.jsonl.gz"))
    ap.add_argument("--workers", type=int, default=0, help="0 = all cores")
    args = ap.parse_args()

    from streamguard_core.config import DataConfig, PreprocessConfig
    from streamguard_core.data.loaders import iter_records
    from streamguard_core.preprocess.run import preprocess

    workers = args.workers or os.cpu_count() or 1
    cfg = PreprocessConfig(workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        meta = preprocess(
            DataConfig(inputs=[args.input], split_strategy="random"), cfg, tmp, show_progress=False
        )
        full_s = time.perf_counter() - t0
        n = meta["counts"]["read"]

        funcs = [r.func for r in iter_records(args.input) if hasattr(r, "func")]
        chunks = [funcs[i : i + cfg.chunk_size] for i in range(0, len(funcs), cfg.chunk_size)]
        tokenizer_json = str(Path(tmp) / "tokenizer" / "tokenizer.json")
        t0 = time.perf_counter()
        with ProcessPoolExecutor(
            workers,
            mp_context=get_context("spawn"),
            initializer=_bare_init,
            initargs=(tokenizer_json,),
        ) as pool:
            nodes = sum(pool.map(_bare_chunk, chunks))
        bare_s = time.perf_counter() - t0

    full_fps, bare_fps = n / full_s, len(funcs) / bare_s
    print(
        json.dumps(
            {
                "bench": "preprocess",
                "input": os.path.basename(args.input),
                "functions": n,
                "workers": workers,
                "functions_per_s": round(full_fps, 1),
                "full_wall_s": round(full_s, 2),
                "bare_functions_per_s": round(bare_fps, 1),
                "bare_wall_s": round(bare_s, 2),
                "ratio_to_bare": round(full_fps / bare_fps, 3),
                "bare_nodes_visited": nodes,
                "stage_timings_s": meta["timings"],
                "ast_success_rate": meta["ast"]["success_rate"],
                "targets": {"functions_per_s": 900, "ratio_to_bare": 0.7},
            }
        )
    )


if __name__ == "__main__":
    main()
