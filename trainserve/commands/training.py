"""``trainserve train``: start the training pipeline (locally: run it, step by step).

With ``--json``, every run prints one JSON object on stdout, whatever its outcome: the result (exit 0), a model
below the quality threshold (``status: not_registered``, exit 3) or a failure (``status: failed`` or the
execution's status, the failed ``step`` and its ``error``, exit 1), with the human message on stderr. What is
refused before anything is uploaded or started (a bad ``--hp``, a ``--data`` path that does not exist, click's
usage errors) prints no result, as every command's refusals: the error on stderr, exit 1 (2 for click's).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError

from trainserve.commands.options import json_option, local_option, resolve_target
from trainserve.console import UserError, aws_error, console, err_console, print_json, table

EXIT_NOT_REGISTERED = 3  # the run worked, but the model did not pass the quality gate
TERMINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
POLL_SECONDS = 10.0
QUALITY_GATE_FAIL_STEP = "QualityGateFailed"  # training/pipeline_definition.py's Fail step of the gate
EVALUATE_STEP = "Evaluate"  # the pipeline's step that writes evaluation.json (its output "evaluation")
START_STEP = "StartPipelineExecution"  # AWS: what a failure to start the execution names as its step
# The gate's Fail step's message (training/pipeline_definition.py): "not registered: <metric> <value> < threshold
# <threshold>".
_GATE_REASON = re.compile(r"^not registered: (?P<metric>\S+) (?P<value>\S+) < threshold (?P<threshold>\S+)$")


def parse_hyperparameters(items: tuple[str, ...]) -> dict[str, str]:
    """``("C=0.5", "max_iter=200")`` -> ``{"C": "0.5", "max_iter": "200"}``; a bad item names itself."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"--hp expects KEY=VALUE, got '{item}'")
        out[key.strip()] = value.strip()
    return out


def check_hyperparameters(hyperparameters: dict[str, str]) -> None:
    """Each hyperparameter is known, given once, of its type and in the range the training script accepts,
    before anything is uploaded or started; a bad one is named as the user wrote it (``--hp
    n_estimators=0``), not as the pipeline parameter it becomes."""
    from training.pipeline_definition import (
        HYPERPARAMETERS,
        DefinitionError,
        coerce_parameter,
        parameter_name_for,
    )

    by_param = {param: (name, kind) for name, param, kind, _ in HYPERPARAMETERS}
    given: dict[str, str] = {}
    for key, value in hyperparameters.items():
        try:
            name, kind = by_param[parameter_name_for(key)]
        except DefinitionError as exc:
            raise UserError(str(exc)) from None
        if name in given:
            raise UserError(f"--hp {given[name]} and --hp {key} both give {name}; nothing was started")
        given[name] = key
        try:
            typed = coerce_parameter(name, kind, value)
        except DefinitionError:
            wanted = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}[kind]
            raise UserError(f"--hp {key}={value}: {name} must be {wanted}; nothing was started") from None
        if kind == "Float" and not math.isfinite(typed):
            raise UserError(f"--hp {key}={value}: {name} must be a finite number; nothing was started")
        refusal = training_script_refusal(name, typed)
        if refusal:
            raise UserError(f"--hp {key}={value}: {refusal}; nothing was started")


def drop_ignored_hyperparameters(estimator: str, hyperparameters: dict[str, str]) -> dict[str, str]:
    """The hyperparameters ``estimator`` uses (training/train.py's table); a warning on stderr names the
    others, as the user wrote them, which the estimator would ignore."""
    from training.pipeline_definition import HYPERPARAMETERS, parameter_name_for
    from trainserve.local.training_runner import estimator_hyperparameters

    name_of = {param: name for name, param, _kind, _default in HYPERPARAMETERS}
    used = estimator_hyperparameters(estimator)
    kept: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in hyperparameters.items():
        if name_of[parameter_name_for(key)] in used:
            kept[key] = value
        else:
            ignored.append(f"--hp {key}={value}")
    if ignored:
        err_console.print(
            f"[yellow]warning:[/] {estimator} ignores {', '.join(ignored)} "
            f"(it uses {', '.join(used)}); not passed on",
            highlight=False,
        )
    return kept


def training_script_refusal(name: str, value: Any) -> str | None:
    """Why the training script (``training/train.py``, which the Train step runs with the hyperparameters as
    arguments) refuses ``name=value``, as ``"n_estimators must be >= 1"``; None if it takes it.

    The rules are the script's own: its argument parser runs here on this one value (the others at their
    defaults), so no range is repeated in the CLI. The parser reports a refusal as a usage error on stderr
    and exit status 2; that message, less the usage text and with the option written as the hyperparameter
    name, is the answer."""
    from training import train as train_script

    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            train_script.parse_args([f"--{name}={value}"])
    except SystemExit:
        lines = printed.getvalue().strip().splitlines()
        message = lines[-1].split(": error: ", 1)[-1] if lines else f"the training script refuses {name}"
        flag = "--" + name.replace("_", "-")
        return name + message[len(flag) :] if message.startswith(flag + " ") else message
    return None


