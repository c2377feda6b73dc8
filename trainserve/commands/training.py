"""``trainserve train``: start the training pipeline (locally: run it, step by step).

With ``--json``, every run prints one JSON object on stdout, whatever its outcome, with the same keys
(``result_keys()``: a local run's ``TrainingResult``, ``status``, ``pipeline_execution_arn``, the pipeline
``parameters`` set, and a failure's ``step`` and ``error``) and the same ``status`` values locally and on AWS,
null where a value does not apply or cannot be known:

- ``status: registered`` (exit 0) with the model version, its package ARN and approval status, the metrics and
  the quality value and threshold; ``status: not_registered`` (exit 3), a model below the quality threshold,
  with its ``reason`` (the human message on stderr too); ``step`` and ``error`` null;
- ``status: failed``: the failed ``step`` and its ``error`` (exit 1, the message on stderr), what ran of it
  (``execution_id``, ``steps``, ``parameters``), ``registered`` false, the model's fields null;
  ``status: unknown`` for an AWS execution that cannot be followed (it may still be running: ``registered``
  null);
- AWS without ``--wait``: ``status: started``, the execution's id and ARN, the parameters; the rest null.

What is refused before anything is uploaded or started (a bad ``--hp``, a ``--data`` path that does not exist,
click's usage errors) prints no result, as every command's refusals: the error on stderr, exit 1 (2 for
click's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import re
import sys
import time
from dataclasses import fields
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
    was trained but not registered because it missed the quality threshold.

    \b
    With --json, every run prints one JSON object on stdout, with the same keys locally and on AWS
    with --wait (null where a value cannot be known). Its status:
      registered      exit 0: model_version, model_package_arn, approval_status, metrics,
                      quality_metric/value/threshold, artifacts, steps, pipeline_execution_arn
      not_registered  exit 3: trained, below the quality threshold (reason)
      failed          exit 1: the failed step and its error
      unknown         exit 1: AWS, the execution could not be followed (it may still be running)
      started         exit 0: AWS without --wait: execution_id, pipeline_execution_arn, parameters
    step and error are null unless the run failed; the model's fields are null unless it was trained.
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


def result_keys() -> tuple[str, ...]:
    """The keys of what ``--json`` prints for every run, whatever its ``status``, the same in both modes: a
    local run's result (``TrainingResult.as_json``: its fields and ``status``), the pipeline execution's ARN
    (null locally: no SageMaker execution exists, ``execution_id`` names the run), the pipeline
    ``parameters`` the run set (``[{"Name", "Value"}]``, as sent to StartPipelineExecution), and a failed
    run's ``step`` and ``error`` (null otherwise)."""
    from trainserve.local.training_runner import TrainingResult

    return (
        *(f.name for f in fields(TrainingResult)),
        "status",
        "pipeline_execution_arn",
        "parameters",
        "step",
        "error",
    )


def _result_json(**values: Any) -> dict[str, Any]:
    """A run's ``--json`` object: every ``result_keys()`` key, in that order, null unless given."""
    unknown = set(values) - set(result_keys())
    if unknown:
        raise ValueError(f"not result keys: {sorted(unknown)}")
    return {**dict.fromkeys(result_keys()), **values}


def step_keys() -> tuple[str, ...]:
    """The keys of each of a result's ``steps``, the same in both modes: a local run's ``StepReport``."""
    from trainserve.local.training_runner import StepReport

    return tuple(f.name for f in fields(StepReport))


# A result's ``artifacts`` (a local run's; null on AWS where it cannot be known).
ARTIFACT_KEYS = ("input_data", "model_data", "evaluation", "baseline", "inference_sourcedir")


def _failure(
    step: str | None,
    error: str,
    parameters: list[dict[str, str]],
    *,
    status: str = "failed",
    arn: str | None = None,
    steps: list[dict[str, Any]] | None = None,
    execution_id: str | None = None,
) -> dict[str, Any]:
    """A failed run's JSON (``result_keys()``): the step, the error and what ran; ``registered`` false (null
    for ``status: unknown``: the execution may still register a model); the model's fields null."""
    return _result_json(
        status=status,
        registered=False if status == "failed" else None,
        step=step,
        error=error,
        execution_id=execution_id or _execution_id(arn),
        pipeline_execution_arn=arn,
        parameters=parameters,
        steps=steps,
    )


