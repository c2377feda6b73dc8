"""The SageMaker Pipeline definition: the single source of truth for the training steps.

``build_pipeline_definition(...)`` returns the pipeline definition JSON (as a dict) that the training stack
embeds in ``AWS::SageMaker::Pipeline`` and that the local training runner executes. Plain Python: no CDK,
no SageMaker SDK, no AWS calls. Every argument may be a CDK token: values are placed in the definition as
opaque strings and never parsed.

Steps (``Version 2020-12-01``)::

    Preprocess (Processing) -> Train (Training, script mode) -> Evaluate (Processing, PropertyFile)
        -> CheckQuality (Condition: JsonGet metrics.<quality_metric> >= QualityThreshold)
             if:   Register (RegisterModel, PendingManualApproval, ModelMetrics -> evaluation.json)
             else: QualityGateFailed (Fail)

The second half of this module is the pure part of running a definition locally: the dependency order of
the steps (``local_plan``), pipeline expression evaluation (``Get``, ``Std:Join``, ``Std:JsonGet``) and
condition evaluation. ``trainserve/local/training_runner.py`` does the side effects (jobs, S3, registry).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

DEFINITION_VERSION = "2020-12-01"
PROPERTY_FILE = "EvaluationReport"
PROCESSING = "/opt/ml/processing"
CONTENT_TYPES = ["text/csv", "application/json"]
RESPONSE_TYPES = ["application/json"]
LABEL_COLUMN = "target"

# (train.py hyperparameter, pipeline parameter, parameter type, default)
HYPERPARAMETERS = (
    ("C", "C", "Float", 1.0),
    ("max_iter", "MaxIter", "Integer", 1000),
    ("n_estimators", "NEstimators", "Integer", 100),
    ("max_depth", "MaxDepth", "Integer", 0),
    ("learning_rate", "LearningRate", "Float", 0.1),
    ("random_state", "RandomState", "Integer", 42),
)
# CustomerMetadataProperties copied from evaluation.json's ``registry_metadata`` (every value valid on AWS:
# at most 256 characters of letters, digits, spaces and ``_.:/=+-@``). The feature names do not fit: they
# are in ``features.json`` beside ``baseline.json``, named by ``features_uri``.
REGISTRY_METADATA_KEYS = (
    "n_features",
    "estimator",
    "quality_value",
    "metrics",
    "decision_threshold",
    "features_sha256",
)
DEFAULT_DECISION_THRESHOLD = 0.5
REQUIRED_CODE = ("preprocess", "evaluate", "train_sourcedir", "inference_sourcedir")
REQUIRED_DEFAULTS = (
    "input_data_uri",
    "training_instance_type",
    "processing_instance_type",
    "estimator",
    "quality_metric",
    "quality_threshold",
)


def get(path: str) -> dict:
    return {"Get": path}


def join(values: list, on: str = "") -> dict:
    return {"Std:Join": {"On": on, "Values": list(values)}}


def json_get(path: str, step: str = "Evaluate", property_file: str = PROPERTY_FILE) -> dict:
    return {"Std:JsonGet": {"PropertyFile": get(f"Steps.{step}.PropertyFiles.{property_file}"), "Path": path}}


def output_uri(step: str, output: str) -> dict:
    return get(f"Steps.{step}.ProcessingOutputConfig.Outputs['{output}'].S3Output.S3Uri")


MODEL_ARTIFACTS = get("Steps.Train.ModelArtifacts.S3ModelArtifacts")


def _s3_input(name: str, uri: Any, local_path: str) -> dict:
    return {
        "InputName": name,
        "AppManaged": False,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": local_path,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated",
            "S3CompressionType": "None",
        },
    }


def _s3_output(name: str, prefix: str, step: str) -> dict:
    return {
        "OutputName": name,
        "AppManaged": False,
        "S3Output": {
            "S3Uri": join([prefix, get("Execution.PipelineExecutionId"), step, name], on="/"),
            "LocalPath": f"{PROCESSING}/{name}",
            "S3UploadMode": "EndOfJob",
        },
    }


def _processing_step(
    name: str,
    *,
    image: str,
    role_arn: str,
    script: str,
    code_uri: str,
    inputs: list,
    outputs: list,
    prefix: str,
    kms_key_id: str,
    arguments: list,
) -> dict:
    cluster = {
        "InstanceType": get("Parameters.ProcessingInstanceType"),
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
    }
    output_config: dict = {"Outputs": [_s3_output(o, prefix, name) for o in outputs]}
    if kms_key_id:
        cluster["VolumeKmsKeyId"] = kms_key_id
        output_config["KmsKeyId"] = kms_key_id
    return {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {"ClusterConfig": cluster},
            "AppSpecification": {
                "ImageUri": image,
                "ContainerEntrypoint": ["python3", f"{PROCESSING}/input/code/{script}"],
                "ContainerArguments": arguments,
            },
            "RoleArn": role_arn,
            "ProcessingInputs": [*inputs, _s3_input("code", code_uri, f"{PROCESSING}/input/code")],
            "ProcessingOutputConfig": output_config,
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        },
    }


def _parameters(defaults: dict) -> list:
    params = [
        {"Name": "InputData", "Type": "String", "DefaultValue": defaults["input_data_uri"]},
        {
            "Name": "TrainingInstanceType",
            "Type": "String",
            "DefaultValue": defaults["training_instance_type"],
        },
        {
            "Name": "ProcessingInstanceType",
            "Type": "String",
            "DefaultValue": defaults["processing_instance_type"],
        },
        {"Name": "Estimator", "Type": "String", "DefaultValue": defaults["estimator"]},
        {"Name": "QualityThreshold", "Type": "Float", "DefaultValue": defaults["quality_threshold"]},
        {
            "Name": "DecisionThreshold",
            "Type": "Float",
            "DefaultValue": defaults.get("decision_threshold", DEFAULT_DECISION_THRESHOLD),
        },
    ]
    for hp, param, kind, default in HYPERPARAMETERS:
        params.append({"Name": param, "Type": kind, "DefaultValue": defaults.get(hp, default)})
    return params


def build_pipeline_definition(
    *,
    role_arn: str,
    model_package_group_name: str,
    training_image_uri: str,
    inference_image_uri: str,
    code: Dict[str, str],
    artifacts_s3_prefix: str,
    kms_key_id: str,
    defaults: Dict[str, Any],
) -> dict:
    """The SageMaker Pipeline definition (a JSON-serializable dict) of preprocess → train → evaluate →
    quality gate → register.

    ``code``: S3 URIs of ``preprocess`` and ``evaluate`` (single scripts) and of ``train_sourcedir`` and
    ``inference_sourcedir`` (``sourcedir.tar.gz``). ``artifacts_s3_prefix``: ``s3://bucket/prefix`` (no
    trailing slash) under which each execution writes ``<execution id>/<step>/<output>``. ``kms_key_id``:
    key for job volumes and outputs ("" for none). ``defaults``: ``input_data_uri``,
    ``training_instance_type``, ``processing_instance_type``, ``estimator``, ``quality_metric``,
    ``quality_threshold`` and optionally ``decision_threshold`` (the score at which Evaluate labels a row 1,
    as the proxy's ``DECISION_THRESHOLD`` does; default 0.5) and hyperparameter defaults keyed by train.py name (``C``,
    ``max_iter``, ``n_estimators``, ``max_depth``, ``learning_rate``, ``random_state``). Values may be
    CDK tokens; they are never parsed.
    """
    missing = [k for k in REQUIRED_CODE if k not in code]
    if missing:
        raise ValueError(f"code is missing {', '.join(missing)} (needs {', '.join(REQUIRED_CODE)})")
    missing = [k for k in REQUIRED_DEFAULTS if k not in defaults]
    if missing:
        raise ValueError(f"defaults is missing {', '.join(missing)} (needs {', '.join(REQUIRED_DEFAULTS)})")
    prefix = artifacts_s3_prefix
    quality_metric = defaults["quality_metric"]

    preprocess = _processing_step(
        "Preprocess",
        image=training_image_uri,
        role_arn=role_arn,
        script="preprocess.py",
        code_uri=code["preprocess"],
        inputs=[_s3_input("data", get("Parameters.InputData"), f"{PROCESSING}/input/data")],
        outputs=["train", "validation", "test", "schema"],
        prefix=prefix,
        kms_key_id=kms_key_id,
        arguments=["--label-column", LABEL_COLUMN],
    )

    hyperparameters: dict = {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": code["train_sourcedir"],
        "sagemaker_container_log_level": "20",
        "estimator": get("Parameters.Estimator"),
    }
    for hp, param, _kind, _default in HYPERPARAMETERS:
        hyperparameters[hp] = join([get(f"Parameters.{param}")])
    resources = {
        "InstanceCount": 1,
        "InstanceType": get("Parameters.TrainingInstanceType"),
        "VolumeSizeInGB": 30,
    }
    output_data: dict = {
        "S3OutputPath": join([prefix, get("Execution.PipelineExecutionId"), "Train"], on="/")
    }
    if kms_key_id:
        resources["VolumeKmsKeyId"] = kms_key_id
        output_data["KmsKeyId"] = kms_key_id
    train = {
        "Name": "Train",
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {
                "TrainingImage": training_image_uri,
                "TrainingInputMode": "File",
                "MetricDefinitions": [
                    {"Name": "validation:accuracy", "Regex": "validation:accuracy=([0-9.]+)"},
                    {"Name": "validation:roc_auc", "Regex": "validation:roc_auc=([0-9.]+)"},
                ],
            },
            "OutputDataConfig": output_data,
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "ResourceConfig": resources,
            "RoleArn": role_arn,
            "InputDataConfig": [
                {
                    "ChannelName": channel,
                    "ContentType": "text/csv",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": output_uri("Preprocess", channel),
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
                for channel in ("train", "validation")
            ],
            "HyperParameters": hyperparameters,
        },
    }

    evaluate = _processing_step(
        "Evaluate",
        image=training_image_uri,
        role_arn=role_arn,
        script="evaluate.py",
        code_uri=code["evaluate"],
        inputs=[
            _s3_input("model", MODEL_ARTIFACTS, f"{PROCESSING}/model"),
            _s3_input("test", output_uri("Preprocess", "test"), f"{PROCESSING}/test"),
            # held out as well (training only reports on it): baseline.json's bins use it too
            _s3_input("validation", output_uri("Preprocess", "validation"), f"{PROCESSING}/validation"),
        ],
        outputs=["evaluation"],
        prefix=prefix,
        kms_key_id=kms_key_id,
        arguments=[
            "--quality-metric",
            quality_metric,
            "--decision-threshold",
            join([get("Parameters.DecisionThreshold")]),
        ],
    )
    evaluate["PropertyFiles"] = [
        {"PropertyFileName": PROPERTY_FILE, "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]

    evaluation_uri = output_uri("Evaluate", "evaluation")
    metadata: dict = {key: json_get(f"registry_metadata.{key}") for key in REGISTRY_METADATA_KEYS}
    metadata["quality_metric"] = quality_metric
    metadata["baseline_uri"] = join([evaluation_uri, "baseline.json"], on="/")
    metadata["features_uri"] = join([evaluation_uri, "features.json"], on="/")
    register = {
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": model_package_group_name,
            "ModelPackageDescription": join(["estimator: ", get("Parameters.Estimator")]),
            "ModelApprovalStatus": "PendingManualApproval",
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": inference_image_uri,
                        "ModelDataUrl": MODEL_ARTIFACTS,
                        "Environment": {
                            "SAGEMAKER_PROGRAM": "inference.py",
                            "SAGEMAKER_SUBMIT_DIRECTORY": code["inference_sourcedir"],
                            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                        },
                    }
                ],
                "SupportedContentTypes": list(CONTENT_TYPES),
                "SupportedResponseMIMETypes": list(RESPONSE_TYPES),
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": join([evaluation_uri, "evaluation.json"], on="/"),
                    }
                }
            },
            "CustomerMetadataProperties": metadata,
        },
    }
    quality_value = json_get(f"metrics.{quality_metric}")
    fail = {
        "Name": "QualityGateFailed",
        "Type": "Fail",
        "Arguments": {
            "ErrorMessage": join(
                [
                    "not registered: ",
                    quality_metric,
                    " ",
                    json_get("registry_metadata.quality_value"),
                    " < threshold ",
                    get("Parameters.QualityThreshold"),
                ]
            )
        },
    }
    check = {
        "Name": "CheckQuality",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [
                {
                    "Type": "GreaterThanOrEqualTo",
                    "LeftValue": quality_value,
                    "RightValue": get("Parameters.QualityThreshold"),
                }
            ],
            "IfSteps": [register],
            "ElseSteps": [fail],
        },
    }
    return {
        "Version": DEFINITION_VERSION,
        "Metadata": {},
        "Parameters": _parameters(defaults),
        "Steps": [preprocess, train, evaluate, check],
    }


# --------------------------------------------------------------------------------------------------------
# Running a definition: pure helpers (the local training runner does the side effects).
# --------------------------------------------------------------------------------------------------------


class DefinitionError(ValueError):
    """The definition, or a value given to it, cannot be run; the message names the part."""


_STEP_REF = re.compile(r"^Steps\.([^.\[]+)")
_HP_ALIASES = {}
for _hp, _param, _kind, _default in HYPERPARAMETERS:
    for _alias in (_hp, _hp.replace("_", "-"), _param, _param.lower()):
        _HP_ALIASES[_alias] = _param


def parameter_name_for(key: str) -> str:
    """A hyperparameter name as the CLI accepts it (``max_iter``, ``max-iter``, ``MaxIter``) -> parameter name."""
    if key in _HP_ALIASES:
        return _HP_ALIASES[key]
    known = ", ".join(hp for hp, *_ in HYPERPARAMETERS)
    raise DefinitionError(f"unknown hyperparameter '{key}' (known: {known})")


def pipeline_parameters(definition: dict, overrides: Optional[dict] = None) -> dict:
    """Parameter values of an execution: the defaults, with ``overrides`` (by parameter name) converted to
    each parameter's type; an unknown name or a value of the wrong type raises DefinitionError."""
    declared = {p["Name"]: p for p in definition.get("Parameters", [])}
    values = {name: p.get("DefaultValue") for name, p in declared.items()}
    for name, raw in (overrides or {}).items():
        if name not in declared:
            raise DefinitionError(f"unknown pipeline parameter '{name}' (known: {', '.join(declared)})")
        values[name] = coerce_parameter(name, declared[name]["Type"], raw)
    return values


