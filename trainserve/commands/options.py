"""Options shared by commands."""

from __future__ import annotations

import click

from trainserve import target as _target

local_option = click.option(
    "--local/--aws",
    "local",
    default=None,
    help="Act on the local cloud or on AWS (default: the local cloud when it runs, else AWS).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def resolve_target(local: bool | None) -> _target.Target:
    return _target.resolve(local)