class _StepPrinter:
    """The local runner's progress as lines on stderr: a spinner while a step runs, then ✓ / ✗ / –."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.status = None
        self.started: dict[str, float] = {}

    def __call__(self, step: str, state: str, detail: str) -> None:
        if self.quiet:
            return
        if state == "start":
            self.started[step] = time.monotonic()
            self._stop()
            self.status = err_console.status(f"{step} ({detail})")
            self.status.start()
            return
        self._stop()
        seconds = time.monotonic() - self.started.get(step, time.monotonic())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        if state == "done":
            err_console.print(f"[green]✓[/] {step} [dim]{seconds:.1f} s[/]  {detail}")
        elif state == "failed":
            err_console.print(f"[red]✗[/] {step} [dim]{seconds:.1f} s[/]  {detail}")
        else:
            err_console.print(f"[dim]– {step} skipped ({detail})[/]")

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


@click.command("train")
@local_option
@click.option(
    "--estimator",
    type=click.Choice(["logistic_regression", "random_forest", "gradient_boosting"]),
    default=None,
    help="Estimator (default: the configuration's estimator).",
)
@click.option(
    "--hp",
    "hp",
    multiple=True,
    metavar="KEY=VALUE",
    help="Hyperparameter (C, max_iter, n_estimators, max_depth, learning_rate, random_state); repeatable.",
)
@click.option(
    "--data",
    "data",
    default=None,
    help="Training data: a CSV file or folder (uploaded), or an s3:// prefix. Default: the sample data locally, "
    "the pipeline's InputData default on AWS.",
)
@click.option(
    "--wait", is_flag=True, help="AWS: follow the pipeline execution until it ends (local runs always wait)."
)
@json_option
def train(
    local: bool | None,
    estimator: str | None,
    hp: tuple[str, ...],
    data: str | None,
    wait: bool,
    as_json: bool,
):
    """Train, evaluate and (if good enough) register a model as PendingManualApproval.

    Locally the pipeline's own definition runs on this machine. Exit code 3 when the model
    was trained but not registered because it missed the quality threshold. With --json, every
    run prints one JSON object on stdout (a failed or not registered one too: its status says so).
    """
    from training.pipeline_definition import DefinitionError

    hyperparameters = parse_hyperparameters(hp)
    check_hyperparameters(hyperparameters)
    if data and not data.startswith("s3://") and not Path(data).exists():
        raise UserError(f"--data {data}: no such file or folder")
    target = resolve_target(local)
    hyperparameters = drop_ignored_hyperparameters(estimator or target.config.estimator, hyperparameters)
    try:
        if target.is_local:
            _train_local(target, estimator, hyperparameters, data, as_json)
        else:
            _train_aws(target, estimator, hyperparameters, data, wait, as_json)
    except DefinitionError as exc:
        raise UserError(str(exc)) from exc


def _failed(as_json: bool, message: str, result: dict[str, Any]) -> UserError:
    """A run that failed: with ``--json`` its ``result`` goes to stdout now; the UserError returned, to raise,
    puts ``message`` on stderr and exits 1."""
    if as_json:
        print_json(result)
    return UserError(message)


def _train_local(target, estimator, hyperparameters, data, as_json: bool) -> None:
    from trainserve.local.training_runner import TrainingError, run_local_training

    try:
        result = run_local_training(
            target,
            data_dir_or_uri=data,
            hyperparameters=hyperparameters,
            estimator=estimator,
            progress=_StepPrinter(),
        )
    except TrainingError as exc:
        # like the quality gate's result: a JSON object on stdout, and a non-zero exit
        raise _failed(as_json, str(exc), {"status": "failed", "step": exc.step, "error": exc.detail}) from exc
    if as_json:
        print_json(result.as_json())
    else:  # the result on stdout (the steps' progress went to stderr)
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        hps = ", ".join(f"{k}={v}" for k, v in result.hyperparameters.items())
        console.print(f"estimator {result.estimator} ({hps})")
        console.print(f"metrics   {metrics}")
        if result.registered:
            console.print(
                f"[bold green]registered[/] {target.names.model_package_group} version "
                f"[bold]{result.model_version}[/] ({result.approval_status}) in {result.seconds:.0f} s; "
                f"approve with: trainserve models approve {result.model_version}"
            )
        else:
            console.print(f"[bold yellow]{result.reason}[/] ({result.seconds:.0f} s)")
    if not result.registered:
        sys.exit(EXIT_NOT_REGISTERED)


def _pipeline_parameters(estimator, hyperparameters, input_uri) -> list[dict[str, str]]:
    from trainserve.local.training_runner import parameter_overrides

    overrides: dict[str, Any] = parameter_overrides(estimator, hyperparameters)
    if input_uri:
        overrides["InputData"] = input_uri
    return [{"Name": k, "Value": str(v)} for k, v in overrides.items()]


def _upload_data(target, data: str) -> str:
    """The ``InputData`` URI of ``--data``: an s3:// prefix as it is, else its CSV files uploaded to the data
    bucket; what cannot be uploaded is a ``TrainingError`` of the step Upload (as a local run's)."""
    from trainserve.local.training_runner import UPLOAD_PREFIX, TrainingError

    if data.startswith("s3://"):
        return data
    path = Path(data)
    if path.is_file() and path.suffix != ".csv":
        raise TrainingError("Upload", f"--data {data}: not a .csv file (only files ending in .csv are read)")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.csv") if p.is_file())
    if not files:
        raise TrainingError("Upload", f"--data {data}: no CSV files (only files ending in .csv are read)")
    # Not under input/ (the pipeline's default InputData, read whole): an upload must not join later default runs.
    prefix = f"{UPLOAD_PREFIX}/{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    s3 = target.client("s3")
    try:
        for f in files:
            rel = f.name if path.is_file() else f.relative_to(path).as_posix()
            s3.upload_file(str(f), target.names.data_bucket, f"{prefix}/{rel}")
    except (ClientError, BotoCoreError) as exc:
        raise TrainingError("Upload", aws_error(exc)) from exc
    except OSError as exc:
        raise TrainingError("Upload", str(exc)) from exc
    return f"s3://{target.names.data_bucket}/{prefix}"


def _train_aws(target, estimator, hyperparameters, data, wait: bool, as_json: bool) -> None:
    from trainserve.local.training_runner import TrainingError

    sm = target.client("sagemaker")
    parameters = _pipeline_parameters(estimator, hyperparameters, None)  # checked before anything is uploaded
    out: dict[str, Any] = {"pipeline_execution_arn": None, "parameters": parameters}
    try:
        if data:
            parameters.append({"Name": "InputData", "Value": _upload_data(target, data)})
        kwargs: dict[str, Any] = {
            "PipelineName": target.names.pipeline_name,
            "PipelineExecutionDescription": "started by trainserve train",
        }
        if parameters:
            kwargs["PipelineParameters"] = parameters
        try:
            arn = sm.start_pipeline_execution(**kwargs)["PipelineExecutionArn"]
        except (ClientError, BotoCoreError) as exc:
            raise TrainingError(START_STEP, aws_error(exc)) from exc
    except TrainingError as exc:  # as a local run's failure: the step and the error
        raise _failed(
            as_json, str(exc), {**out, "status": "failed", "step": exc.step, "error": exc.detail}
        ) from exc
    out["pipeline_execution_arn"] = arn
    if not as_json:
        err_console.print(f"started {target.names.pipeline_name}: {arn}")
    gate_failed = False
    if wait:
        try:
            status, steps = follow_execution(sm, arn, quiet=as_json)
        except (ClientError, BotoCoreError) as exc:
            error = f"cannot follow the execution: {aws_error(exc)}; it may still be running"
            raise _failed(
                as_json, f"pipeline execution {arn}: {error}", {**out, "status": "unknown", "error": error}
            ) from exc
        out.update(status=status, steps=steps)
        failed = next((s for s in steps if s["status"] == "Failed"), None)
        if failed and failed["name"] == QUALITY_GATE_FAIL_STEP:
            # The model missed the quality threshold: not a failure of the run (as locally: exit 3).
            gate_failed = True
            out.update(_not_registered(target, sm, arn, estimator, hyperparameters, failed.get("reason", "")))
        elif failed:  # as a local run's failure says it
            out.update(step=failed["name"], error=failed.get("reason", ""))
    if as_json:
        print_json(out)
        if gate_failed:  # the human message on stderr, as a local run's progress says it
            err_console.print(f"[bold yellow]{out['reason']}[/]", highlight=False)
    elif wait:
        table(
            "Pipeline steps",
            ["step", "type", "status", "reason"],
            [[s["name"], s["type"], s["status"], s.get("reason", "")] for s in out["steps"]],
        )
        if gate_failed:
            console.print(f"[bold yellow]{out['reason']}[/]")
    if gate_failed:
        sys.exit(EXIT_NOT_REGISTERED)
    if wait and out["status"] != "Succeeded":
        raise UserError(f"pipeline execution {out['status']}: {arn}")


def _not_registered(target, sm, arn: str, estimator, hyperparameters, reason: str) -> dict[str, Any]:
    """A local run's ``not_registered`` fields for an AWS execution that ended in the quality gate's Fail
    step: the metrics from its evaluation report (``evaluation.json``, where the Evaluate step wrote it) when
    that can be read, else null; the quality value and threshold as the Fail step's message states them."""
    from training.pipeline_definition import HYPERPARAMETERS, parameter_name_for
    from trainserve.local.training_runner import estimator_hyperparameters

    chosen = estimator or target.config.estimator
    name_of = {param: name for name, param, _kind, _default in HYPERPARAMETERS}
    given = {name_of[parameter_name_for(k)]: v for k, v in hyperparameters.items()}
    stated = _GATE_REASON.match(reason.strip())
    quality_metric = stated["metric"] if stated else target.config.quality_metric
    evaluation_uri, report = _evaluation_report(target, sm, arn)
    metrics = _metrics(report)
    quality_value = metrics.get(quality_metric) if metrics else None
    if quality_value is None and stated:
        quality_value = _float(stated["value"])
    return {
        "status": "not_registered",
        "registered": False,
        "reason": reason or "not registered: below the quality threshold",
        "estimator": chosen,
        "hyperparameters": {k: given[k] for k in estimator_hyperparameters(chosen) if k in given},
        "quality_metric": quality_metric,
        "quality_threshold": _float(stated["threshold"]) if stated else None,
        "quality_value": quality_value,
        "metrics": metrics,
        "model_package_arn": None,
        "model_version": None,
        "approval_status": None,
        "artifacts": {"evaluation": evaluation_uri} if evaluation_uri else {},
    }


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _metrics(report: Any) -> dict[str, float] | None:
    """An evaluation report's ``metrics`` (name -> number); None when it has none that reads as numbers."""
    raw = report.get("metrics") if isinstance(report, dict) else None
    if not isinstance(raw, dict) or not raw:
        return None
    try:
        return {str(k): float(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        return None


def _evaluation_report(target, sm, arn: str) -> tuple[str | None, Any]:
    """(URI, parsed JSON) of execution ``arn``'s evaluation report: the Evaluate step's processing job (the
    step's metadata), its output ``evaluation``, ``evaluation.json`` in it; (None, None) when any of it cannot
    be read (no such step or job, no permission, not JSON)."""
    try:
        job_arn = None
        for page in sm.get_paginator("list_pipeline_execution_steps").paginate(PipelineExecutionArn=arn):
            for s in page.get("PipelineExecutionSteps", []):
                if s.get("StepName") == EVALUATE_STEP:
                    job_arn = ((s.get("Metadata") or {}).get("ProcessingJob") or {}).get("Arn")
        if not job_arn:
            return None, None
        job = sm.describe_processing_job(ProcessingJobName=job_arn.rsplit("/", 1)[-1])
        outputs = (job.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        prefix = next(o["S3Output"]["S3Uri"] for o in outputs if o.get("OutputName") == "evaluation")
        uri = f"{prefix.rstrip('/')}/evaluation.json"
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        body = target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        return uri, json.loads(body)
    except (ClientError, BotoCoreError, StopIteration, KeyError, TypeError, AttributeError, ValueError):
        return None, None


def _step_rows(sm, arn: str) -> list[dict[str, Any]]:
    rows = []
    paginator = sm.get_paginator("list_pipeline_execution_steps")
    for page in paginator.paginate(PipelineExecutionArn=arn, SortOrder="Ascending"):
        for s in page.get("PipelineExecutionSteps", []):
            rows.append(
                {
                    "name": s.get("StepName"),
                    "type": s.get("StepType", ""),
                    "status": s.get("StepStatus", ""),
                    "reason": s.get("FailureReason", ""),
                }
            )
    return rows


def follow_execution(sm, arn: str, *, quiet: bool = False, poll_seconds: float = POLL_SECONDS):
    """Poll a pipeline execution until it ends, printing each step's status changes; (status, steps)."""
    seen: dict[str, str] = {}
    while True:
        status = sm.describe_pipeline_execution(PipelineExecutionArn=arn).get("PipelineExecutionStatus", "")
        steps = _step_rows(sm, arn)
        for s in steps:
            if seen.get(s["name"]) != s["status"]:
                seen[s["name"]] = s["status"]
                if not quiet:
                    mark = {"Succeeded": "[green]✓[/]", "Failed": "[red]✗[/]"}.get(s["status"], "·")
                    reason = f"  {s['reason']}" if s["reason"] else ""
                    err_console.print(f"{mark} {s['name']} ({s['type']}) {s['status']}{reason}")
        if status in TERMINAL_STATUSES:
            return status, steps
        time.sleep(poll_seconds)
