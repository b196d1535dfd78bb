"""docker/Dockerfile.serve (no Docker engine here): what SageMaker runs is `streamguard serve`."""

from __future__ import annotations

import json
from pathlib import Path

from test_docker import _makefile_torch, _scripts, _words, instructions

from streamguard_core.cli import build_parser
from streamguard_core.serve.cli import cmd_serve

DOCKERFILE = Path(__file__).resolve().parents[2] / "docker" / "Dockerfile.serve"
REPO = DOCKERFILE.parents[1]


def test_copy_sources_exist_and_the_serving_extras_are_installed() -> None:
    steps = instructions(DOCKERFILE)
    for args in (a for kw, a in steps if kw == "COPY"):
        words = [w for w in _words(args) if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY source {source!r} not in the repo"
    install = next(a for kw, a in steps if kw == "RUN" and "pip install" in a)
    assert '".[torch,onnx,serve]"' in install
    assert install.index('"torch==${TORCH_VERSION}"') < install.index('".[torch,onnx,serve]"')
    torch = dict(a.split("=", 1) for kw, a in steps if kw == "ARG" and "=" in a)
    assert torch["TORCH_VERSION"] == _makefile_torch()


def test_docker_run_image_serve_is_the_sagemaker_mode_of_streamguard_serve() -> None:
    steps = instructions(DOCKERFILE)
    entry = json.loads(next(a for kw, a in steps if kw == "ENTRYPOINT"))
    assert entry == ["streamguard"] and "streamguard" in _scripts()
    assert json.loads(next(a for kw, a in steps if kw == "CMD")) == ["serve"]
    assert any(kw == "EXPOSE" and a == "8080" for kw, a in steps)
    # SageMaker passes "serve" as the argument: the CLI's serve command, with no model flag
    args = build_parser().parse_args([*entry[1:], "serve"])
    assert args.func is cmd_serve and args.model_dir is None and args.registry is None
