"""The pieces the local cloud daemon runs, and what each is given.

The daemon (``trainserve.local.daemon``) starts moto first (in its own process, ``control_plane``), creates the project's base resources, then
starts each component in order with a ``LocalContext`` and stops the API first (``daemon.STOP_FIRST``),
then the others in reverse order (the warehouse's stop makes a final load). A component is a
small object with ``name``, ``start(ctx)``, ``stop()`` and ``status() -> dict`` (shown by
``trainserve local status``; a ``"alarms"`` list there is shown as breached alarms).

Components share a ``BusyMeter`` (``ctx.api_activity``): the prediction API marks its requests on it, and the
warehouse loader reads it to wait while the API is busy (``warehouse.WarehouseComponent``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stacks.config import Config
from trainserve.target import Names, Target


def read_message(path: Path) -> dict[str, Any] | None:
    """The message in ``path`` (a request or an answer between a command and the daemon): a JSON object with
    a ``"token"`` and what the request or answer carries; None if there is none (or not a whole one)."""
    try:
        message = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return message if isinstance(message, dict) and isinstance(message.get("token"), str) else None


def read_token(path: Path) -> str | None:
    """The token of the message in ``path``, or None."""
    message = read_message(path)
    return message["token"] if message else None


def write_token(path: Path, token: str, **fields: Any) -> None:
    """Write the message ``{"token": token, **fields}`` to ``path`` whole (a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"token": token, **fields}, default=str))
    tmp.replace(path)


def request_and_wait(
    state_dir: Path, request: str, done: str, timeout: float, **payload: Any
) -> dict[str, Any] | None:
    """Ask a component of the running daemon for something: a message with a new token (and ``payload``) in
    ``state_dir/request``, then wait until the component answers with the same token in ``state_dir/done``
    once it has done it; the answer, or None if none came within ``timeout`` seconds (the daemon is not
    running, or the work failed: its status says why). Commands asking for the same thing at once take turns
    (a lock file beside the request), each getting its own answer."""
    deadline = time.monotonic() + timeout
    # One request at a time per kind: the request file holds one message, so a second command writing its own
    # would replace the first's, and the first would wait for an answer that never comes. Others wait here.
    with exclusive(state_dir / f".{request}.lock", deadline) as held:
        if not held:
            return None
        token = uuid.uuid4().hex
        write_token(state_dir / request, token, **payload)
        while time.monotonic() < deadline:
            answer = read_message(state_dir / done)
            if answer is not None and answer["token"] == token:
                return answer
            time.sleep(0.05)
        return None


# The lock file (in the state folder) that every change of the local endpoint holds: the approval watcher while
# the release controller runs, and the CLI's traffic and endpoint commands from reading the endpoint to the
# end of their change. On AWS SageMaker refuses an update while another runs; locally changes are instant,
# so two at once would each plan on an endpoint the other is changing.
ENDPOINT_LOCK = ".endpoint.lock"
ENDPOINT_LOCK_WAIT_S = 300.0


@contextlib.contextmanager
def exclusive(
    path: Path, deadline: float, poll: float = 0.05, on_wait: Callable[[], None] | None = None
) -> Iterator[bool]:
    """Hold an exclusive lock on the lock file ``path``, waiting for another holder to let go until
    ``deadline`` (``time.monotonic()``; ``on_wait`` is called once if it has to wait); yields whether it
    got the lock (released on leaving)."""
    import fcntl

    with open(path, "a") as f:
        waited = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(poll)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class BusyMeter:
    """How long something was busy: the wall time during which at least one of its requests was in flight.
    ``enter()`` and ``exit()`` bracket each request (from any thread); ``busy_seconds()`` is the total so
    far, so a reader's two readings give the busy fraction of the time between them. ``close(timeout)``
    refuses requests from then on (``enter()`` returns False) and waits for those in flight to finish."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Condition()
        self._in_flight = 0
        self._since = 0.0
        self._busy = 0.0
        self._closed = False

    def enter(self) -> bool:
        """Count a request in; False (nothing counted) once closed: the request is not to be served."""
        with self._lock:
            if self._closed:
                return False
            if self._in_flight == 0:
                self._since = self._clock()
            self._in_flight += 1
            return True

    def exit(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._busy += self._clock() - self._since
                self._lock.notify_all()

    def close(self, timeout: float) -> None:
        """Refuse requests from now on, and wait (at most ``timeout`` seconds) until none is in flight."""
        with self._lock:
            self._closed = True
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def busy_seconds(self) -> float:
        with self._lock:
            return self._busy + (self._clock() - self._since if self._in_flight else 0.0)


@dataclass(frozen=True)
class LocalContext:
    config: Config
    names: Names
    state_dir: Path  # .trainserve/ : everything the local cloud writes lives here
    aws_endpoint_url: str  # the moto server, e.g. http://127.0.0.1:4566
    runtime_url: str  # the local SageMaker runtime, e.g. http://127.0.0.1:4567
    api_url: str  # the local prediction API, e.g. http://127.0.0.1:4568
    warehouse_path: Path  # the DuckDB file
    region: str
    log: logging.Logger
    # what Firehose does on its own (flush, call counts): ``control_plane.MotoProcess`` in the daemon; None
    # means moto runs in this process (``control_plane.InProcessControlPlane``)
    control_plane: Any = None
    # the prediction API's busy time (``BusyMeter``), which the warehouse loader yields to; None: no yielding
    api_activity: BusyMeter | None = None

    def target(self) -> Target:
        """A CLI-style Target on this local cloud (its ``client(service)`` talks to moto / the runtime)."""
        return Target(
            mode="local",
            region=self.region,
            config=self.config,
            names=self.names,
            aws_endpoint_url=self.aws_endpoint_url,
            runtime_url=self.runtime_url,
            api_url=self.api_url,
            warehouse={"path": str(self.warehouse_path)},
        )


class Component(Protocol):
    name: str

    def start(self, ctx: LocalContext) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...
