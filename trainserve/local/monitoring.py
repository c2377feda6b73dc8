"""The monitoring schedule of the local cloud: the same monitoring job the Lambda runs on AWS, every
``monitoring_interval_minutes`` (and on demand), against the local DuckDB warehouse, publishing to the
local CloudWatch (moto). moto stores alarms but never evaluates them, so this component evaluates the
monitoring stack's alarms on these signals itself after each run: it shows breached ones in
``status()["alarms"]`` and sets the state of the alarms of the same names in the local CloudWatch
(``SetAlarmState``, on a change of state, as CloudWatch does; ``resources.local_alarms`` creates them), so
``DescribeAlarms`` from any AWS SDK shows the state and its reason:

- ``{project}-prediction-drift``: the highest ScorePSI of the last run above ``drift_psi_threshold``;
- ``{project}-feature-drift``: the highest FeaturePSI of the last run above ``feature_psi_threshold``; a
  variant below ``drift_min_predictions`` has neither PSI (the job says ``n < min``): missing data, which
  does not breach, as on AWS;
- ``{project}-endpoint-5xx``: the 5XX rate of the endpoint since the previous run above
  ``error_rate_alarm``. On AWS the alarm reads SageMaker's ``Invocation5XXErrors``: answers of the endpoint,
  never the proxy's own 503s (its kill switch). Locally the counts come from ``error_counts`` when given (a
  callable returning cumulative ``{"requests": n, "errors": m}``), else from the local SageMaker runtime's
  counters in the daemon's ``status.json`` (``components.runtime``: its invocations of this endpoint, and
  its ``ModelError`` / ``InternalFailure`` / ``ServiceUnavailable`` answers as the 5XX), read from a
  snapshot written after the run began, so the last seconds before a run count; else from the
  ``AWS/SageMaker`` ``Invocations`` / ``Invocation5XXErrors`` metrics of the endpoint in the local
  CloudWatch; with none of them the rate is not evaluated. Differences from AWS: the local runtime does not
  tell a model's 4xx answers from its 5xx (both are ``ModelError``), so every model error counts; a model
  server that fails to start counts one ``ServiceUnavailable`` per retry; the rate is over the whole time
  since the previous run, not two 5-minute periods.

A failed job raises the local-only ``{project}-monitoring-job`` alarm (status only; on AWS the Lambda's own
errors show in its metrics) and leaves the drift alarms without data (OK).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import monitor_job
from warehouse_query import DuckDBQuery, WarehouseQueryError

from trainserve.local.component import read_message, request_and_wait, write_token
from trainserve.local.resources import (
    drift_alarm_name,
    endpoint_5xx_alarm_name,
    ensure_alarms,
    feature_drift_alarm_name,
)

log = logging.getLogger(__name__)

RUN_REQUEST = "monitor.run"  # in the state dir: {"token", "window_minutes"}, written by request_run()
RUN_DONE = "monitor.done"  # the component's answer: {"token", "result"} or {"token", "error"}
REQUEST_POLL_SECONDS = 0.2
STATUS_FILE = "status.json"  # the daemon's snapshot of every component's status (daemon.STATUS_FILE)
# how long a run waits for a status snapshot written after it began (the daemon writes one every 2 s)
STATUS_WAIT_SECONDS = 5.0
# the local runtime's error codes that SageMaker would count in Invocation5XXErrors
SERVER_ERROR_CODES = ("ModelError", "InternalFailure", "ServiceUnavailable")


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


def alarm(name: str, reason: str, state: str = "ALARM") -> dict[str, str]:
    return {"name": name, "state": state, "reason": reason}


def _psi_evaluation(result: dict, field: str, metric: str, threshold: float, name: str) -> dict[str, str]:
    """The state of a drift alarm on ``field`` (``score_psi`` / ``feature_psi``) of the run's variants: ALARM
    naming the worst variant above ``threshold``, else OK saying why (below it, or no datapoint)."""
    variants = result.get("variants", [])
    scored = [r for r in variants if r.get(field) is not None]
    breached = [r for r in scored if r[field] > threshold]
    if breached:
        worst = max(breached, key=lambda r: r[field])
        named = field == "feature_psi" and worst.get("feature_psi_feature")
        feature = f", feature {worst['feature_psi_feature']}" if named else ""
        others = f" (+{len(breached) - 1} more)" if len(breached) > 1 else ""
        return alarm(
            name,
            f"{metric} {worst[field]:.3f} > {threshold:g} on {worst['variant_name']} "
            f"(model version {worst['model_version']}{feature}){others}",
        )
    if scored:
        top = max(scored, key=lambda r: r[field])
        return alarm(
            name,
            f"{metric} at most {top[field]:.3f} <= {threshold:g} ({top['variant_name']})",
            "OK",
        )
    notes = [f"{r['variant_name']}: {r['psi_note']}" for r in variants if r.get("psi_note")]
    why = (
        "; ".join(notes) if notes else ("no variant has one" if variants else "no predictions in the window")
    )
    return alarm(name, f"no {metric} datapoint ({why}): missing data is not breaching", "OK")


def drift_evaluations(result: dict, cfg: Any) -> list[dict[str, str]]:
    """The drift and feature-drift alarms' states after a run (``ALARM`` or ``OK``, with the reason)."""
    return [
        _psi_evaluation(result, "score_psi", "ScorePSI", cfg.drift_psi_threshold, drift_alarm_name(cfg)),
        _psi_evaluation(
            result, "feature_psi", "FeaturePSI", cfg.feature_psi_threshold, feature_drift_alarm_name(cfg)
        ),
    ]


