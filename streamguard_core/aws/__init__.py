"""The SageMaker managed-spot backend: training container entrypoint, job control, costs.

Nothing here imports Prefect (the orchestration layer resolves credentials into a boto3
``Session`` and passes clients in) and nothing imports boto3 or torch at module level, so the
package imports cheaply wherever the core does.

* :mod:`~streamguard_core.aws.config` settings, the ``spec`` hyperparameter, prices, ``redact``,
  ``error_code``
* :mod:`~streamguard_core.aws.entrypoint` the container's ``streamguard-sagemaker-train``: /opt/ml
  mapped onto the job spec, then the same ``run_job`` a local run calls
* :mod:`~streamguard_core.aws.jobs` create / wait / stop jobs, download models, cost, budget
* :mod:`~streamguard_core.aws.s3` content-addressed channel upload, prefix download and sync
* :mod:`~streamguard_core.aws.tarsafe` tar extraction that refuses links, devices and escapes
* :mod:`~streamguard_core.aws.cost` SageMaker spend from Cost Explorer (``streamguard aws cost``)
* :mod:`~streamguard_core.aws.setup` the execution role, ECR repositories and bucket, created once
  (``streamguard aws setup``)
* :mod:`~streamguard_core.aws.logs` a training job's CloudWatch log streams (``streamguard aws
  logs``)
* :mod:`~streamguard_core.aws.emulator` an offline SageMaker for tests and local rehearsal

The backend itself (a job spec in, a ``RunStatus`` and the run files out) is
:class:`streamguard_core.backends.sagemaker.SageMakerBackend`.
"""
