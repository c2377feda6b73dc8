"""Where the CLI acts: the local cloud (when it runs, or with ``--local``) or AWS (stack outputs).

A ``Target`` carries every name and address a command needs, so commands never guess: on AWS the names
come from the deployed stacks' outputs; locally they come from the local cloud's state file, which the
local cloud writes when it starts (``.trainserve/local.json``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from stacks.config import Config
from stacks.config import load as load_config
from trainserve import PROJECT_ROOT

LOCAL_REGION = "us-east-1"
LOCAL_ACCESS_KEY = "testing"
LOCAL_SECRET_KEY = "testing"
LOCAL_ACCOUNT = "123456789012"


class TargetError(RuntimeError):
    """The CLI cannot tell where to act (no local cloud running and no deployed stack found)."""


def state_dir() -> Path:
    """The local cloud's state folder (``TRAINSERVE_HOME`` overrides ``<project>/.trainserve``)."""
    return Path(os.environ.get("TRAINSERVE_HOME", PROJECT_ROOT / ".trainserve")).resolve()


def local_state_file() -> Path:
    return state_dir() / "local.json"


@dataclass(frozen=True)
class Names:
    """Physical names of the project's resources (locally fixed; on AWS read from stack outputs)."""

    model_package_group: str
    endpoint_name: str
    pipeline_name: str
    data_bucket: str
    artifacts_bucket: str
    staging_bucket: str
    release_function: str
    proxy_function: str
    monitor_function: str
    predictions_stream: str
    feedback_stream: str
    release_dlq: str

    @classmethod
    def local(cls, cfg: Config) -> Names:
        p = cfg.project_name
        return cls(
            model_package_group=cfg.model_package_group_name,
            endpoint_name=cfg.endpoint_name,
            pipeline_name=f"{p}-training",
            data_bucket=f"{p}-data",
            artifacts_bucket=f"{p}-artifacts",
            staging_bucket=f"{p}-staging",
            release_function=f"{p}-release-controller",
            proxy_function=f"{p}-proxy",
            monitor_function=f"{p}-monitor",
            predictions_stream=f"{p}-predictions",
            feedback_stream=f"{p}-feedback",
            release_dlq=f"{p}-release-failures",
        )


@dataclass(frozen=True)
class Target:
    mode: str  # "local" or "aws"
    region: str
    config: Config
    names: Names
    aws_endpoint_url: str | None = None  # local: the emulated AWS endpoint (AWS_ENDPOINT_URL)
    runtime_url: str | None = None  # local: SageMaker Runtime endpoint
    api_url: str | None = None  # prediction API base URL
    api_key: str | None = None  # AWS: API key value (local API needs none)
    warehouse: dict[str, Any] = field(default_factory=dict)  # local: {"path": ...}; aws: workgroup/db/secret

    @property
    def is_local(self) -> bool:
        return self.mode == "local"

    def client(self, service: str):
        """A boto3 client for ``service`` at this target (the local cloud's endpoints when local)."""
        kwargs: dict[str, Any] = {
            "region_name": self.region,
            "config": BotoConfig(retries={"max_attempts": 3}),
        }
        if self.is_local:
            endpoint = self.runtime_url if service == "sagemaker-runtime" else self.aws_endpoint_url
            kwargs.update(
                endpoint_url=endpoint,
                aws_access_key_id=LOCAL_ACCESS_KEY,
                aws_secret_access_key=LOCAL_SECRET_KEY,
            )
        return boto3.client(service, **kwargs)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = self.config.as_dict()
        return out


def read_local_state() -> dict[str, Any] | None:
    """The running local cloud's state (URLs, pid), or None when none runs."""
    path = local_state_file()
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return None
    return state


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_target(state: dict[str, Any], cfg: Config | None = None) -> Target:
    cfg = cfg or load_config(PROJECT_ROOT)
    return Target(
        mode="local",
        region=state.get("region", LOCAL_REGION),
        config=cfg,
        names=Names.local(cfg),
        aws_endpoint_url=state["aws_endpoint_url"],
        runtime_url=state.get("runtime_url"),
        api_url=state.get("api_url"),
        warehouse={"path": state.get("warehouse_path")},
    )


def resolve(local: bool | None = None) -> Target:
    """``local=True``: the local cloud (which must run); ``False``: AWS; ``None``: local if it runs, else AWS."""
    cfg = load_config(PROJECT_ROOT)
    state = read_local_state()
    if local is True or (local is None and state is not None):
        if state is None:
            raise TargetError("the local cloud is not running; start it with: trainserve local start")
        return local_target(state, cfg)
    return aws_target(cfg)


def aws_target(cfg: Config) -> Target:
    """Read the deployed stacks' outputs (default credentials and region) into a Target."""
    session = boto3.session.Session()
    region = session.region_name
    if not region:
        raise TargetError(
            "no AWS region configured for the deployed stacks: set AWS_DEFAULT_REGION (or a region in your AWS "
            "profile), or use the local cloud (trainserve local start, and leave out --aws)"
        )
    cfn = session.client("cloudformation")
    outputs: dict[str, str] = {}
    prefix = _stack_prefix(cfg)
    # exactly this project's stacks: a name prefix would also take another project's (trainserve-b: TrainserveB*)
    stacks = {prefix + part for part in STACK_PARTS}
    try:
        paginator = cfn.get_paginator("describe_stacks")
        for page in paginator.paginate():
            for stack in page["Stacks"]:
                if stack["StackName"] in stacks:
                    for o in stack.get("Outputs", []):
                        outputs[o["OutputKey"]] = o["OutputValue"]
    except Exception as exc:  # botocore raises many kinds; the message is what matters to the operator
        if type(exc).__name__ == "NoCredentialsError":
            raise TargetError(
                f"no local cloud is running, and no AWS credentials were found for {region}: start the local "
                "cloud with `trainserve local start`, or configure AWS credentials to use the deployed stacks"
            ) from exc
        raise TargetError(f"cannot read the deployed stacks' outputs in {region}: {exc}") from exc
    if not outputs:
        raise TargetError(
            f"no deployed trainserve stacks ({prefix}Data ... {prefix}Monitoring, from project_name "
            f"'{cfg.project_name}' in cdk.json) in {region} and no local cloud running; "
            "deploy with `npx cdk deploy --all` or start the local cloud with `trainserve local start`"
        )
    local_names = Names.local(cfg)
    names = Names(**{k: outputs.get(_output_key(k), getattr(local_names, k)) for k in asdict(local_names)})
    return Target(
        mode="aws",
        region=region,
        config=cfg,
        names=names,
        api_url=outputs.get("PredictionApiUrl"),
        api_key=None,
        warehouse={
            "workgroup": outputs.get("WarehouseWorkgroup"),
            "cluster": outputs.get("WarehouseCluster"),
            "database": outputs.get("WarehouseDatabase"),
            "secret_arn": outputs.get("WarehouseSecretArn"),
        },
    )


# The app's stacks are ``<prefix><part>`` (app.py); the prefix is project_name capitalized per '-' part.
STACK_PARTS = ("Data", "Training", "Warehouse", "Serving", "Monitoring")


def _stack_prefix(cfg: Config) -> str:
    return "".join(part.capitalize() for part in cfg.project_name.split("-"))


def _output_key(name: str) -> str:
    """Names field -> CloudFormation output key, e.g. ``model_package_group`` -> ``ModelPackageGroup``."""
    return "".join(part.capitalize() for part in name.split("_"))