def drift_alarms(result: dict, cfg: Any) -> list[dict[str, str]]:
    """The breached drift alarms of a run (the score and feature drift alarms above their thresholds)."""
    return [a for a in drift_evaluations(result, cfg) if a["state"] == "ALARM"]


def error_rate_evaluation(rate: float | None, requests: int, threshold: float, name: str) -> dict[str, str]:
    if rate is None or requests == 0:
        return alarm(
            name, "no endpoint invocations since the previous run: missing data is not breaching", "OK"
        )
    if rate <= threshold:
        return alarm(name, f"5XX rate {rate:.1%} <= {threshold:.1%} over {requests} requests", "OK")
    return alarm(name, f"5XX rate {rate:.1%} > {threshold:.1%} over {requests} requests")


class MonitoringComponent:
    """Local cloud component: runs the monitoring job on a schedule; ``run_now()`` runs it at once."""

    name = "monitoring"

    def __init__(
        self,
        interval_s: float | None = None,
        error_counts: Callable[[], dict[str, int]] | None = None,
        query: Any = None,
        status_wait_s: float = STATUS_WAIT_SECONDS,
    ) -> None:
        self.interval_s = interval_s
        self.error_counts = error_counts
        self.query = query
        self.status_wait_s = status_wait_s
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
        # the alarms whose state the runs set (the daemon's base resources made them already: a no-op then)
        ensure_alarms(self._clients["cloudwatch"], ctx.config, ctx.names)
        self._last_counts = self._counts(None)
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

    def _daemon_status(self, since: float | None) -> dict | None:
        """The daemon's ``status.json``; with ``since`` (a ``time.time()``), one written at or after it when
        it holds the runtime's counters (waiting up to ``status_wait_s`` for the daemon's next snapshot), so
        that a run counts the errors of its last seconds. A snapshot of another process is not this cloud's."""
        path = self._ctx.state_dir / STATUS_FILE
        deadline = time.monotonic() + self.status_wait_s
        while True:
            try:
                written = path.stat().st_mtime
                status = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            if not isinstance(status, dict) or status.get("pid", os.getpid()) != os.getpid():
                return None
            runtime = (status.get("components") or {}).get("runtime")
            if since is None or not isinstance(runtime, dict) or written >= since:
                return status
            if time.monotonic() >= deadline:
                return status
            time.sleep(0.05)

    def _runtime_counts(self, since: float | None) -> dict[str, int] | None:
        """The local SageMaker runtime's cumulative counts for this endpoint, as SageMaker's Invocations and
        Invocation5XXErrors would count them: ``{"requests": invocations + 5XX answers, "errors": 5XX}``."""
        status = self._daemon_status(since)
        try:
            runtime = status["components"]["runtime"] if status else None
            if not isinstance(runtime, dict) or "error" in runtime:
                return None
            endpoint = self._ctx.names.endpoint_name
            ok = sum(
                int(n)
                for key, n in (runtime.get("invocations") or {}).items()
                if key.partition("/")[0] == endpoint
            )
            codes = runtime.get("errors") or {}
            errors = sum(int(codes.get(code, 0)) for code in SERVER_ERROR_CODES)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return {"requests": ok + errors, "errors": errors}

    def _counts(self, since: float | None) -> dict[str, int] | None:
        return self.error_counts() if self.error_counts is not None else self._runtime_counts(since)

    def _error_rate(self, since: float | None = None) -> tuple[float | None, int]:
        now = self._counts(since)
        if now is not None:
            before = self._last_counts or {"requests": 0, "errors": 0}
            self._last_counts = now
            requests = int(now.get("requests", 0)) - int(before.get("requests", 0))
            errors = int(now.get("errors", 0)) - int(before.get("errors", 0))
            if requests < 0 or errors < 0:  # the counters restarted (a new runtime): all of now is new
                requests, errors = int(now.get("requests", 0)), int(now.get("errors", 0))
            return (errors / requests if requests > 0 else None), max(requests, 0)
        cw = self._clients["cloudwatch"]
        start, end = (
            self._last_cw_check or datetime.now(UTC) - timedelta(seconds=self.interval_s or 0),
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

    def _set_alarm_states(self, evaluations: list[dict[str, str]]) -> None:
        """Set the local CloudWatch alarms to the evaluated states, where the state changes (as CloudWatch
        records a state and its reason at a transition). A failure costs the record, never the run."""
        try:
            cw = self._clients["cloudwatch"]
            current = {
                a["AlarmName"]: a["StateValue"]
                for a in cw.describe_alarms(AlarmNames=[e["name"] for e in evaluations])["MetricAlarms"]
            }
            for e in evaluations:
                if e["name"] in current and current[e["name"]] != e["state"]:
                    cw.set_alarm_state(
                        AlarmName=e["name"], StateValue=e["state"], StateReason=e["reason"][:1023]
                    )
        except Exception as exc:  # noqa: BLE001 - the local CloudWatch's record is secondary to the run
            log.warning("could not set the local CloudWatch alarm states: %s", exc)

    def run_now(self, window_minutes: int | None = None) -> dict:
        """Run the job once (window: ``monitoring_interval_minutes``), publish, evaluate the alarms."""
        if self._ctx is None:
            raise RuntimeError("MonitoringComponent.start(ctx) first")
        cfg, names = self._ctx.config, self._ctx.names
        with self._run_lock:
            began = time.time()
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
                    min_predictions=cfg.drift_min_predictions,
                )
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.alarms = [
                    alarm(f"{cfg.project_name}-monitoring-job", f"the monitoring job failed: {exc}")
                ]
                reason = "no data: the monitoring job failed; missing data is not breaching"
                self._set_alarm_states(
                    [
                        alarm(drift_alarm_name(cfg), reason, "OK"),
                        alarm(feature_drift_alarm_name(cfg), reason, "OK"),
                    ]
                )
                if self._ctx.log:
                    self._ctx.log.warning("monitoring job failed: %s", self.last_error)
                raise
            self.last_error = None
            rate, requests = self._error_rate(began)
            result["error_rate"] = rate
            evaluations = drift_evaluations(result, cfg) + [
                error_rate_evaluation(rate, requests, cfg.error_rate_alarm, endpoint_5xx_alarm_name(cfg))
            ]
            self._set_alarm_states(evaluations)
            self.alarms = [e for e in evaluations if e["state"] == "ALARM"]
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
