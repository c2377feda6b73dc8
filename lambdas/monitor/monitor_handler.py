"""Scheduled prediction-monitoring Lambda (EventBridge schedule; the event's content is ignored).

Reads the last ``WINDOW_MINUTES`` of ``prediction_log`` / ``prediction_feedback`` in Redshift through the
Data API and publishes per-variant metrics (``monitor_job.run_monitor``) to CloudWatch. A failed or
timed-out query fails the invocation (it raises): a broken warehouse must never look like zero traffic. So
does a live model version whose baseline cannot be read (after the other metrics are published): its drift
alarms would otherwise see no data and stay quiet.

Environment: ``ENDPOINT_NAME``, ``MODEL_PACKAGE_GROUP``, ``WAREHOUSE_WORKGROUP`` or ``WAREHOUSE_CLUSTER``,
``WAREHOUSE_DATABASE``, ``WAREHOUSE_SECRET_ARN``, ``WINDOW_MINUTES`` (default 60), ``DRIFT_MIN_PREDICTIONS``
(fewest predictions of a variant in the window for its PSI; default ``monitor_job.DEFAULT_MIN_PREDICTIONS``),
``METRIC_NAMESPACE`` (default ``Trainserve/Predictions``), ``QUERY_TIMEOUT_SECONDS`` (default 120).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import boto3
import monitor_job
from warehouse_query import RedshiftDataQuery

logging.getLogger().setLevel(logging.INFO)


class ConfigurationError(RuntimeError):
    """An environment variable is missing or invalid; the message names it."""


def _required(env: dict, name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


def _positive_number(env: dict, name: str, default: str, kind: type) -> Any:
    raw = env.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name}={raw!r} is not a {kind.__name__}") from None
    if value <= 0:
        raise ConfigurationError(f"environment variable {name}={raw!r} must be > 0")
    return value


def settings(env: dict | None = None) -> dict:
    """The handler's settings from the environment, validated."""
    env = dict(os.environ if env is None else env)
    workgroup = env.get("WAREHOUSE_WORKGROUP", "").strip() or None
    cluster = env.get("WAREHOUSE_CLUSTER", "").strip() or None
    if bool(workgroup) == bool(cluster):
        raise ConfigurationError("set exactly one of WAREHOUSE_WORKGROUP or WAREHOUSE_CLUSTER")
    return {
        "endpoint_name": _required(env, "ENDPOINT_NAME"),
        "group": _required(env, "MODEL_PACKAGE_GROUP"),
        "workgroup": workgroup,
        "cluster": cluster,
        "database": _required(env, "WAREHOUSE_DATABASE"),
        "secret_arn": _required(env, "WAREHOUSE_SECRET_ARN"),
        "window_minutes": _positive_number(env, "WINDOW_MINUTES", "60", int),
        "min_predictions": _positive_number(
            env, "DRIFT_MIN_PREDICTIONS", str(monitor_job.DEFAULT_MIN_PREDICTIONS), int
        ),
        "namespace": env.get("METRIC_NAMESPACE", "").strip() or monitor_job.DEFAULT_NAMESPACE,
        "timeout_s": _positive_number(env, "QUERY_TIMEOUT_SECONDS", "120", float),
    }


def handler(event: dict, context: Any = None) -> dict:
    """Run the monitoring job once; returns its result (metrics per variant). Raises on any query failure."""
    s = settings()
    query = RedshiftDataQuery(
        boto3.client("redshift-data"),
        workgroup=s["workgroup"],
        cluster=s["cluster"],
        database=s["database"],
        secret_arn=s["secret_arn"],
        timeout_s=s["timeout_s"],
    )
    result = monitor_job.run_monitor(
        query,
        boto3.client("cloudwatch"),
        boto3.client("sagemaker"),
        boto3.client("s3"),
        endpoint_name=s["endpoint_name"],
        group=s["group"],
        window_minutes=s["window_minutes"],
        namespace=s["namespace"],
        min_predictions=s["min_predictions"],
    )
    logging.info(
        "published %d metrics for %d variant(s) of %s",
        result["metrics_published"],
        len(result["variants"]),
        s["endpoint_name"],
    )
    if result["drift_unavailable"]:
        # everything else is published; the drift alarms treat the missing PSI as not breaching, so the
        # invocation fails (retried, then the failure queue, and the monitor-errors alarm) instead of going quiet
        raise DriftUnavailable(
            "no drift metrics for model version(s) "
            + ", ".join(str(v) for v in result["drift_unavailable"])
            + ": "
            + "; ".join(w for w in result["warnings"] if w.startswith("no ScorePSI"))
        )
    return result


class DriftUnavailable(RuntimeError):
    """A live model version's drift could not be measured (its baseline could not be read)."""
