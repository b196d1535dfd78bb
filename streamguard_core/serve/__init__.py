"""``streamguard serve``: a saved detector behind HTTP (FastAPI + uvicorn).

* :mod:`~streamguard_core.serve.app` the application: ``/health``, ``/model``, ``/scan`` and
  SageMaker's serving contract (``/ping``, ``/invocations``), request limits, bearer-token
  auth, scoring off the event loop with a bound on concurrent work and a timeout.
* :mod:`~streamguard_core.serve.cli` the ``streamguard serve`` command (uvicorn in-process).

FastAPI and uvicorn come with the ``serve`` extra (``pip install 'streamguard[serve]'``).
The Prefect ``Secret`` block named by ``ServeConfig.token_block`` is resolved in
``flows/serve.py``; the core reads the token from the environment only.
"""
