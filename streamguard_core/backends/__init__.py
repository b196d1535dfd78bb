"""Where a training job runs. Every backend takes a :class:`~streamguard_core.config.TrainJobSpec`
and returns a :class:`~streamguard_core.training.job.RunStatus`, with the run's files in
``spec.run_dir``; both end in the same :func:`~streamguard_core.training.job.run_job`.

* :class:`~streamguard_core.backends.local.LocalBackend`: one process per job on this machine
  (one GPU each, through ``CUDA_VISIBLE_DEVICES``, when there are several).
* :class:`~streamguard_core.backends.sagemaker.SageMakerBackend`: one SageMaker training job per
  spec; the container's entrypoint maps ``/opt/ml`` onto the spec and calls ``run_job``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from streamguard_core.config import TrainJobSpec

EpochCallback = Callable[[dict[str, Any]], None]


class TrainingBackend(Protocol):
    """What the flows need of a backend."""

    name: str

    def run(self, spec: TrainJobSpec, on_epoch_end: EpochCallback | None = None) -> Any:
        """Run one job to its end; returns its ``RunStatus`` (never raises for a failed run)."""
        ...
