"""The ``trainserve`` command line: one group, one module per area under ``trainserve/commands/``.

Every command works against the local cloud (``--local``, or automatically when one runs) and against
AWS (default credentials, stack outputs). Listings take ``--json``.
"""

from __future__ import annotations

import importlib

import click

from trainserve.console import run_cli

# (module under trainserve.commands, attribute): each attribute is a click command or group.
COMMANDS = (
    ("local", "local"),
    ("training", "train"),
    ("models", "models"),
    ("endpoint", "endpoint"),
    ("traffic", "traffic"),
    ("params", "params"),
    ("predict", "predict"),
    ("predict", "feedback"),
    ("monitor", "monitor"),
    ("report", "report"),
    ("demo", "demo"),
)

# (group name, module under trainserve.commands, attribute): commands added to a group defined elsewhere.
SUBCOMMANDS = (
    ("models", "models_review", "approve"),
    ("models", "models_review", "reject"),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="trainserve")
def cli() -> None:
    """Train-Then-Serve on AWS, and on this machine with the local cloud."""


for module_name, attr in COMMANDS:
    cli.add_command(getattr(importlib.import_module(f"trainserve.commands.{module_name}"), attr))
for group_name, module_name, attr in SUBCOMMANDS:
    group = cli.commands[group_name]
    assert isinstance(group, click.Group)
    group.add_command(getattr(importlib.import_module(f"trainserve.commands.{module_name}"), attr))


def main() -> None:
    run_cli(cli)


if __name__ == "__main__":
    main()