def _execution_id(arn: str | None) -> str | None:
    """A pipeline execution's id: its ARN's last part (``.../pipeline/<name>/execution/<id>``)."""
    return arn.rsplit("/", 1)[-1] if arn else None


def _failed(as_json: bool, message: str, result: dict[str, Any]) -> UserError:
    """A run that failed: with ``--json`` its ``result`` goes to stdout now; the UserError returned, to raise,
    puts ``message`` on stderr and exits 1."""
    if as_json:
        print_json(result)
    return UserError(message)


def _train_local(target, estimator, hyperparameters, data, as_json: bool) -> None:
    from trainserve.local.training_runner import TrainingError, run_local_training

    parameters = _pipeline_parameters(estimator, hyperparameters, None)  # those an AWS run would send
    try:
        result = run_local_training(
            target,
            data_dir_or_uri=data,
            hyperparameters=hyperparameters,
            estimator=estimator,
            progress=_StepPrinter(),
        )
    except TrainingError as exc:
        # like the quality gate's result: a JSON object on stdout, and a non-zero exit; with what ran
        uploaded = next((s.detail for s in exc.steps if s.name == "Upload" and s.status == "Succeeded"), None)
        if data and uploaded:  # as on AWS, where --data becomes the InputData parameter
            parameters.append({"Name": "InputData", "Value": uploaded})
        steps = [dataclasses.asdict(s) for s in exc.steps] or None
        failure = _failure(exc.step, exc.detail, parameters, steps=steps, execution_id=exc.execution_id)
        raise _failed(as_json, str(exc), failure) from exc
    if as_json:
        if data:  # as on AWS, where --data becomes the InputData parameter
            parameters.append({"Name": "InputData", "Value": result.artifacts.get("input_data", "")})
        print_json(_result_json(**result.as_json(), pipeline_execution_arn=None, parameters=parameters))
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

    started = time.monotonic()
    sm = target.client("sagemaker")
    parameters = _pipeline_parameters(estimator, hyperparameters, None)  # checked before anything is uploaded
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
        raise _failed(as_json, str(exc), _failure(exc.step, exc.detail, parameters)) from exc
    if not as_json:
        err_console.print(f"started {target.names.pipeline_name}: {arn}")
    if not wait:
        if as_json:
            print_json(
                _result_json(
                    status="started",
                    execution_id=_execution_id(arn),
                    pipeline_execution_arn=arn,
                    parameters=parameters,
                )
            )
        return
    try:
        execution_status, raw = follow_execution(sm, arn, quiet=as_json)
    except (ClientError, BotoCoreError) as exc:
        error = f"cannot follow the execution: {aws_error(exc)}; it may still be running"
        raise _failed(
            as_json,
            f"pipeline execution {arn}: {error}",
            _failure(None, error, parameters, status="unknown", arn=arn),
        ) from exc
    steps = [_step_row(s) for s in raw]
    failed = next((s for s in steps if s["status"] == "Failed"), None)
    if execution_status == "Succeeded":
        out = _registered(target, sm, arn, parameters, raw, started)
    elif failed and failed["name"] == QUALITY_GATE_FAIL_STEP:
        # The model missed the quality threshold: not a failure of the run (as locally: exit 3).
        out = _not_registered(target, sm, arn, parameters, raw, started, failed["detail"])
    else:  # as a local run's failure says it: the step and its reason
        stopped = failed or next((s for s in steps if s["status"] == "Stopped"), None)
        error = (stopped or {}).get("detail") or _execution_failure(sm, arn, execution_status)
        out = _failure(stopped["name"] if stopped else None, error, parameters, arn=arn, steps=steps)
    if as_json:
        print_json(out)
        # the human message on stderr, as a local run's progress says it
        if out["status"] == "not_registered":
            err_console.print(f"[bold yellow]{out['reason']}[/]", highlight=False)
    else:
        table(
            "Pipeline steps",
            ["step", "type", "status", "reason"],
            [[s["name"], s["type"], s["status"], s["detail"]] for s in steps],
        )
        if out["status"] == "registered":
            _print_registered(target, out)
        elif out["status"] == "not_registered":
            console.print(f"[bold yellow]{out['reason']}[/]")
    if out["status"] == "not_registered":
        sys.exit(EXIT_NOT_REGISTERED)
    if out["status"] != "registered":
        raise UserError(f"pipeline execution {execution_status}: {arn}")


