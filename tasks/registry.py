"""Registry task: compare a candidate with the production model on the same data; promote."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from streamguard_core.pipeline.registry import ModelRegistry, evaluate_on


@task(name="promote-if-better", task_run_name="compare {candidate_model_dir}")
def promote_if_better(
    registry_dir: str,
    candidate_model_dir: str,
    candidate: dict[str, Any],
    validation_data: str,
    min_improvement: float,
    source_run: str,
) -> dict[str, Any]:
    """Register the candidate, then score it and the production model on ``validation_data``
    and promote it if better.

    The candidate is registered either way (so it can be promoted by hand later); the
    production pointer moves only when :func:`decide_promotion` says so. The comparison uses
    the production model read under the registry lock (:meth:`ModelRegistry.promote_if_better`),
    so concurrent runs promoting into one registry never let a worse model land last.
    """
    logger = get_run_logger()
    registry = ModelRegistry(registry_dir)
    candidate_eval = evaluate_on(candidate_model_dir, validation_data)
    version = registry.register(
        candidate_model_dir,
        model=candidate["model"],
        seed=candidate["seed"],
        metrics={"validation": candidate_eval},
        source_run=source_run,
    )
    decision = registry.promote_if_better(
        version,
        candidate_eval,
        lambda current: evaluate_on(current["model_dir"], validation_data),
        metric="f1",
        min_improvement=min_improvement,
        evaluation={"data": validation_data},
    )
    logger.info("registered %s; %s", version, decision["reason"])
    previous = decision["previous"] or "none"
    create_markdown_artifact(
        key="promotion-decision",
        markdown="\n".join(
            [
                f"# Monthly retrain: {'promoted' if decision['promote'] else 'kept'}",
                "",
                f"- candidate **{version}** ({candidate['model']} seed {candidate['seed']}): "
                f"F1 {_fmt(decision['candidate'])} on `{validation_data}`",
                f"- production before: **{previous}**: F1 {_fmt(decision['production'])}",
                f"- decision: {decision['reason']}",
                f"- registry: `{registry_dir}`",
            ]
        ),
        description="Candidate vs production on the same validation data",
    )
    return {**decision, "previous": previous, "model_dir": candidate_model_dir}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
