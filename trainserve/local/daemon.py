"""The local cloud daemon: ``python -m trainserve.local.daemon [--aws-port P] [--runtime-port P] [--api-port P]``.

Runs in the foreground (``trainserve local start`` spawns it detached, its output in ``.trainserve/local.log``):

1. starts the AWS control plane: patched moto (``moto_patches``) in a process of its own
   (``control_plane.MotoProcess``), on 127.0.0.1;
2. points this process at it (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, dummy credentials,
   region us-east-1) so the real Lambda handlers run here unchanged;
3. creates the base resources (``resources.create_base_resources``);
4. starts the components in order: the runtime, the approval watcher, then ``EXTRA_COMPONENTS``;
5. writes ``local.json`` (only once everything is up) and, every ``STATUS_INTERVAL`` seconds,
   ``status.json`` (``{"updated_at", "pid", "components": {name: status()}}``);
6. on SIGTERM / SIGINT stops gracefully: first the prediction API (``STOP_FIRST``: it stops taking
   connections and delivers the prediction logs its proxy holds to the local Firehose), then the other
   components in reverse order (the warehouse's stop loads everything staged, in at most
   ``warehouse.FINAL_LOAD_SECONDS``, and logs what it could not load; the model servers stop with the
   runtime), logs how many prediction log records went to the log fallback instead, then stops moto (the
   local Firehose's buffer and S3 are in its memory) and removes ``local.json`` and ``status.json``.

Ports: AWS 4566, runtime 4567, API 4568; ``TRAINSERVE_PORT_BASE=N`` gives N, N+1, N+2; a port argument of 0
picks a free port (below the ephemeral range, ``ports``). A port already in use ends the daemon at once with
exit code ``EXIT_PORT_IN_USE`` and a message naming it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainserve.local.ports import free_ports, port_free  # noqa: F401  (port_free: re-exported)

DEFAULT_PORTS = {"aws": 4566, "runtime": 4567, "api": 4568}
PORT_BASE_ENV = "TRAINSERVE_PORT_BASE"
STATUS_FILE = "status.json"
LOG_FILE = "local.log"
STATUS_INTERVAL = 2.0
GC_THRESHOLD_0 = 20_000  # see Daemon.start
EXIT_PORT_IN_USE = 3
EXIT_START_FAILED = 1

# Components other parts of the project provide, started after the runtime and the watcher, in order.
EXTRA_COMPONENTS = (
    "trainserve.local.api:ApiComponent",
    "trainserve.local.warehouse:WarehouseComponent",
    "trainserve.local.monitoring:MonitoringComponent",
)
# True: a missing module or a failing start of an extra component stops the daemon's start (False would only
# log it and show it in the status).
STRICT_EXTRAS = True
# Components stopped first, before the others in reverse order of their start: those that take requests. The
# API's stop ends serving and delivers the prediction logs its proxy still buffers to the local Firehose; the
# warehouse, stopped after it, then loads them (in reverse order it would stop first, and they would be lost
# with moto's memory).
STOP_FIRST = ("api",)

log = logging.getLogger("trainserve.local")


class PortInUse(RuntimeError):
    def __init__(self, role: str, port: int) -> None:
        super().__init__(
            f"port {port} ({role}) is already in use on 127.0.0.1; stop what uses it, or move the local "
            f"cloud's ports with {PORT_BASE_ENV}=<base> (it uses base, base+1, base+2)"
        )
        self.role, self.port = role, port


def default_ports(environ: dict[str, str] | None = None) -> dict[str, int]:
    """The three ports: the defaults, or ``TRAINSERVE_PORT_BASE``, ``+1``, ``+2``."""
    environ = os.environ if environ is None else environ
    base = environ.get(PORT_BASE_ENV)
    if not base:
        return dict(DEFAULT_PORTS)
    try:
        b = int(base)
    except ValueError:
        raise ValueError(f"{PORT_BASE_ENV} must be an integer port number, got {base!r}") from None
    if not 1 <= b <= 65533:
        raise ValueError(f"{PORT_BASE_ENV} must be in 1..65533, got {b}")
    return {"aws": b, "runtime": b + 1, "api": b + 2}


def pick_free_port() -> int:
    """A free port below the ephemeral range (``ports``): no outgoing connection takes it before we bind."""
    return free_ports(1)


def resolve_ports(requested: dict[str, int]) -> dict[str, int]:
    """0 → a free port; any other port must be free, else ``PortInUse`` naming it."""
    out = {}
    for role, port in requested.items():
        if port == 0:
            out[role] = pick_free_port()
        elif not port_free(port):
            raise PortInUse(role, port)
        else:
            out[role] = port
    return out


def load_component(spec: str) -> Any:
    """``"package.module:ClassName"`` → a new instance."""
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def set_aside_warehouse(path: Path, now: datetime | None = None) -> Path | None:
    """Move the warehouse a previous local cloud left (and its write-ahead log) aside, to
    ``warehouse-<UTC time>.duckdb`` beside it, and return where it went (None if there was none).

    moto keeps the registry in memory, so every start begins again at model version 1: the previous
    predictions, which name the old versions and packages, would be counted as the new ones' (the report's
    and the monitor's windows, the drift baseline). Nothing is deleted: the old file stays queryable. A
    warehouse without a single prediction or outcome is simply started again (nothing to keep)."""
    if not path.exists():
        return None
    if _holds_no_records(path):
        for p in (path, path.with_name(path.name + ".wal")):
            p.unlink(missing_ok=True)
        return None
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.stem}-{stamp}-{n}{path.suffix}")
    path.rename(target)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        wal.rename(target.with_name(target.name + ".wal"))
    return target


def _holds_no_records(path: Path) -> bool:
    """True when the warehouse file opens and has no row in either table (False when in doubt)."""
    from trainserve.local.warehouse import connect_read

    try:
        with connect_read(path, timeout=1.0) as con:
            tables = {
                r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
            }
            for table in ("prediction_log", "prediction_feedback"):
                if table in tables and con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]:
                    return False
    except Exception:  # noqa: BLE001 - unreadable: keep it (set aside), never delete
        return False
    return True


def _point_process_at_local_cloud(aws_url: str, runtime_url: str, region: str) -> None:
    from trainserve.target import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY

    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(key, None)
    for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        del os.environ[key]
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": aws_url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime_url,
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
        }
    )


class Daemon:
    """The local cloud in this process (``run()`` blocks until ``shutdown()`` or a signal)."""

    def __init__(self, ports: dict[str, int], state_dir: Path | None = None) -> None:
        from trainserve.target import LOCAL_REGION
        from trainserve.target import state_dir as default_state_dir

        self.requested_ports = ports
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.region = LOCAL_REGION
        self.components: list[Any] = []
        self.failed: dict[str, str] = {}
        self._stop = threading.Event()
        self._moto = None
        self._gc_threshold: tuple[int, int, int] | None = None

    @property
    def state_file(self) -> Path:
        return self.state_dir / "local.json"

    @property
    def status_file(self) -> Path:
        return self.state_dir / STATUS_FILE

    def start(self) -> dict[str, Any]:
        from stacks.config import load as load_config
        from trainserve import PROJECT_ROOT
        from trainserve.local.component import BusyMeter, LocalContext
        from trainserve.local.control_plane import MotoProcess
        from trainserve.local.resources import create_base_resources
        from trainserve.local.runtime import RuntimeComponent
        from trainserve.local.watcher import WatcherComponent
        from trainserve.target import Names

        self.state_dir.mkdir(parents=True, exist_ok=True)
        cfg = load_config(PROJECT_ROOT)
        ports = resolve_ports(self.requested_ports)
        self.ports = ports
        aws_url = f"http://127.0.0.1:{ports['aws']}"
        runtime_url = f"http://127.0.0.1:{ports['runtime']}"
        api_url = f"http://127.0.0.1:{ports['api']}"
        warehouse_path = self.state_dir / "warehouse.duckdb"
        previous_warehouse = set_aside_warehouse(warehouse_path)
        if previous_warehouse is not None:
            log.info(
                "the previous local cloud's warehouse is kept as %s (the registry starts empty again)",
                previous_warehouse,
            )

        _point_process_at_local_cloud(aws_url, runtime_url, self.region)
        # its own process: moto's work (parsing every PutRecordBatch, writing staging objects) does not take
        # the interpreter lock of this process, whose threads serve the prediction API and the runtime
        self._moto = MotoProcess(ports["aws"], runtime_url).start()
        log.info("AWS control plane (moto, pid %s) on %s", self._moto.pid, aws_url)

        self.ctx = LocalContext(
            config=cfg,
            names=Names.local(cfg),
            state_dir=self.state_dir,
            aws_endpoint_url=aws_url,
            runtime_url=runtime_url,
            api_url=api_url,
            warehouse_path=warehouse_path,
            region=self.region,
            log=log,
            control_plane=self._moto,
            api_activity=BusyMeter(),
        )
        _wait_for_moto(self.ctx)
        create_base_resources(self.ctx.target())
        log.info("base resources created for project %s", cfg.project_name)

        for component in (RuntimeComponent(), WatcherComponent()):
            self._start_component(component)
        for spec in EXTRA_COMPONENTS:
            name = spec.rpartition(":")[2]
            try:
                component = load_component(spec)
            except ModuleNotFoundError as exc:
                if STRICT_EXTRAS or exc.name != spec.partition(":")[0]:
                    raise
                log.warning("component %s is not available yet (%s); continuing without it", spec, exc)
                self.failed[name] = f"not available: {exc}"
                continue
            try:
                self._start_component(component)
            except Exception as exc:
                if STRICT_EXTRAS:
                    raise
                log.exception("component %s failed to start; continuing without it", spec)
                self.failed[getattr(component, "name", name)] = (
                    f"failed to start: {type(exc).__name__}: {exc}"
                )

        state = {
            "pid": os.getpid(),
            "region": self.region,
            "aws_endpoint_url": aws_url,
            "runtime_url": runtime_url,
            "api_url": api_url,
            "warehouse_path": str(warehouse_path),
            "previous_warehouse_path": str(previous_warehouse) if previous_warehouse else None,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "log_file": str(self.state_dir / LOG_FILE),
        }
        # Everything made so far lives as long as the daemon (botocore's service models, the components):
        # keep it out of the collector's full passes, which otherwise stop every thread here for 100 ms at a
        # time while traffic is logged (measured: 5 full passes in 6 s at 150 requests/s of 100 rows).
        self._gc_threshold = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD_0, 10, 10)
        self.write_status()
        _write_json(self.state_file, state)
        log.info("local cloud ready: %s", json.dumps(state))
        return state

    def _start_component(self, component: Any) -> None:
        log.info("starting component %s", component.name)
        component.start(self.ctx)
        self.components.append(component)

    def status(self) -> dict[str, Any]:
        components: dict[str, Any] = {}
        for c in self.components:
            try:
                components[c.name] = c.status()
            except Exception as exc:  # one broken status must not hide the others
                components[c.name] = {"error": f"{type(exc).__name__}: {exc}"}
        for name, why in self.failed.items():
            components.setdefault(name, {"error": why})
        return {
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "pid": os.getpid(),
            "control_plane": self._moto.status() if self._moto is not None else None,
            "components": components,
        }

    def write_status(self) -> None:
        try:
            _write_json(self.status_file, self.status())
        except OSError as exc:
            log.warning("could not write %s: %s", self.status_file, exc)

    def stop_order(self) -> list[Any]:
        """The components as ``stop`` stops them: those named in ``STOP_FIRST``, then the others in reverse
        order of their start."""
        first = [c for c in self.components if getattr(c, "name", None) in STOP_FIRST]
        return first + [c for c in reversed(self.components) if c not in first]

    def run(self) -> None:
        while not self._stop.wait(STATUS_INTERVAL):
            self.write_status()

    def shutdown(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        """Stop the local cloud: the components in ``stop_order`` (the API first, so what it answered reaches
        the warehouse's final load), then moto; a component that fails to stop does not keep the others up."""
        for component in self.stop_order():
            log.info("stopping component %s", component.name)
            try:
                component.stop()
            except Exception:  # keep stopping the others: their processes must not outlive the daemon
                log.exception("component %s failed to stop cleanly", component.name)
        if self.components:
            _log_undelivered()  # once nothing answers any more
        self.components.clear()
        if self._moto is not None:
            with contextlib.suppress(Exception):
                self._moto.stop()
            self._moto = None
        if self._gc_threshold is not None:  # a daemon run inside another process (tests) leaves it as it was
            gc.unfreeze()
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None
        for path in (self.state_file, self.status_file):
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, OSError):
                if path == self.status_file or json.loads(path.read_text()).get("pid") == os.getpid():
                    path.unlink()
        log.info("local cloud stopped")