def coerce_parameter(name: str, kind: str, raw: Any) -> Any:
    try:
        if kind == "Integer":
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(str(raw)) if not isinstance(raw, (int, float)) else int(raw)
        if kind == "Float":
            return float(raw)
        if kind == "Boolean":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "false"):
                return str(raw).lower() == "true"
            raise ValueError(raw)
    except (TypeError, ValueError):
        raise DefinitionError(f"parameter {name} must be {kind.lower()}, got {raw!r}") from None
    return str(raw)


def referenced_steps(value: Any) -> set:
    """Names of the steps a value's ``Get`` expressions read from."""
    found: set = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Get" and isinstance(item, str):
                match = _STEP_REF.match(item)
                if match:
                    found.add(match.group(1))
            elif key not in ("IfSteps", "ElseSteps"):
                found |= referenced_steps(item)
    elif isinstance(value, list):
        for item in value:
            found |= referenced_steps(item)
    return found


@dataclass
class PlannedStep:
    """One top-level step with the steps it waits for (data dependencies and ``DependsOn``)."""

    name: str
    type: str
    definition: dict
    depends_on: List[str] = field(default_factory=list)


def local_plan(definition: dict) -> List[PlannedStep]:
    """The top-level steps in an order that respects every data dependency (``Get Steps.X...``) and
    ``DependsOn`` (stable: definition order among ready steps). Condition branches are run by the caller."""
    steps = definition.get("Steps", [])
    names = [s["Name"] for s in steps]
    if len(set(names)) != len(names):
        raise DefinitionError(f"duplicated step names in {names}")
    nested: set = set()
    for s in steps:
        for branch in ("IfSteps", "ElseSteps"):
            nested |= {n["Name"] for n in s.get("Arguments", {}).get(branch, [])}
    known = set(names) | nested
    planned = {}
    for s in steps:
        deps = (
            referenced_steps(s.get("Arguments", {})) | referenced_steps(s.get("PropertyFiles", []))
        ) | set(s.get("DependsOn", []))
        deps.discard(s["Name"])
        unknown = deps - known
        if unknown:
            raise DefinitionError(f"step {s['Name']} depends on unknown steps {sorted(unknown)}")
        planned[s["Name"]] = PlannedStep(s["Name"], s["Type"], s, sorted(deps & set(names)))
    order: List[PlannedStep] = []
    done: set = set()
    while len(order) < len(steps):
        ready = [n for n in names if n not in done and set(planned[n].depends_on) <= done]
        if not ready:
            raise DefinitionError(f"circular step dependencies among {sorted(set(names) - done)}")
        order.append(planned[ready[0]])
        done.add(ready[0])
    return order


