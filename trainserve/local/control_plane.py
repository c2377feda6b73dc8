"""The local cloud's AWS control plane: moto, patched (``moto_patches``), in a process of its own.

On AWS, Firehose, S3 and the SageMaker control plane are services apart from the Lambda functions that call
them. Locally they are moto, which is Python: run inside the daemon, every ``PutRecordBatch`` the prediction
API sends would be parsed, buffered and written to S3 under the same interpreter lock as the API's own
requests, and the logging benchmark would measure moto rather than the proxy. So the daemon runs moto in a
child process (``MotoProcess``) and talks to it as any client does, over HTTP on 127.0.0.1.

Two things have no AWS API, because Firehose does them on its own: turning its buffer into a staging object
(``flush_firehose``: the local Firehose writes when the warehouse loader asks, instead of on its buffering
hints) and counting ``PutRecordBatch`` calls per stream (``firehose_calls``, for status and benchmarks).
The daemon asks the child for them over a pipe. Tests that run moto in their own process use
``InProcessControlPlane``, which answers the same two questions from this process's moto.

It ends when the daemon stops it, and also when the daemon dies (its end of the pipe closes), so a
killed daemon does not leave moto holding the port.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any


class ControlPlaneError(RuntimeError):
    """The control plane process failed to start, answered with an error, or is gone."""


class InProcessControlPlane:
    """moto in this process (tests that start their own ``ThreadedMotoServer``)."""

    def flush_firehose(self) -> int:
        from trainserve.local import moto_patches

        return moto_patches.flush_firehose()

    def firehose_calls(self) -> dict[str, int]:
        from trainserve.local import moto_patches

        return moto_patches.firehose_calls()

    def status(self) -> dict[str, Any]:
        return {"process": "in-process"}


def _main(conn: Any, port: int, runtime_url: str | None) -> None:
    """The child: patched moto on 127.0.0.1:``port``, then requests from the pipe until it closes."""
    import logging

    from moto.server import ThreadedMotoServer

    from trainserve.local import moto_patches

    moto_patches.install()
    moto_patches.set_runtime_url(runtime_url)
    moto_patches.enable_firehose_buffering()  # one staging object per stream and load cycle, as Firehose
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    try:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, which fails its start with it
        conn.send(("error", f"moto did not start on port {port}: {type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", port))
    handlers = {"flush_firehose": moto_patches.flush_firehose, "firehose_calls": moto_patches.firehose_calls}
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the daemon is gone
                return
            if message is None:
                return
            handler = handlers.get(message)
            if handler is None:
                conn.send(("error", f"unknown request {message!r}"))
                continue
            try:
                conn.send(("ok", handler()))
            except Exception as exc:  # noqa: BLE001 - the daemon raises it where it asked
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        with contextlib.suppress(Exception):
            server.stop()


class MotoProcess:
    """moto in a spawned child process on 127.0.0.1:``port`` (spawned: the daemon has threads)."""

    def __init__(self, port: int, runtime_url: str | None, timeout: float = 60.0) -> None:
        self.port = port
        self.runtime_url = runtime_url
        self.timeout = timeout
        self._proc: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()  # one request at a time on the pipe (several daemon threads ask)

    def start(self) -> MotoProcess:
        from trainserve.local import child_process

        self._proc, self._conn = child_process.spawn(_main, (self.port, self.runtime_url), "moto")
        try:
            self._answer("start")
        except ControlPlaneError:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def _answer(self, what: str) -> Any:
        if not self._conn.poll(self.timeout):
            raise ControlPlaneError(
                f"the control plane process did not answer '{what}' within {self.timeout:.0f} s"
            )
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError):
            raise ControlPlaneError(
                f"the control plane process (moto, pid {self.pid}) has ended (exit code "
                f"{self._proc.exitcode if self._proc is not None else None})"
            ) from None
        if status != "ok":
            raise ControlPlaneError(value)
        return value

    def _ask(self, what: str) -> Any:
        with self._lock:
            if self._conn is None:
                raise ControlPlaneError("the control plane process is stopped")
            try:
                self._conn.send(what)
            except (OSError, ValueError):
                raise ControlPlaneError(
                    f"the control plane process (moto, pid {self.pid}) has ended"
                ) from None
            return self._answer(what)

    def flush_firehose(self) -> int:
        """The local Firehose's buffered records become staging objects now; returns how many records."""
        return int(self._ask("flush_firehose"))

    def firehose_calls(self) -> dict[str, int]:
        """``PutRecord``/``PutRecordBatch`` calls per stream since the control plane started."""
        return dict(self._ask("firehose_calls"))

    def status(self) -> dict[str, Any]:
        return {"process": "moto", "pid": self.pid, "alive": self.alive()}

    def stop(self, timeout: float = 10.0) -> None:
        from trainserve.local import child_process

        with self._lock:
            child_process.stop(self._proc, self._conn, timeout)
            self._proc = self._conn = None
