"""``streamguard-data-prep``: synthesize or ingest -> preprocess -> publish the summary.

Run it with the embedded, ephemeral Prefect::

    python -m flows.data_prep                      # synthetic default data
    python -m flows.data_prep --input ../shared/data/juliet_functions.jsonl.gz
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow

from streamguard_core.config import DataConfig, PreprocessConfig
from tasks.data import preprocess_task, publish_data_summary


@flow(name="streamguard-data-prep", log_prints=True)
def data_prep(
    data: DataConfig | None = None,
    preprocessing: PreprocessConfig | None = None,
    output_dir: str = "runs/data",
) -> dict[str, Any]:
    """Preprocess the configured inputs (default: the embedded synthetic data set)."""
    summary = preprocess_task(data or DataConfig(), preprocessing or PreprocessConfig(), output_dir)
    publish_data_summary(summary)
    c = summary["counts"]
    print(
        f"kept {c['kept']:,} of {c['read']:,} functions "
        f"(rejected {c['rejected']:,}, deduplicated {c['deduplicated']:,}) -> {output_dir}"
    )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", action="append", default=[], help="[SPLIT=]PATH, repeatable")
    parser.add_argument("--output-dir", default="runs/data")
    parser.add_argument("--quick-test", action="store_true")
    args = parser.parse_args()
    data_prep(
        DataConfig(inputs=args.input),
        PreprocessConfig(quick_test=args.quick_test),
        args.output_dir,
    )
