"""StreamGuard's custom Prefect events (automations in ``deployments/automations.yaml`` match them).

Every event's resource is ``streamguard.run.<flow run id>`` and it is related to the flow run,
so the UI's event feed links back to the run that raised it.
"""

from __future__ import annotations

from typing import Any

from prefect.context import FlowRunContext
from prefect.events import emit_event

PREFLIGHT_FAILED = "streamguard.preflight.failed"
TRAINING_COLLAPSED = "streamguard.training.collapsed"
MODEL_BELOW_THRESHOLD = "streamguard.model.below_threshold"
PIPELINE_COMPLETED = "streamguard.pipeline.completed"
DISTRIBUTION_SHIFT = "streamguard.phase2.distribution_shift"
PHASE_COMPARED = "streamguard.phase2.compared"


def emit(event: str, payload: dict[str, Any]) -> None:
    """Emit ``event`` for the current flow run (no-op outside one, e.g. in ``.fn()`` tests)."""
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None:
        return
    run_id = str(run.id)
    related = [
        {
            "prefect.resource.id": f"prefect.flow-run.{run.id}",
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": run.name,
        }
    ]
    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"streamguard.run.{run_id}",
            "prefect.resource.name": run.name,
        },
        related=related,
        payload={"flow_run_name": run.name, **payload},
    )
