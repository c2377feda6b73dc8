"""The monitoring schedule of the local cloud: the same monitoring job the Lambda runs on AWS, every
``monitoring_interval_minutes`` (and on demand), against the local DuckDB warehouse, publishing to the
local CloudWatch (moto). moto stores alarms but never evaluates them, so this component evaluates the two
the monitoring stack defines on these signals itself and shows breached ones in ``status()["alarms"]``:

- ``{project}-prediction-drift``: the highest ScorePSI of the last run above ``drift_psi_threshold``;
- ``{project}-endpoint-5xx``: the 5XX rate since the previous run above ``error_rate_alarm``. The counts come
  from ``error_counts`` when given (a callable returning cumulative ``{"requests": n, "errors": m}``), else
  from the prediction API's counters in the daemon's ``status.json`` (``components.api``: ``requests``,
  ``5xx``), else from the ``AWS/SageMaker`` ``Invocations`` / ``Invocation5XXErrors`` metrics of the endpoint
  in the local CloudWatch; with none of them the rate is not evaluated.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import monitor_job
from warehouse_query import DuckDBQuery, WarehouseQueryError

from trainserve.local.component import read_message, request_and_wait, write_token

RUN_REQUEST = "monitor.run"  # in the state dir: {"token", "window_minutes"}, written by request_run()
RUN_DONE = "monitor.done"  # the component's answer: {"token", "result"} or {"token", "error"}
REQUEST_POLL_SECONDS = 0.2


def request_run(state_dir: str | Path, window_minutes: int | None, timeout: float = 120.0) -> dict | None:
    """Ask the running local cloud's monitoring component to run the job now (``trainserve monitor run``), so
    the run counts in its status and its alarms, as a scheduled one does; wait for its answer:
    ``{"result": ...}`` or ``{"error": ...}``, or None if it did not answer within ``timeout`` seconds."""
    return request_and_wait(Path(state_dir), RUN_REQUEST, RUN_DONE, timeout, window_minutes=window_minutes)


class LocalWarehouseQuery:
    """``WarehouseQuery`` over the local warehouse file, through ``trainserve.local.warehouse.connect_read``
    (short read-only connections with retry while the loader writes; the same instance inside the daemon)."""

    dialect = "duckdb"

    def __init__(self, path: str, lock_timeout_s: float = 10.0) -> None:
        self.path = str(path)
        self.lock_timeout_s = lock_timeout_s

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        import duckdb

        from trainserve.local import warehouse

        try:
            with warehouse.connect_read(self.path, timeout=self.lock_timeout_s) as con:
                return DuckDBQuery(connection=con).query(sql, params)
        except duckdb.Error as exc:
            raise WarehouseQueryError(f"cannot read the local warehouse {self.path}: {exc}") from exc


def alarm(name: str, reason: str) -> dict[str, str]:
    return {"name": name, "state": "ALARM", "reason": reason}


def drift_alarms(result: dict, threshold: float, project: str) -> list[dict]:
    """The drift alarm when a variant's ScorePSI exceeds ``threshold`` (one alarm naming the worst variant)."""
    scored = [r for r in result.get("variants", []) if r.get("score_psi") is not None]
    breached = [r for r in scored if r["score_psi"] > threshold]
    if not breached:
        return []
    worst = max(breached, key=lambda r: r["score_psi"])
    others = f" (+{len(breached) - 1} more)" if len(breached) > 1 else ""
    return [
        alarm(
            f"{project}-prediction-drift",
            f"ScorePSI {worst['score_psi']:.3f} > {threshold:g} on {worst['variant_name']} "
            f"(model version {worst['model_version']}){others}",
        )
    ]


def error_rate_alarms(rate: float | None, requests: int, threshold: float, project: str) -> list[dict]:
    if rate is None or requests == 0 or rate <= threshold:
        return []
    return [
        alarm(f"{project}-endpoint-5xx", f"5XX rate {rate:.1%} > {threshold:.1%} over {requests} requests")
    ]