def _print_registered(target, out: dict[str, Any]) -> None:
    if out["metrics"]:
        console.print("metrics   " + "  ".join(f"{k} {v:.4f}" for k, v in out["metrics"].items()))
    version = out["model_version"]
    if version is None:
        console.print(
            f"[bold green]registered[/] in {target.names.model_package_group} ({out['seconds']:.0f} s)"
        )
        return
    console.print(
        f"[bold green]registered[/] {target.names.model_package_group} version [bold]{version}[/] "
        f"({out['approval_status'] or 'approval status unknown'}) in {out['seconds']:.0f} s; "
        f"approve with: trainserve models approve {version}"
    )


def _execution_failure(sm, arn: str, status: str) -> str:
    """Why execution ``arn`` ended with ``status`` when no step says it: its own FailureReason, if readable."""
    try:
        reason = sm.describe_pipeline_execution(PipelineExecutionArn=arn).get("FailureReason")
    except (ClientError, BotoCoreError):
        reason = None
    return reason or f"the pipeline execution {status}"


def _execution_result(
    target, sm, arn: str, parameters: list[dict[str, str]], raw: list[dict[str, Any]], started: float
) -> dict[str, Any]:
    """What a local run's result says that an AWS execution also tells, the rest null (``result_keys()``):
    the estimator, the hyperparameters the estimator uses and the quality threshold as the execution had them
    (its pipeline definition's defaults with the run's ``parameters``; without that definition, what the run
    set: the estimator or the configuration's, the hyperparameters given, no threshold)."""
    from training.pipeline_definition import HYPERPARAMETERS, DefinitionError, coerce_parameter
    from trainserve.local.training_runner import estimator_hyperparameters

    given = {p["Name"]: p["Value"] for p in parameters}
    values = _execution_parameters(sm, arn, given)
    if values is None:  # what the run set, typed as the definition would have them
        values = {}
        for _hp, param, kind, _default in HYPERPARAMETERS:
            if param in given:
                with contextlib.suppress(DefinitionError):
                    values[param] = coerce_parameter(param, kind, given[param])
        values["Estimator"] = given.get("Estimator") or target.config.estimator
        values["InputData"] = given.get("InputData")
    chosen = str(values.get("Estimator") or target.config.estimator)
    used = estimator_hyperparameters(chosen)
    return _result_json(
        execution_id=_execution_id(arn),
        estimator=chosen,
        hyperparameters={hp: values[p] for hp, p, _k, _d in HYPERPARAMETERS if hp in used and p in values},
        quality_metric=target.config.quality_metric,
        quality_threshold=_number(values.get("QualityThreshold")),
        artifacts={**dict.fromkeys(ARTIFACT_KEYS), "input_data": values.get("InputData") or None},
        steps=[_step_row(s) for s in raw],
        seconds=round(time.monotonic() - started, 2),
        pipeline_execution_arn=arn,
        parameters=parameters,
    )


def _execution_parameters(sm, arn: str, given: dict[str, str]) -> dict[str, Any] | None:
    """Execution ``arn``'s parameter values: its pipeline definition's defaults with ``given``; None when the
    definition cannot be read."""
    from training.pipeline_definition import DefinitionError, pipeline_parameters

    try:
        described = sm.describe_pipeline_definition_for_execution(PipelineExecutionArn=arn)
        return pipeline_parameters(json.loads(described["PipelineDefinition"]), given)
    except (ClientError, BotoCoreError, KeyError, TypeError, ValueError, DefinitionError):
        return None