def _log_undelivered() -> None:
    """Once the components have stopped: say how many prediction log records this process's proxies never
    delivered to Firehose (they went to the log fallback: lines with ``"undelivered_log_record": true`` in
    this log, not in the warehouse)."""
    try:
        import prediction_log  # lambdas/proxy/ (on sys.path via trainserve)

        counts = prediction_log.undelivered_counts()
    except Exception:  # noqa: BLE001 - nothing to report without the proxy's module
        return
    total = sum(counts.values())
    if total:
        log.warning(
            "%d prediction log record(s) since the start went to the log fallback instead of Firehose (%s): "
            'they are not in the warehouse; each is a line with "undelivered_log_record": true in this log',
            total,
            ", ".join(f"{stream}: {n}" for stream, n in sorted(counts.items())),
        )


def _wait_for_moto(ctx: Any, timeout: float = 20.0) -> None:
    s3 = ctx.target().client("s3")
    deadline = time.monotonic() + timeout
    while True:
        try:
            s3.list_buckets()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = default_ports()
    ap = argparse.ArgumentParser(prog="python -m trainserve.local.daemon", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--aws-port", type=int, default=defaults["aws"], help="moto server port (0 = pick a free one)"
    )
    ap.add_argument(
        "--runtime-port", type=int, default=defaults["runtime"], help="SageMaker runtime port (0 = free)"
    )
    ap.add_argument("--api-port", type=int, default=defaults["api"], help="prediction API port (0 = free)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        args = parse_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    daemon = Daemon({"aws": args.aws_port, "runtime": args.runtime_port, "api": args.api_port})

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        daemon.shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.start()
    except PortInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        daemon.stop()
        return EXIT_PORT_IN_USE
    except Exception:
        log.exception("the local cloud failed to start")
        daemon.stop()
        return EXIT_START_FAILED
    try:
        daemon.run()
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    import trainserve  # noqa: F401  (puts stacks/ and lambdas/*/ on sys.path)

    sys.exit(main())