class MonitoringComponent:
    """Local cloud component: runs the monitoring job on a schedule; ``run_now()`` runs it at once."""

    name = "monitoring"

    def __init__(
        self,
        interval_s: float | None = None,
        error_counts: Callable[[], dict[str, int]] | None = None,
        query: Any = None,
    ) -> None:
        self.interval_s = interval_s
        self.error_counts = error_counts
        self.query = query
        self._ctx: Any = None
        self._clients: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._run_lock = threading.Lock()
        self._last_counts: dict[str, int] | None = None
        self._last_cw_check: datetime | None = None
        self.last_result: dict | None = None
        self.last_run: str | None = None
        self.last_error: str | None = None
        self.alarms: list[dict] = []
        self.runs = 0

    def start(self, ctx: Any) -> None:
        self._ctx = ctx
        target = ctx.target()
        self._clients = {s: target.client(s) for s in ("cloudwatch", "sagemaker", "s3")}
        if self.query is None:
            self.query = LocalWarehouseQuery(str(ctx.warehouse_path))
        if self.interval_s is None:
            self.interval_s = 60.0 * ctx.config.monitoring_interval_minutes
        self._last_counts = self._counts()
        self._last_cw_check = datetime.now(UTC)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="monitoring", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """Every ``interval_s``, and at once when ``request_run`` asks (then answer it)."""
        state_dir = self._ctx.state_dir
        request = read_message(state_dir / RUN_REQUEST)
        answered = request["token"] if request else None  # a request left from before this start
        last = time.monotonic()
        poll = min(REQUEST_POLL_SECONDS, self.interval_s or REQUEST_POLL_SECONDS)
        while not self._stop.wait(poll):
            request = read_message(state_dir / RUN_REQUEST)
            if request is not None and request["token"] != answered:
                answered = request["token"]
                window = request.get("window_minutes")
                try:
                    answer = {"result": self.run_now(int(window) if window else None)}
                except Exception as exc:  # noqa: BLE001 - the asker gets the error; status() has it too
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                write_token(state_dir / RUN_DONE, answered, **answer)
                last = time.monotonic()
            elif time.monotonic() - last >= self.interval_s:
                last = time.monotonic()
                # a failure is recorded in last_error / alarms; the schedule keeps going
                with contextlib.suppress(Exception):
                    self.run_now()

    def _api_counts(self) -> dict[str, int] | None:
        """The local prediction API's cumulative counters from the daemon's status file, if it has them."""
        try:
            status = json.loads((self._ctx.state_dir / "status.json").read_text())
            api = status["components"]["api"]
            if "error" in api:
                return None
            return {"requests": int(api.get("requests", 0)), "errors": int(api.get("5xx", 0))}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _counts(self) -> dict[str, int] | None:
        return self.error_counts() if self.error_counts is not None else self._api_counts()

    def _error_rate(self) -> tuple[float | None, int]:
        now = self._counts()
        if now is not None:
            before = self._last_counts or {"requests": 0, "errors": 0}
            self._last_counts = now
            requests = int(now.get("requests", 0)) - int(before.get("requests", 0))
            errors = int(now.get("errors", 0)) - int(before.get("errors", 0))
            return (errors / requests if requests > 0 else None), max(requests, 0)
        cw = self._clients["cloudwatch"]
        start, end = (
            self._last_cw_check or datetime.now(UTC) - timedelta(seconds=self.interval_s),
            datetime.now(UTC),
        )
        self._last_cw_check = end
        endpoint = self._ctx.names.endpoint_name
        totals = {"Invocations": 0.0, "Invocation5XXErrors": 0.0}
        for name in totals:
            metrics = cw.list_metrics(
                Namespace="AWS/SageMaker",
                MetricName=name,
                Dimensions=[{"Name": "EndpointName", "Value": endpoint}],
            )["Metrics"]
            for m in metrics:
                stats = cw.get_metric_statistics(
                    Namespace="AWS/SageMaker",
                    MetricName=name,
                    Dimensions=m["Dimensions"],
                    StartTime=start,
                    EndTime=end,
                    Period=60,
                    Statistics=["Sum"],
                )["Datapoints"]
                totals[name] += sum(d["Sum"] for d in stats)
        requests = int(totals["Invocations"])
        return (totals["Invocation5XXErrors"] / requests if requests else None), requests

    def run_now(self, window_minutes: int | None = None) -> dict:
        """Run the job once (window: ``monitoring_interval_minutes``), publish, evaluate the alarms."""
        if self._ctx is None:
            raise RuntimeError("MonitoringComponent.start(ctx) first")
        cfg, names = self._ctx.config, self._ctx.names
        with self._run_lock:
            self.last_run = datetime.now(UTC).isoformat()
            self.runs += 1
            try:
                result = monitor_job.run_monitor(
                    self.query,
                    self._clients["cloudwatch"],
                    self._clients["sagemaker"],
                    self._clients["s3"],
                    endpoint_name=names.endpoint_name,
                    group=names.model_package_group,
                    window_minutes=window_minutes or cfg.monitoring_interval_minutes,
                )
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.alarms = [
                    alarm(f"{cfg.project_name}-monitoring-job", f"the monitoring job failed: {exc}")
                ]
                if self._ctx.log:
                    self._ctx.log.warning("monitoring job failed: %s", self.last_error)
                raise
            self.last_error = None
            rate, requests = self._error_rate()
            result["error_rate"] = rate
            self.alarms = drift_alarms(result, cfg.drift_psi_threshold, cfg.project_name) + error_rate_alarms(
                rate, requests, cfg.error_rate_alarm, cfg.project_name
            )
            result["alarms"] = list(self.alarms)
            self.last_result = result
            return result

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "interval_s": self.interval_s,
            "runs": self.runs,
            "last_run": self.last_run,
            "running": self._thread is not None and self._thread.is_alive(),
            "alarms": list(self.alarms),
        }
        if self.last_result is not None:
            out["variants"] = len(self.last_result["variants"])
            out["metrics_published"] = self.last_result["metrics_published"]
            out["warnings"] = self.last_result["warnings"]
        if self.last_error:
            out["last_error"] = self.last_error
        return out
