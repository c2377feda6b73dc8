"""Terminal output shared by all commands: rich tables and progress, ``--json`` output, clean errors."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_error(message: object) -> None:
    """``error: <message>`` on stderr. The message is printed as it is (a file name or a value in it is not
    read as rich markup) and not broken into lines: the terminal wraps it, so a path in it copies whole."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", str(message)), soft_wrap=True)


class UserError(click.ClickException):
    """An error the operator can act on: printed as one clear line, exit code 1, no traceback."""

    def show(self, file=None) -> None:  # noqa: ARG002
        print_error(self.message)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite (NaN, infinity) as None: JSON has no such numbers, and
    Python's encoder would write ``NaN``, which strict parsers (JavaScript's ``JSON.parse``, jq) refuse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return _finite(value.item())
    return value


def print_json(data: Any) -> None:
    """Machine output: JSON on stdout, nothing else (standard JSON: a NaN or an infinity is written null)."""
    text = json.dumps(_finite(data), indent=2, default=_default, sort_keys=False, allow_nan=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@contextmanager
def people_output_on_stderr(enabled: bool = True) -> Iterator[None]:
    """While it lasts (when ``enabled``), what is printed for people on stdout (``console``, ``table``,
    ``click.echo``, ``print``; also by the other commands a command runs) goes to stderr: a ``--json`` command
    keeps stdout for its one JSON document, which it prints (``print_json``) once this has ended."""
    if not enabled:
        yield
        return
    with redirect_stdout(sys.stderr):  # ``console`` writes to whatever sys.stdout is when it prints
        yield


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table that never hides a value: piped or redirected, it is printed at its full width (rich would
    cut it to 80 columns); in a terminal too narrow for it, a value that does not fit wraps (it is not cut
    short with an ellipsis)."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    needed = Measurement.get(console, console.options.update_width(10_000), t).maximum
    if not console.is_terminal and needed > console.width:  # rich's own print(width=) only narrows
        Console(file=console.file, width=needed, highlight=False).print(t)
    else:
        console.print(t)


@contextmanager
def step(message: str) -> Iterator[None]:
    """A long-running step: a spinner while it runs, then a tick (or a cross naming the step)."""
    with err_console.status(message):
        try:
            yield
        except Exception:
            err_console.print(f"[red]✗[/] {message}")
            raise
    err_console.print(f"[green]✓[/] {message}")


def aws_error(exc: Exception) -> str:
    """An AWS error as ``trainserve`` prints one: ``AWS <Code>: <Message>`` for a ClientError, else its text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response.get("Error") or {}
        return f"AWS {err.get('Code', 'error')}: {err.get('Message', exc)}"
    return str(exc)


def run_cli(cli: Callable[..., Any]) -> None:
    """Run the click group, turning expected failures into one clear line instead of a traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    from stacks.config import ConfigError
    from trainserve.target import TargetError

    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ConfigError, TargetError) as exc:
        print_error(exc)
        sys.exit(1)
    except (ClientError, BotoCoreError) as exc:
        print_error(aws_error(exc))
        sys.exit(1)