def _registered(
    target, sm, arn: str, parameters: list[dict[str, str]], raw: list[dict[str, Any]], started: float
) -> dict[str, Any]:
    """A local run's ``registered`` result for an AWS execution that succeeded: the model package its
    RegisterModel step created (the step's ``Metadata.RegisterModel.Arn``), described (version, approval
    status, metrics and quality from its metadata); the metrics of the evaluation report when the package
    has none or cannot be read. What cannot be read is null, with a warning on stderr."""
    from trainserve.registry import version_from_description

    out = _execution_result(target, sm, arn, parameters, raw, started)
    out.update(status="registered", registered=True)
    artifacts = out["artifacts"]
    package_arn = _step_metadata(raw, "RegisterModel").get("Arn")
    out["model_package_arn"] = package_arn
    if package_arn:
        tail = package_arn.rsplit("/", 1)[-1]
        out["model_version"] = int(tail) if tail.isdigit() else None
        try:
            described = sm.describe_model_package(ModelPackageName=package_arn)
            version = version_from_description(described, target.client("s3"))
        except (ClientError, BotoCoreError, KeyError, ValueError) as exc:
            why = aws_error(exc) if isinstance(exc, (ClientError, BotoCoreError)) else repr(exc)
            err_console.print(f"[yellow]warning:[/] cannot describe model package {package_arn}: {why}")
        else:
            containers = (described.get("InferenceSpecification") or {}).get("Containers") or [{}]
            environment = containers[0].get("Environment") or {}
            out.update(
                model_version=version.version,
                approval_status=version.approval_status or None,
                metrics=version.metrics or None,
                estimator=version.estimator or out["estimator"],
                quality_metric=version.quality_metric or out["quality_metric"],
                quality_value=version.quality_value,
            )
            artifacts.update(
                model_data=version.model_data_url,
                evaluation=version.evaluation_uri,
                baseline=version.baseline_uri,
                inference_sourcedir=environment.get("SAGEMAKER_SUBMIT_DIRECTORY"),
            )
    else:
        err_console.print(
            f"[yellow]warning:[/] the execution succeeded but no step of it names the model package it "
            f"registered: {arn}"
        )
    if out["metrics"] is None or artifacts["evaluation"] is None:
        evaluation_uri, report = _evaluation_report(target, sm, raw)
        out["metrics"] = out["metrics"] or _metrics(report)
        _evaluation_artifacts(artifacts, evaluation_uri)
        if out["quality_value"] is None and out["metrics"]:
            out["quality_value"] = out["metrics"].get(out["quality_metric"])
    if artifacts["model_data"] is None:
        artifacts["model_data"] = _model_data(sm, raw)
    return out


def _not_registered(
    target,
    sm,
    arn: str,
    parameters: list[dict[str, str]],
    raw: list[dict[str, Any]],
    started: float,
    reason: str,
) -> dict[str, Any]:
    """A local run's ``not_registered`` result for an AWS execution that ended in the quality gate's Fail
    step: the metrics from its evaluation report (``evaluation.json``, where the Evaluate step wrote it) when
    that can be read, else null; the quality value and threshold as the Fail step's message states them (the
    threshold as the execution's parameters had it, when the message does not say it)."""
    out = _execution_result(target, sm, arn, parameters, raw, started)
    stated = _GATE_REASON.match(reason.strip())
    quality_metric = stated["metric"] if stated else out["quality_metric"]
    evaluation_uri, report = _evaluation_report(target, sm, raw)
    metrics = _metrics(report)
    quality_value = metrics.get(quality_metric) if metrics else None
    if quality_value is None and stated:
        quality_value = _number(stated["value"])
    threshold = _number(stated["threshold"]) if stated else None
    _evaluation_artifacts(out["artifacts"], evaluation_uri)
    out["artifacts"]["model_data"] = _model_data(sm, raw)
    out.update(
        status="not_registered",
        registered=False,
        reason=reason or "not registered: below the quality threshold",
        quality_metric=quality_metric,
        quality_threshold=threshold if threshold is not None else out["quality_threshold"],
        quality_value=quality_value,
        metrics=metrics,
    )
    return out


def _evaluation_artifacts(artifacts: dict[str, Any], evaluation_uri: str | None) -> None:
    """``evaluation`` and ``baseline`` (beside it, as the Evaluate step writes them) from the report's URI."""
    if evaluation_uri:
        artifacts["evaluation"] = artifacts.get("evaluation") or evaluation_uri
        artifacts["baseline"] = (
            artifacts.get("baseline") or f"{evaluation_uri.rsplit('/', 1)[0]}/baseline.json"
        )