@dataclass
class ExecutionContext:
    """What expressions read while a definition runs."""

    parameters: Dict[str, Any]
    execution: Dict[str, Any]  # PipelineExecutionId, PipelineName, ...
    properties: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # step -> {"ModelArtifacts...": v}
    property_files: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # step -> {name: parsed JSON}

    def resolve(self, value: Any) -> Any:
        return resolve(value, self)


def _lookup_path(document: Any, path: str) -> Any:
    """JsonGet path: ``a.b[0].c``."""
    current = document
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if token.startswith("["):
            index = int(token[1:-1])
            if not isinstance(current, list) or index >= len(current):
                raise DefinitionError(f"JsonGet path {path!r}: no index {index}")
            current = current[index]
        else:
            if not isinstance(current, dict) or token not in current:
                raise DefinitionError(f"JsonGet path {path!r}: no key {token!r}")
            current = current[token]
    return current


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resolve(value: Any, ctx: ExecutionContext) -> Any:
    """Evaluate pipeline expressions (``Get``, ``Std:Join``, ``Std:JsonGet``) inside ``value``."""
    if isinstance(value, list):
        return [resolve(v, ctx) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Get"}:
        path = value["Get"]
        if path.startswith("Parameters."):
            name = path.split(".", 1)[1]
            if name not in ctx.parameters:
                raise DefinitionError(f"unknown parameter in {path}")
            return ctx.parameters[name]
        if path.startswith("Execution."):
            name = path.split(".", 1)[1]
            if name not in ctx.execution:
                raise DefinitionError(f"unknown execution variable in {path}")
            return ctx.execution[name]
        match = _STEP_REF.match(path)
        if match:
            step, rest = match.group(1), path[match.end() + 1 :]
            if rest.startswith("PropertyFiles."):
                return {"__property_file__": (step, rest.split(".", 1)[1])}
            props = ctx.properties.get(step)
            if props is None:
                raise DefinitionError(f"{path}: step {step} has not run")
            if rest not in props:
                raise DefinitionError(f"{path}: step {step} has no property {rest}")
            return props[rest]
        raise DefinitionError(f"unsupported Get expression {path!r}")
    if set(value) == {"Std:Join"}:
        spec = value["Std:Join"]
        return spec.get("On", "").join(_to_text(resolve(v, ctx)) for v in spec.get("Values", []))
    if set(value) == {"Std:JsonGet"}:
        spec = value["Std:JsonGet"]
        ref = resolve(spec["PropertyFile"], ctx)
        if not isinstance(ref, dict) or "__property_file__" not in ref:
            raise DefinitionError("Std:JsonGet needs a PropertyFile reference")
        step, name = ref["__property_file__"]
        document = ctx.property_files.get(step, {}).get(name)
        if document is None:
            raise DefinitionError(f"property file {name} of step {step} is not available")
        return _lookup_path(document, spec["Path"])
    return {k: resolve(v, ctx) for k, v in value.items()}


_COMPARISONS: Dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanOrEqualTo": lambda a, b: a >= b,
    "LessThan": lambda a, b: a < b,
    "LessThanOrEqualTo": lambda a, b: a <= b,
}


def evaluate_condition(condition: dict, ctx: ExecutionContext) -> bool:
    kind = condition["Type"]
    if kind in _COMPARISONS:
        left, right = resolve(condition["LeftValue"], ctx), resolve(condition["RightValue"], ctx)
        if isinstance(left, (int, float)) or isinstance(right, (int, float)):
            left, right = float(left), float(right)
        return _COMPARISONS[kind](left, right)
    if kind == "Not":
        return not evaluate_condition(condition["Condition"], ctx)
    if kind == "Or":
        return any(evaluate_condition(c, ctx) for c in condition["Conditions"])
    if kind == "In":
        return resolve(condition["QueryValue"], ctx) in [resolve(v, ctx) for v in condition["Values"]]
    raise DefinitionError(f"unsupported condition type {kind!r}")


def condition_outcome(step: dict, ctx: ExecutionContext) -> bool:
    """A Condition step's outcome: every condition holds."""
    return all(evaluate_condition(c, ctx) for c in step["Arguments"].get("Conditions", []))
