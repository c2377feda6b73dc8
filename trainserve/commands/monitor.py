"""``trainserve monitor run [--json]``: the prediction-monitoring job, once, on demand.

Locally the local cloud's monitoring component runs it now (``monitoring.request_run``): the same
``monitor_job.run_monitor`` against the DuckDB warehouse, publishing to the local CloudWatch, and the run
counts in ``trainserve local status`` with the alarms it evaluates, as a scheduled run does (if that component
is not running, the job runs in this process, and the alarms are evaluated for this output only). On AWS it
invokes the deployed monitor Lambda synchronously and prints what it returned; CloudWatch evaluates the alarms.
"""

from __future__ import annotations

import json
from typing import Any

import click

from trainserve.commands import options
from trainserve.console import UserError, console, print_json, step, table

RUN_TIMEOUT_SECONDS = 120.0


def _monitoring_component_running() -> bool:
    """Whether the running local cloud's status (``local status``: the snapshot of the live daemon) shows its
    monitoring component running."""
    from trainserve.commands.local import status_info
    from trainserve.target import read_local_state

    component = status_info(read_local_state())["components"].get("monitoring")
    return isinstance(component, dict) and "error" not in component and bool(component.get("running"))


def run_local(target: Any, window_minutes: int) -> dict:
    import monitor_job

    from trainserve.local.monitoring import LocalWarehouseQuery, drift_alarms, request_run
    from trainserve.target import state_dir

    if _monitoring_component_running():
        answer = request_run(state_dir(), window_minutes, timeout=RUN_TIMEOUT_SECONDS)
        if answer is None:
            raise UserError(
                f"the local cloud's monitoring component did not answer within {RUN_TIMEOUT_SECONDS:g} s "
                "(see trainserve local status)"
            )
        if "error" in answer:
            raise UserError(f"the monitoring job failed: {answer['error']}")
        return answer["result"]
    if not (target.warehouse or {}).get("path"):
        raise UserError("the local cloud reports no warehouse_path")
    result = monitor_job.run_monitor(
        LocalWarehouseQuery(target.warehouse["path"]),
        target.client("cloudwatch"),
        target.client("sagemaker"),
        target.client("s3"),
        endpoint_name=target.names.endpoint_name,
        group=target.names.model_package_group,
        window_minutes=window_minutes,
        min_predictions=target.config.drift_min_predictions,
    )
    result["alarms"] = drift_alarms(result, target.config)
    return result


def run_aws(target: Any) -> dict:
    resp = target.client("lambda").invoke(
        FunctionName=target.names.monitor_function, InvocationType="RequestResponse", Payload=b"{}"
    )
    body = resp["Payload"].read()
    try:
        payload = json.loads(body or b"null")
    except json.JSONDecodeError:
        payload = body.decode("utf-8", "replace")
    if resp.get("FunctionError"):
        msg = payload.get("errorMessage", payload) if isinstance(payload, dict) else payload
        kind = payload.get("errorType", "error") if isinstance(payload, dict) else "error"
        raise UserError(f"the monitor function {target.names.monitor_function} failed: {kind}: {msg}")
    if not isinstance(payload, dict):
        raise UserError(f"the monitor function returned {payload!r}, not the job's result")
    return payload


def _fmt(x: Any, spec: str) -> str:
    return "" if x is None else format(x, spec)


def _psi(r: dict, field: str) -> str:
    """A PSI cell: the value, or why there is none (``n < min``)."""
    if r.get(field) is not None:
        return format(r[field], ".3f")
    note = r.get("psi_note") or ""
    return note.split(":", 1)[0] if note.startswith("n < min") else ""


def _feature(r: dict) -> str:
    cell = _psi(r, "feature_psi")
    return f"{cell} ({r['feature_psi_feature']})" if r.get("feature_psi_feature") else cell


def print_result(result: dict) -> None:
    window = result.get("window_minutes")
    table(
        f"{result['endpoint_name']} {result['window_start']} .. {result['window_end']} → {result['namespace']}",
        [
            "variant",
            "version",
            f"requests (last {window} min)" if window else "requests",
            "positive rate",
            "score PSI",
            "feature PSI (feature)",
            "labelled",
            "online accuracy",
        ],
        [
            [
                r["variant_name"],
                r["model_version"],
                r["request_count"],
                _fmt(r["positive_rate"], ".1%"),
                _psi(r, "score_psi"),
                _feature(r),
                r["labelled_count"],
                _fmt(r["online_accuracy"], ".2%"),
            ]
            for r in result["variants"]
        ],
    )
    console.print(f"{result['metrics_published']} metric(s) published")
    for r in result["variants"]:
        if r.get("psi_note"):
            console.print(
                f"no PSI for {r['variant_name']} (model version {r['model_version']}): {r['psi_note']} "
                "(drift_min_predictions)"
            )
    for w in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")
    for a in result.get("alarms", []):
        console.print(f"[bold red]ALARM[/] {a['name']}: {a['reason']}")


@click.group()
def monitor() -> None:
    """The prediction-monitoring job (drift, positive rate, online accuracy per variant)."""


@monitor.command("run")
@options.local_option
@options.json_option
@click.option(
    "--window-minutes",
    type=click.IntRange(1, 10080),
    default=None,
    help="Local only: the window to read (default: monitoring_interval_minutes).",
)
def run(local: bool | None, as_json: bool, window_minutes: int | None) -> None:
    """Run the monitoring job once and print the metrics it published."""
    from warehouse_query import WarehouseQueryError

    target = options.resolve_target(local)
    try:
        with step("running the monitoring job"):
            if target.is_local:
                result = run_local(target, window_minutes or target.config.monitoring_interval_minutes)
            else:
                if window_minutes:
                    raise UserError(
                        "--window-minutes applies to the local cloud; on AWS the function's WINDOW_MINUTES"
                    )
                result = run_aws(target)
    except WarehouseQueryError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(result)
    else:
        print_result(result)
