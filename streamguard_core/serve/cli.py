"""``streamguard serve``: a saved detector behind HTTP, uvicorn in-process."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from streamguard_core.config import ServeConfig
from streamguard_core.models.registry import MODEL_CARD

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
SAGEMAKER_HOST = "0.0.0.0"  # SageMaker's contract: the container listens on all addresses
SAGEMAKER_PORT = 8080
SERVE_CONFIG_ENV = "STREAMGUARD_SERVE_CONFIG"
"""SageMaker mode: ServeConfig fields as JSON (set by ``streamguard aws deploy``)."""
DESCRIPTION = """\
Serve a saved detector over HTTP (FastAPI + uvicorn, in this process).

Endpoints:
  GET  /health       status, model kind, backend, threshold
  GET  /model        the model card
  POST /scan         {"code": "<C/C++ file>", "filename": "x.c"} or {"functions": ["...", ...]},
                     options "threshold", "explain" (flagged|all|none), "top_lines";
                     answers {"findings": [{file, function, start_line, end_line, probability,
                     flagged, language, lines}], "threshold", "model", ...}
  GET  /ping         SageMaker health check (200 once the model is loaded; never needs a token)
  POST /invocations  SageMaker inference: the same as /scan (text/plain: the code of one file)

Auth: a bearer token (Authorization: Bearer <token>) guards every endpoint but /ping. It is
read from the environment variable --token-env names (default STREAMGUARD_API_TOKEN) or, with
`python -m flows.serve --token-block NAME`, from a Prefect Secret block. Without a token the
server only binds to loopback (127.0.0.1, ::1, localhost): --host 0.0.0.0 without one exits 2.

Limits: a body over --max-request-bytes, more than --max-functions functions or one over
--max-function-chars answers 413; bad JSON 400; a wrong field 422; a request not scored within
--timeout-s answers 503. The server stays up after each.

  streamguard serve --model-dir runs/baseline/seed_42/model            # http://127.0.0.1:8080
  STREAMGUARD_API_TOKEN=... streamguard serve --registry runs/registry --host 0.0.0.0
  curl -s localhost:8080/scan -H 'Content-Type: application/json' \\
       -d '{"code": "int f(char *s) { char b[8]; strcpy(b, s); return 0; }"}'

Without --model-dir and --registry it runs SageMaker's serving contract (`docker run IMAGE
serve`): the model from $SM_MODEL_DIR (default /opt/ml/model), 0.0.0.0:8080, limits from
$STREAMGUARD_SERVE_CONFIG (JSON), and /ping and /invocations open (SageMaker authenticates
InvokeEndpoint with IAM); meant for inside the container only.
"""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags and one flag per :class:`ServeConfig` field."""
    from streamguard_core.cli import add_config_flags

    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-dir", default=None, help="a saved detector directory")
    model.add_argument(
        "--registry", default=None,
        help="a model registry (e.g. runs/registry): serve its production model",
    )  # fmt: skip
    add_config_flags(parser.add_argument_group("service (ServeConfig)"), ServeConfig, "serve")


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``streamguard serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a saved detector over HTTP (/scan; SageMaker's /ping and /invocations)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(parser)
    parser.set_defaults(func=cmd_serve)
    return parser


def _usage_error(message: str) -> int:
    print(f"streamguard serve: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def resolve_serving(args: argparse.Namespace) -> tuple[str, ServeConfig, bool]:
    """(model directory, config, SageMaker mode) of a ``serve`` command line.

    Without a model flag: SageMaker mode, the model from ``$SM_MODEL_DIR`` or
    ``/opt/ml/model``, 0.0.0.0:8080 unless --host / --port say otherwise.

    Raises:
        ValueError: no model where the flags (or SageMaker's variables) point.
        pydantic.ValidationError: an invalid setting.
    """
    from streamguard_core.cli import config_values
    from streamguard_core.scan.cli import resolve_model_dir

    values = config_values(args, "serve")
    if args.model_dir or args.registry:
        return resolve_model_dir(args.model_dir, args.registry), ServeConfig(**values), False
    model_dir = os.environ.get("SM_MODEL_DIR") or SAGEMAKER_MODEL_DIR
    raw = os.environ.get(SERVE_CONFIG_ENV)
    if raw:  # the limits `streamguard aws deploy` gave the container (flags still win)
        try:
            values = {**json.loads(raw), **values}
        except (ValueError, TypeError) as exc:
            raise ValueError(f"${SERVE_CONFIG_ENV} is not a JSON object of ServeConfig fields: "
                             f"{exc}") from exc  # fmt: skip
    if not (Path(model_dir) / MODEL_CARD).is_file():
        raise ValueError(
            "give --model-dir DIR or --registry DIR (without them the SageMaker container "
            f"contract applies, and {model_dir} holds no {MODEL_CARD})"
        )
    values.setdefault("host", SAGEMAKER_HOST)
    values.setdefault("port", int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or SAGEMAKER_PORT))
    return model_dir, ServeConfig(**values), True


def cmd_serve(args: argparse.Namespace, secret_token: str | None = None) -> int:
    """``streamguard serve``: 0 after a clean shutdown, 1 no model / bind failure, 2 usage.

    ``secret_token``: the value of ``token_block``'s Secret, resolved by ``flows/serve.py``
    (the core never imports Prefect).
    """
    from streamguard_core.collect.base import resolve_secret
    from streamguard_core.serve.app import (
        LoadedModel,
        ServeStartError,
        ServeUsageError,
        check_auth,
        run_server,
    )

    try:
        model_dir, config, sagemaker = resolve_serving(args)
    except ValueError as exc:  # pydantic's ValidationError is one too
        return _usage_error(str(exc))
    if config.token_block and secret_token is None:
        return _usage_error(
            f"token_block {config.token_block!r} is a Prefect Secret block: start the server "
            "with `python -m flows.serve --token-block NAME ...` (the core does not import "
            f"Prefect), or put the token in ${config.token_env}"
        )
    token = resolve_secret(secret_token, config.token_env)
    try:
        check_auth(config.host, token, sagemaker)
    except ServeUsageError as exc:
        return _usage_error(str(exc))

    def ready(url: str, model: LoadedModel) -> None:
        auth = "bearer token required" if token else "no token (loopback only)"
        if sagemaker:
            auth = "SageMaker mode: /ping and /invocations open" + (
                ", the rest need the bearer token" if token else ""
            )
        print(
            f"streamguard serve: {url} ({model.kind} model from {model_dir}, "
            f"{model.backend}; {auth})\n  POST {url}/scan  GET {url}/health  GET {url}/model  "
            f"GET {url}/ping  POST {url}/invocations",
            flush=True,
        )

    try:
        run_server(model_dir, config, token, sagemaker=sagemaker, on_ready=ready)
    except ServeStartError as exc:
        print(f"streamguard serve: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
