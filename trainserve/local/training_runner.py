"""Run the training pipeline on this machine: the same definition, scripts and contracts as on AWS.

``run_local_training(target, ...)`` builds the pipeline definition with ``training.pipeline_definition``
(the one the training stack deploys), then executes its steps in dependency order:

- **Processing** (Preprocess, Evaluate): the job's S3 inputs are downloaded into an ``/opt/ml/processing``-
  style tree under a work folder, the container entrypoint runs with this Python (paths under ``/opt/ml``
  mapped into the tree), and each output folder is uploaded to its S3 URI; property files are read back.
- **Training**: the SageMaker training toolkit (``sagemaker_training``) runs ``train.py`` in script mode
  from an ``/opt/ml``-style tree (``SAGEMAKER_BASE_DIR``: ``input/config/{hyperparameters,resourceconfig,
  inputdataconfig}.json``, ``input/data/<channel>``); ``model/`` is packed into ``model.tar.gz`` and uploaded
  where SageMaker would put it (``<S3OutputPath>/<job>/output/model.tar.gz``). The source dir tarball is
  downloaded from S3 first and handed to the toolkit as a local file.
- **Condition**: evaluated against the property files (the quality gate); the chosen branch runs.
- **Fail**: the run ends with the step's message (e.g. ``not registered: roc_auc 0.81 < threshold 0.9``).
- **RegisterModel**: ``CreateModelPackage`` with the resolved arguments (the group is created if missing).

S3 and the registry are reached through ``target.client(...)`` (the local cloud's moto server).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from stacks.config import ESTIMATORS
from training import pipeline_definition as pd_
from training.packaging import make_model_tarball, make_sourcedir_tarball
from trainserve import PROJECT_ROOT
from trainserve.registry import register_model_package
from trainserve.target import LOCAL_ACCOUNT, Target

TRAINING_DIR = PROJECT_ROOT / "training"
INFERENCE_DIR = PROJECT_ROOT / "inference"
UPLOAD_PREFIX = (
    "training-data"  # uploaded data sets, one folder per run (not under the default InputData input/)
)
PIPELINE_PREFIX = "pipeline"  # same prefix as the training stack's artifacts_s3_prefix
CODE_PREFIX = "code"
STEP_TIMEOUT_SECONDS = 900

Progress = Callable[[str, str, str], None]  # (step name, state: start|done|skipped|failed, detail)


class TrainingError(RuntimeError):
    """A step failed (bad data, a script error, an AWS error); the message names the step and the cause."""

    def __init__(self, step: str, message: str):
        super().__init__(f"step {step} failed: {message}")
        self.step = step
        self.detail = message
        # set by run_local_training: the run's id and the steps it reported (the failed one last)
        self.execution_id: str | None = None
        self.steps: list[StepReport] = []


@dataclass
class StepReport:
    name: str
    type: str
    status: str  # Succeeded | Failed | Skipped
    seconds: float
    detail: str = ""


@dataclass
class TrainingResult:
    """What one local pipeline execution did."""

    execution_id: str
    registered: bool
    estimator: str
    hyperparameters: dict[str, Any]  # those the estimator uses (estimator_hyperparameters)
    quality_metric: str
    quality_threshold: float
    quality_value: float | None
    metrics: dict[str, float]
    model_package_arn: str | None = None
    model_version: int | None = None
    approval_status: str | None = None
    reason: str | None = None  # why it was not registered
    artifacts: dict[str, str] = field(default_factory=dict)
    steps: list[StepReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "registered" if self.registered else "not_registered"

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status
        return out


def _noop(step: str, state: str, detail: str) -> None:  # noqa: ARG001
    return None


@lru_cache(maxsize=8)
def sklearn_image_uri(region: str, version: str = "1.2-1", scope: str = "inference") -> str:
    """The SageMaker scikit-learn image of ``region`` (offline, no credentials).

    Reads the SageMaker Python SDK's own image table (``sagemaker/core/image_uri_config/sklearn.json``) —
    importing ``sagemaker.core`` to call ``image_uris.retrieve`` costs seconds; that is the fallback when the
    table is not where expected. ``tests/training/test_training_runner.py`` pins the expected URIs.
    """
    import importlib.util

    spec = importlib.util.find_spec("sagemaker")
    for root in list(spec.submodule_search_locations or []) if spec else []:
        table_file = Path(root) / "core" / "image_uri_config" / "sklearn.json"
        if table_file.exists():
            entry = json.loads(table_file.read_text())[scope]["versions"][version]
            account = entry["registries"][region]
            domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
            return f"{account}.dkr.ecr.{region}.{domain}/{entry['repository']}:{version}-cpu-py3"
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        "sklearn",
        region=region,
        version=version,
        py_version="py3",
        instance_type="ml.m5.large",
        image_scope=scope,
    )


def _split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class _LocalExecution:
    """One execution of a pipeline definition against a target's S3 and registry."""

    def __init__(self, target: Target, work_dir: Path, progress: Progress):
        self.target = target
        self.work = work_dir
        self.progress = progress
        self.s3 = target.client("s3")
        self.sm = target.client("sagemaker")
        self.reports: list[StepReport] = []
        self.failure: str | None = None

    # -- S3 helpers ------------------------------------------------------------------------------------
    def ensure_bucket(self, bucket: str) -> None:
        try:
            self.s3.head_bucket(Bucket=bucket)
        except self.s3.exceptions.ClientError:
            if not self.target.is_local:
                raise
            self.s3.create_bucket(Bucket=bucket)

    def upload_file(self, path: Path, uri: str) -> str:
        bucket, key = _split_s3(uri)
        self.s3.upload_file(str(path), bucket, key)
        return uri

    def upload_dir(self, folder: Path, uri: str) -> None:
        bucket, key = _split_s3(uri.rstrip("/"))
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            self.s3.upload_file(str(path), bucket, f"{key}/{rel}" if key else rel)

    def download(self, uri: str, dest: Path) -> int:
        """Download one object, or every object under a prefix, into ``dest``; return the file count."""
        bucket, key = _split_s3(uri)
        dest.mkdir(parents=True, exist_ok=True)
        count = 0
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(key) :].lstrip("/")
                if obj["Key"].endswith("/"):
                    continue
                if not rel:
                    rel = obj["Key"].rsplit("/", 1)[-1]
                elif key and not key.endswith("/") and not obj["Key"][len(key) :].startswith("/"):
                    continue  # "input/data" must not match "input/data2/x.csv"
                target_path = dest / rel
                target_path.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, obj["Key"], str(target_path))
                count += 1
        if count == 0:
            raise FileNotFoundError(f"nothing at {uri}")
        return count

    # -- steps -----------------------------------------------------------------------------------------
    def run_step(self, step: dict, ctx: pd_.ExecutionContext) -> bool:
        """Run one step (and a Condition's chosen branch); False when the execution must stop."""
        name, kind = step["Name"], step["Type"]
        self.progress(name, "start", kind)
        started = time.monotonic()
        try:
            runner = {
                "Processing": self._processing,
                "Training": self._training,
                "Condition": self._condition,
                "Fail": self._fail,
                "RegisterModel": self._register,
            }.get(kind)
            if runner is None:
                raise TrainingError(name, f"step type {kind} is not supported locally")
            detail, keep_going = runner(step, ctx)
        except TrainingError as exc:
            self._report(name, kind, "Failed", started, exc.detail)
            raise
        except (pd_.DefinitionError, FileNotFoundError, ValueError) as exc:
            self._report(name, kind, "Failed", started, str(exc))
            raise TrainingError(name, str(exc)) from exc
        except (ClientError, BotoCoreError) as exc:
            self._report(name, kind, "Failed", started, str(exc))
            raise TrainingError(name, str(exc)) from exc
        self._report(name, kind, "Failed" if kind == "Fail" else "Succeeded", started, detail)
        if kind == "Condition":
            branch = "IfSteps" if ctx.properties[name]["Outcome"] else "ElseSteps"
            other = "ElseSteps" if branch == "IfSteps" else "IfSteps"
            for nested in step["Arguments"].get(other, []):
                self.reports.append(
                    StepReport(nested["Name"], nested["Type"], "Skipped", 0.0, f"{name} chose {branch}")
                )
                self.progress(nested["Name"], "skipped", f"{name}: {branch}")
            for nested in step["Arguments"].get(branch, []):
                if not self.run_step(nested, ctx):
                    return False
        return keep_going

    def _report(self, name: str, kind: str, status: str, started: float, detail: str) -> None:
        self.reports.append(StepReport(name, kind, status, round(time.monotonic() - started, 2), detail))
        state = {"Succeeded": "done", "Failed": "failed"}.get(status, "skipped")
        self.progress(name, state, detail)

    def _map_path(self, root: Path, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("/opt/ml/"):
            return str(root / value.lstrip("/"))
        return value

    def _run(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> str:
        full_env = {**os.environ, **env}
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=STEP_TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            raise TrainingError(name, f"timed out after {STEP_TIMEOUT_SECONDS} s") from None
        log = self.work / f"{name}.log"
        log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        if proc.returncode != 0:
            raise TrainingError(name, _error_line(proc.stderr, proc.stdout) + f" (log: {log})")
        return proc.stdout

    def _processing(self, step: dict, ctx: pd_.ExecutionContext) -> tuple[str, bool]:
        name = step["Name"]
        args = ctx.resolve(step["Arguments"])
        root = self.work / name
        base = root / "opt/ml/processing"
        base.mkdir(parents=True, exist_ok=True)
        for item in args.get("ProcessingInputs", []):
            s3_input = item["S3Input"]
            self.download(s3_input["S3Uri"], Path(self._map_path(root, s3_input["LocalPath"])))
        app = args["AppSpecification"]
        cmd = [
            self._map_path(root, c) for c in app["ContainerEntrypoint"] + app.get("ContainerArguments", [])
        ]
        if cmd and cmd[0] in ("python3", "python"):
            cmd[0] = sys.executable
        cmd += ["--base-dir", str(base)]
        env = {k: str(v) for k, v in args.get("Environment", {}).items()}
        stdout = self._run(name, cmd, env, root)
        props: dict[str, Any] = {}
        outputs = {}
        for out in args.get("ProcessingOutputConfig", {}).get("Outputs", []):
            local = Path(self._map_path(root, out["S3Output"]["LocalPath"]))
            uri = out["S3Output"]["S3Uri"]
            if local.is_dir():
                self.upload_dir(local, uri)
            props[f"ProcessingOutputConfig.Outputs['{out['OutputName']}'].S3Output.S3Uri"] = uri
            outputs[out["OutputName"]] = local
        ctx.properties[name] = props
        for pf in step.get("PropertyFiles", []):
            path = outputs[pf["OutputName"]] / pf["FilePath"]
            ctx.property_files.setdefault(name, {})[pf["PropertyFileName"]] = json.loads(path.read_text())
        return _last_line(stdout), True

    def _training(self, step: dict, ctx: pd_.ExecutionContext) -> tuple[str, bool]:
        name = step["Name"]
        args = ctx.resolve(step["Arguments"])
        base = self.work / name / "opt/ml"
        config_dir = base / "input/config"
        config_dir.mkdir(parents=True, exist_ok=True)
        # As in a SageMaker training container: without output/ the toolkit cannot write its failure file
        # and then exits 0 even when the script failed.
        for folder in ("output/data", "model"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        hps = {k: str(v) for k, v in args.get("HyperParameters", {}).items()}
        submit = hps.get("sagemaker_submit_directory", "")
        if submit.startswith("s3://"):  # fetched here so the toolkit needs no S3 endpoint of its own
            local_tar = self.work / name / "sourcedir.tar.gz"
            bucket, key = _split_s3(submit)
            self.s3.download_file(bucket, key, str(local_tar))
            hps["sagemaker_submit_directory"] = str(local_tar)
        channels = {}
        for channel in args.get("InputDataConfig", []):
            channel_name = channel["ChannelName"]
            self.download(channel["DataSource"]["S3DataSource"]["S3Uri"], base / "input/data" / channel_name)
            channels[channel_name] = {
                "ContentType": channel.get("ContentType", "text/csv"),
                "TrainingInputMode": "File",
                "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None",
            }
        (config_dir / "hyperparameters.json").write_text(json.dumps(hps))
        (config_dir / "resourceconfig.json").write_text(
            json.dumps({"current_host": "localhost", "hosts": ["localhost"]})
        )
        (config_dir / "inputdataconfig.json").write_text(json.dumps(channels))
        env = {
            "SAGEMAKER_BASE_DIR": str(base),
            "AWS_REGION": self.target.region,
            **{k: str(v) for k, v in args.get("Environment", {}).items()},
        }
        stdout = self._run(name, [sys.executable, "-m", "sagemaker_training.cli.train"], env, base)
        failure = base / "output/failure"
        if failure.exists():
            raise TrainingError(name, _error_line(failure.read_text(), ""))
        job_name = f"{name.lower()}-{ctx.execution['PipelineExecutionId']}"
        tarball = make_model_tarball(base / "model", self.work / name / "model.tar.gz")
        model_uri = f"{args['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job_name}/output/model.tar.gz"
        self.upload_file(tarball, model_uri)
        ctx.properties[name] = {"ModelArtifacts.S3ModelArtifacts": model_uri, "TrainingJobName": job_name}
        metrics = [line for line in stdout.splitlines() if line.startswith("validation:")]
        return ", ".join(metrics) or model_uri, True

    def _condition(self, step: dict, ctx: pd_.ExecutionContext) -> tuple[str, bool]:
        outcome = pd_.condition_outcome(step, ctx)
        ctx.properties[step["Name"]] = {"Outcome": outcome}
        return ("passed" if outcome else "not passed"), True

    def _fail(self, step: dict, ctx: pd_.ExecutionContext) -> tuple[str, bool]:
        message = str(ctx.resolve(step["Arguments"].get("ErrorMessage", "")))
        self.failure = message or f"step {step['Name']} failed the execution"
        return self.failure, False

    def _register(self, step: dict, ctx: pd_.ExecutionContext) -> tuple[str, bool]:
        args = ctx.resolve(step["Arguments"])
        group = args["ModelPackageGroupName"]
        described = register_model_package(self.sm, args)
        arn = described["ModelPackageArn"]
        ctx.properties[step["Name"]] = {
            "ModelPackageArn": arn,
            "ModelPackageVersion": described.get("ModelPackageVersion"),
            "ModelApprovalStatus": described.get("ModelApprovalStatus"),
        }
        return (
            f"{group} v{described.get('ModelPackageVersion')} ({described.get('ModelApprovalStatus')})",
            True,
        )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _error_line(stderr: str, stdout: str) -> str:
    """The most useful line of a failed script's output: its ``error: ...`` line (also argparse's
    ``train.py: error: ...``), else the last line."""
    for text in (stderr, stdout):
        for line in reversed(text.splitlines()):
            stripped = line.strip()
            if stripped.startswith("error:"):
                return stripped[len("error:") :].strip()
            if ".py: error: " in stripped:
                return stripped
    for text in (stderr, stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "the step failed without output"


def build_local_definition(target: Target, code: dict[str, str], input_data_uri: str) -> dict:
    """The pipeline definition for the local cloud: the same builder, local buckets and images."""
    cfg = target.config
    image = sklearn_image_uri(target.region, cfg.sklearn_framework_version, "training")
    return pd_.build_pipeline_definition(
        role_arn=f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{cfg.project_name}-pipeline",
        model_package_group_name=target.names.model_package_group,
        training_image_uri=image,
        inference_image_uri=sklearn_image_uri(target.region, cfg.sklearn_framework_version, "inference"),
        code=code,
        artifacts_s3_prefix=f"s3://{target.names.artifacts_bucket}/{PIPELINE_PREFIX}",
        kms_key_id="",
        defaults={
            "input_data_uri": input_data_uri,
            "training_instance_type": cfg.training_instance_type,
            "processing_instance_type": cfg.processing_instance_type,
            "estimator": cfg.estimator,
            "quality_metric": cfg.quality_metric,
            "quality_threshold": cfg.quality_threshold,
            "decision_threshold": cfg.decision_threshold,
        },
    )


def estimator_hyperparameters(estimator: str) -> tuple[str, ...]:
    """The hyperparameters ``estimator`` uses, by the training script's own table (``train.hyperparameters``);
    the others are passed to it and ignored."""
    from training import train as train_script

    return tuple(train_script.hyperparameters(train_script.parse_args([f"--estimator={estimator}"])))


def parameter_overrides(
    estimator: str | None, hyperparameters: dict[str, Any] | None, quality_threshold: float | None = None
) -> dict[str, Any]:
    """Pipeline parameter overrides from CLI-style names (``max_iter``/``max-iter``/``MaxIter``)."""
    out: dict[str, Any] = {}
    if estimator is not None:
        if estimator not in ESTIMATORS:
            raise pd_.DefinitionError(f"unknown estimator '{estimator}' (known: {', '.join(ESTIMATORS)})")
        out["Estimator"] = estimator
    kinds = {param: kind for _hp, param, kind, _default in pd_.HYPERPARAMETERS}
    for key, value in (hyperparameters or {}).items():
        param = pd_.parameter_name_for(key)
        out[param] = pd_.coerce_parameter(param, kinds[param], value)
    if quality_threshold is not None:
        out["QualityThreshold"] = quality_threshold
    return out


def run_local_training(
    target: Target,
    *,
    data_dir_or_uri: str | Path | None = None,
    hyperparameters: dict[str, Any] | None = None,
    estimator: str | None = None,
    progress: Progress | None = None,
    quality_threshold: float | None = None,
    inference_dir: Path | None = None,
    work_dir: Path | None = None,
) -> TrainingResult:
    """Execute the training pipeline's definition locally; register the model if it passes the gate.

    ``data_dir_or_uri``: a folder of CSVs (uploaded to the data bucket), an ``s3://`` prefix in the target's
    S3, or None for the bundled sample data. ``hyperparameters``: train.py names (``C``, ``max_iter``,
    ``n_estimators``, ``max_depth``, ``learning_rate``, ``random_state``). ``estimator``/``quality_threshold``
    default to the configuration. ``progress(step, state, detail)`` is called as steps start and end.
    A model below the threshold is not registered: ``result.registered`` is False and ``result.reason``
    says why. A failing step raises ``TrainingError`` naming the step and the cause. The run's own work folder
    (data copies, code builds, step logs) is removed after a failure, except the step logs when the failed
    step wrote one (the message then names it: ``(log: ...)``); ``TRAINSERVE_KEEP_WORK_DIR=1`` keeps it whole
    after a success. A ``work_dir`` given by the caller is left as it is.
    """
    progress = progress or _noop
    started = time.monotonic()
    execution_id = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    overrides = parameter_overrides(estimator, hyperparameters, quality_threshold)
    own_work_dir = work_dir is None
    work = Path(work_dir or tempfile.mkdtemp(prefix="trainserve-train-"))
    work.mkdir(parents=True, exist_ok=True)
    run = _LocalExecution(target, work, progress)
    succeeded = kept_logs = False
    names = target.names
    try:
        progress("Upload", "start", "data and code")
        t0 = time.monotonic()
        try:
            for bucket in (names.data_bucket, names.artifacts_bucket):
                run.ensure_bucket(bucket)
            input_uri = _stage_input(run, target, data_dir_or_uri, execution_id, work)
            code = _stage_code(run, target, work, Path(inference_dir or INFERENCE_DIR))
        except (BotoCoreError, ClientError, OSError) as exc:
            progress("Upload", "failed", str(exc))
            raise TrainingError("Upload", str(exc)) from exc
        run.reports.append(
            StepReport("Upload", "Local", "Succeeded", round(time.monotonic() - t0, 2), input_uri)
        )
        progress("Upload", "done", input_uri)

        definition = build_local_definition(target, code, input_uri)
        params = pd_.pipeline_parameters(definition, overrides)
        ctx = pd_.ExecutionContext(
            parameters=params,
            execution={
                "PipelineExecutionId": execution_id,
                "PipelineName": names.pipeline_name,
                "PipelineExecutionArn": f"arn:aws:sagemaker:{target.region}:{LOCAL_ACCOUNT}:pipeline/"
                f"{names.pipeline_name}/execution/{execution_id}",
            },
        )
        for planned in pd_.local_plan(definition):
            if not run.run_step(planned.definition, ctx):
                break
        evaluation = ctx.property_files.get("Evaluate", {}).get(pd_.PROPERTY_FILE, {})
        metrics = {k: float(v) for k, v in evaluation.get("metrics", {}).items()}
        register = ctx.properties.get("Register", {})
        eval_uri = ctx.properties.get("Evaluate", {}).get(
            "ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri", ""
        )
        quality_metric = target.config.quality_metric
        used = estimator_hyperparameters(str(params["Estimator"]))
        hp_values = {hp: params[param] for hp, param, _k, _d in pd_.HYPERPARAMETERS if hp in used}
        result = TrainingResult(
            execution_id=execution_id,
            registered=bool(register.get("ModelPackageArn")),
            estimator=str(params["Estimator"]),
            hyperparameters=hp_values,
            quality_metric=quality_metric,
            quality_threshold=float(params["QualityThreshold"]),
            quality_value=metrics.get(quality_metric),
            metrics=metrics,
            model_package_arn=register.get("ModelPackageArn"),
            model_version=register.get("ModelPackageVersion"),
            approval_status=register.get("ModelApprovalStatus"),
            reason=run.failure,
            artifacts={
                "input_data": input_uri,
                "model_data": ctx.properties.get("Train", {}).get("ModelArtifacts.S3ModelArtifacts", ""),
                "evaluation": f"{eval_uri}/evaluation.json" if eval_uri else "",
                "baseline": f"{eval_uri}/baseline.json" if eval_uri else "",
                "inference_sourcedir": code["inference_sourcedir"],
            },
            steps=run.reports,
            seconds=round(time.monotonic() - started, 2),
        )
        succeeded = True
        return result
    except TrainingError as exc:
        log = work / f"{exc.step}.log"
        error = exc
        if own_work_dir and log.is_file():  # the failed step's log is worth keeping: only the logs stay
            _keep_only_logs(work)
            kept_logs = True
            if str(log) not in exc.detail:
                error = TrainingError(exc.step, f"{exc.detail} (log: {log})")
        error.execution_id, error.steps = execution_id, list(run.reports)
        if error is exc:
            raise
        raise error from exc
    finally:
        # A failed run keeps nothing but the step logs of a failed step that wrote one (the error message
        # names it); data copies and code builds go. A successful run keeps its work folder only with
        # TRAINSERVE_KEEP_WORK_DIR=1.
        keep = os.environ.get("TRAINSERVE_KEEP_WORK_DIR") == "1" if succeeded else kept_logs
        if own_work_dir and not keep:
            shutil.rmtree(work, ignore_errors=True)


def _keep_only_logs(work: Path) -> None:
    """Remove everything in ``work`` except its top-level step logs (``<step>.log``)."""
    for path in work.iterdir():
        if path.is_file() and path.suffix == ".log":
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _stage_input(
    run: _LocalExecution, target: Target, data: str | Path | None, execution_id: str, work: Path
) -> str:
    if isinstance(data, str) and data.startswith("s3://"):
        return data
    if data is None:
        from training.sample_data import write_sample_data

        folder = write_sample_data(work / "sample")["data_dir"]
    else:
        folder = Path(data)
        if folder.is_file():
            if folder.suffix != ".csv":
                raise TrainingError(
                    "Upload", f"training data {data} is not a .csv file (only files ending in .csv are read)"
                )
            single = work / "input-file"
            single.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder, single / folder.name)
            folder = single
        elif not folder.is_dir():
            raise TrainingError(
                "Upload", f"training data {data} is neither a folder, a file nor an s3:// URI"
            )
        elif not any(folder.rglob("*.csv")):
            raise TrainingError("Upload", f"no CSV files in {data} (only files ending in .csv are read)")
    uri = f"s3://{target.names.data_bucket}/{UPLOAD_PREFIX}/{execution_id}"
    run.upload_dir(folder, uri)
    return uri


def _stage_code(run: _LocalExecution, target: Target, work: Path, inference_dir: Path) -> dict[str, str]:
    """Upload the scripts and source-dir tarballs (content-addressed) to the artifacts bucket."""
    bucket = target.names.artifacts_bucket
    built = work / "code"
    files = {
        "preprocess": TRAINING_DIR / "preprocess.py",
        "evaluate": TRAINING_DIR / "evaluate.py",
        "train_sourcedir": make_sourcedir_tarball(TRAINING_DIR, built / "train_sourcedir.tar.gz"),
    }
    try:
        files["inference_sourcedir"] = make_sourcedir_tarball(
            inference_dir, built / "inference_sourcedir.tar.gz"
        )
    except FileNotFoundError as exc:
        raise TrainingError("Upload", f"cannot pack the inference code: {exc}") from exc
    code = {}
    for key, path in files.items():
        uri = f"s3://{bucket}/{CODE_PREFIX}/{_sha(path)}/{path.name}"
        run.upload_file(path, uri)
        code[key] = uri
    return code
