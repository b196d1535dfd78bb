"""Data tasks: preprocessing, and publishing its summary to the Prefect UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.preprocess.dataset import ProcessedDataset
from streamguard_core.preprocess.run import preprocess
from tasks.caching import PREPROCESS_CACHE


@task(
    name="preprocess",
    task_run_name="preprocess -> {output_dir}",
    cache_policy=PREPROCESS_CACHE,
    persist_result=True,
)
def preprocess_task(
    data: DataConfig, preprocessing: PreprocessConfig, output_dir: str
) -> dict[str, Any]:
    """Run the core preprocessing; returns the output path and the headline numbers."""
    preprocess(data, preprocessing, Path(output_dir), show_progress=False)
    meta = ProcessedDataset(output_dir).metadata
    return {
        "output_dir": str(output_dir),
        "counts": meta.counts.model_dump(mode="json"),
        "ast": meta.ast,
        "graph_stats": meta.graph_stats.get("all", {}),
        "gnn_batch_size": meta.gnn_batch_size.get("recommended_batch_size"),
        "functions_per_s": meta.functions_per_s,
        "warnings": meta.warnings,
    }


@task(name="publish-data-summary")
def publish_data_summary(summary: dict[str, Any]) -> str:
    """Table and markdown artifacts of the preprocessing summary; returns the artifact key."""
    counts = summary["counts"]
    create_table_artifact(
        key="data-counts",
        table=[
            {"split": split, "kept": n, "labels": str(counts["labels_per_split"][split])}
            for split, n in counts["kept_per_split"].items()
        ],
        description="Kept functions per split",
    )
    stats = summary["graph_stats"]
    markdown = "\n".join(
        [
            f"# Processed data set `{summary['output_dir']}`",
            "",
            f"- read **{counts['read']:,}** = kept {counts['kept']:,} + rejected "
            f"{counts['rejected']:,} + deduplicated {counts['deduplicated']:,}",
            f"- AST success rate **{summary['ast']['success_rate']:.1%}**",
            f"- graph nodes mean {stats.get('nodes_mean')} / p95 {stats.get('nodes_p95')}",
            f"- recommended GNN batch size **{summary['gnn_batch_size']}**",
            f"- {summary['functions_per_s']:,} functions/s",
            *[f"- warning: {w}" for w in summary["warnings"]],
        ]
    )
    return str(create_markdown_artifact(key="data-summary", markdown=markdown))
