"""Options shared by commands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from trainserve import target as _target

local_option = click.option(
    "--local/--aws",
    "local",
    default=None,
    help="Act on the local cloud or on AWS (default: the local cloud when it runs, else AWS).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class UtcDateTime(click.ParamType):
    """A time given on the command line, as a naive ``datetime`` in UTC (what the commands compute with).

    ISO 8601, as the CLI itself prints times: ``2026-12-05``, ``2026-12-05T23:44:00``, ``2026-12-05 23:44:00``,
    with fractional seconds, and with ``Z`` or an offset (``+01:00``), converted to UTC. A time without ``Z`` or
    an offset is UTC. Anything else is a usage error naming the option."""

    name = "datetime"
    EXAMPLES = "2026-12-05, 2026-12-05T23:44:00, 2026-12-05T23:44:00Z, 2026-12-05T23:44:00+01:00"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            parsed = value
        else:
            try:
                parsed = datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(f"'{value}' is not an ISO 8601 date or time (e.g. {self.EXAMPLES})", param, ctx)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed


UTC_DATETIME = UtcDateTime()


def resolve_target(local: bool | None) -> _target.Target:
    return _target.resolve(local)
