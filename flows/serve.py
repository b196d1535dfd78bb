"""``streamguard serve`` with its bearer token from a Prefect ``Secret`` block.

The core never imports Prefect, so the one thing Prefect adds here is reading the block; the
server itself is the core's (:func:`streamguard_core.serve.cli.cmd_serve`). It is a plain
script, not a flow: a server runs until stopped, and a flow run that never ends would only
hold a slot. Save the token once, then start the server with the same flags as
``streamguard serve``::

    python -c "from prefect.blocks.system import Secret; Secret(value='...').save('serve-token')"
    python -m flows.serve --token-block serve-token --registry runs/registry --host 0.0.0.0
"""

from __future__ import annotations

import argparse
import sys

from streamguard_core.serve.cli import DESCRIPTION, add_serve_arguments, cmd_serve


def load_token(block: str) -> str:
    """The value of the Prefect ``Secret`` block named ``block``.

    Raises:
        ValueError: there is no such block, or it is empty.
    """
    from prefect.blocks.system import Secret

    try:
        secret = Secret.load(block)
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise ValueError(f"Prefect Secret block {block!r} not found: {exc}") from exc
    value = str(secret.get()).strip()  # type: ignore[union-attr]  # sync outside a flow
    if not value:
        raise ValueError(f"Prefect Secret block {block!r} is empty")
    return value


def main(argv: list[str] | None = None) -> int:
    """Resolve ``--token-block`` and run ``streamguard serve``; its exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.serve",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    block = getattr(args, "serve.token_block", None)
    if not block:
        print("python -m flows.serve: error: give --token-block NAME", file=sys.stderr)
        return 2
    try:
        token = load_token(block)
    except ValueError as exc:
        print(f"python -m flows.serve: error: {exc}", file=sys.stderr)
        return 2
    return cmd_serve(args, secret_token=token)


if __name__ == "__main__":
    raise SystemExit(main())