def _model_data(sm, raw_steps: list[dict[str, Any]]) -> str | None:
    """The model artifact (``model.tar.gz``) of the execution's training job, or None when unreadable."""
    job_arn = _step_metadata(raw_steps, "TrainingJob").get("Arn")
    if not job_arn:
        return None
    try:
        job = sm.describe_training_job(TrainingJobName=job_arn.rsplit("/", 1)[-1])
        return (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    except (ClientError, BotoCoreError):
        return None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
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


def _evaluation_report(target, sm, raw_steps: list[dict[str, Any]]) -> tuple[str | None, Any]:
    """(URI, parsed JSON) of an execution's evaluation report: the Evaluate step's processing job (the step's
    metadata in ``raw_steps``, the execution's step listing), its output ``evaluation``, ``evaluation.json``
    in it; (None, None) when any of it cannot be read (no such step or job, no permission, not JSON)."""
    try:
        job_arn = None
        for s in raw_steps:
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


def _execution_steps(sm, arn: str) -> list[dict[str, Any]]:
    """Execution ``arn``'s steps as ListPipelineExecutionSteps gives them, in the order they started."""
    out: list[dict[str, Any]] = []
    paginator = sm.get_paginator("list_pipeline_execution_steps")
    for page in paginator.paginate(PipelineExecutionArn=arn, SortOrder="Ascending"):
        out.extend(page.get("PipelineExecutionSteps", []))
    return out


def _step_metadata(raw_steps: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The ``Metadata.<kind>`` of the first step that has one (``RegisterModel``: ``{"Arn": ...}``), or {}."""
    for s in raw_steps:
        found = (s.get("Metadata") or {}).get(kind)
        if isinstance(found, dict):
            return found
    return {}


# ListPipelineExecutionSteps names no step type: a step's type is the kind of its metadata (a step of type
# Training has ``Metadata.TrainingJob``, one of type Fail ``Metadata.Fail``...).
_STEP_TYPES = {
    "TrainingJob": "Training",
    "ProcessingJob": "Processing",
    "TransformJob": "Transform",
    "TuningJob": "Tuning",
    "AutoMLJob": "AutoML",
}


def _step_row(s: dict[str, Any]) -> dict[str, Any]:
    """One listed step as a local run reports one (``step_keys()``): name, type, status, seconds (null until
    it ended) and detail (its failure reason, else empty)."""
    metadata = s.get("Metadata") or {}
    kind = s.get("StepType") or next((_STEP_TYPES.get(k, k) for k in metadata), "")
    start, end = s.get("StartTime"), s.get("EndTime")
    seconds = round((end - start).total_seconds(), 2) if start and end else None
    fail = metadata.get("Fail") or {}
    row = {
        "name": s.get("StepName"),
        "type": kind,
        "status": s.get("StepStatus", ""),
        "seconds": seconds,
        "detail": s.get("FailureReason") or fail.get("ErrorMessage") or "",
    }
    return {k: row[k] for k in step_keys()}


def follow_execution(sm, arn: str, *, quiet: bool = False, poll_seconds: float = POLL_SECONDS):
    """Poll a pipeline execution until it ends, printing each step's status changes; (status, steps), the
    steps as ListPipelineExecutionSteps lists them at the end (``_step_row`` makes one a local run's report;
    their ``Metadata`` names the jobs and the registered package)."""
    seen: dict[str, str] = {}
    while True:
        status = sm.describe_pipeline_execution(PipelineExecutionArn=arn).get("PipelineExecutionStatus", "")
        raw = _execution_steps(sm, arn)
        for s in map(_step_row, raw):
            if seen.get(s["name"]) != s["status"]:
                seen[s["name"]] = s["status"]
                if not quiet:
                    mark = {"Succeeded": "[green]✓[/]", "Failed": "[red]✗[/]"}.get(s["status"], "·")
                    reason = f"  {s['detail']}" if s["detail"] else ""
                    err_console.print(f"{mark} {s['name']} ({s['type']}) {s['status']}{reason}")
        if status in TERMINAL_STATUSES:
            return status, raw
        time.sleep(poll_seconds)
