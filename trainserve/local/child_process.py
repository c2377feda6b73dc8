"""The daemon's helper processes (moto, the warehouse loader, the log delivery): each one spawned with a pipe,
and stopped the same way."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


def spawn(target: Callable[..., None], args: tuple[Any, ...], name: str) -> tuple[Any, Any]:
    """Start ``target(child_end, *args)`` in a spawned process (spawned, not forked: the daemon has threads);
    returns (process, the parent's end of the pipe)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), name=name, daemon=True)
    proc.start()
    child.close()
    return proc, parent


def stop(proc: Any, conn: Any, timeout: float = 10.0) -> None:
    """Ask the child to end (``None`` on its pipe), close the pipe, wait for it, and kill it if it has not
    ended within ``timeout`` seconds. Either argument may be None."""
    if conn is not None:
        with contextlib.suppress(OSError, ValueError):
            conn.send(None)
        with contextlib.suppress(OSError):
            conn.close()
    if proc is not None:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
