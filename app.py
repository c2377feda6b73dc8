#!/usr/bin/env python3
"""The trainserve CDK app: reads and validates the configuration once, then builds the five stacks.

Configuration: the ``trainserve`` block of ``cdk.json``'s context, with flat ``-c key=value`` overrides for any
key of ``stacks.config.FIELDS`` (``cdk synth -c quality_threshold=0.95``). A bad value stops synth with a
message naming the key. Every stack is environment-agnostic and checked by cdk-nag's AwsSolutions pack.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from stacks.config import CONTEXT_KEY, FIELDS, Config, ConfigError
from stacks.data_stack import DataStack
from stacks.serving_stack import ServingStack
from stacks.training_stack import TrainingStack

PROJECT_ROOT = Path(__file__).resolve().parent


def cdk_json_context(project_root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The whole ``context`` object of ``cdk.json`` (feature flags and the ``trainserve`` block)."""
    return dict(json.loads((project_root / "cdk.json").read_text()).get("context", {}))


def read_config(app: App) -> Config:
    """The ``trainserve`` context block merged with flat ``-c key=value`` overrides, validated once."""
    block = app.node.try_get_context(CONTEXT_KEY)
    if isinstance(block, str):  # `-c trainserve='{...}'` arrives as a string
        try:
            block = json.loads(block)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"context '{CONTEXT_KEY}' is not a JSON object: {exc}") from None
    if block is not None and not isinstance(block, Mapping):
        raise ConfigError(f"context '{CONTEXT_KEY}' must be a JSON object, got {type(block).__name__}")
    values = dict(block or {})
    for field in FIELDS:
        override = app.node.try_get_context(field.name)
        if override is not None:
            values[field.name] = override
    return Config.from_mapping(values)


def stack_prefix(config: Config) -> str:
    """``project_name`` capitalized per '-' part: ``my-ml`` -> ``MyMl``."""
    return "".join(part.capitalize() for part in config.project_name.split("-"))


def _module_exists(name: str) -> bool:
    # Integration guard: the warehouse and monitoring stacks are written in parallel; remove at integration.
    return (PROJECT_ROOT / "stacks" / f"{name}.py").is_file() and importlib.util.find_spec(
        f"stacks.{name}"
    ) is not None


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None) -> App:
    """Build the app (the tests pass ``cdk.json``'s context; ``cdk synth`` passes it through the CLI)."""
    app = App(context=dict(context) if context is not None else None, outdir=outdir)
    config = read_config(app)
    prefix = stack_prefix(config)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))

    data = DataStack(
        app, f"{prefix}Data", config=config, description=f"{config.project_name}: KMS key and buckets"
    )
    training = TrainingStack(
        app,
        f"{prefix}Training",
        config=config,
        data=data,
        description=f"{config.project_name}: model registry and SageMaker training pipeline",
    )
    warehouse = None
    if _module_exists("warehouse_stack"):
        from stacks.warehouse_stack import WarehouseStack

        warehouse = WarehouseStack(app, f"{prefix}Warehouse", config=config, data=data)
    serving = ServingStack(
        app,
        f"{prefix}Serving",
        config=config,
        data=data,
        training=training,
        warehouse=warehouse,
        description=f"{config.project_name}: release controller and prediction API",
    )
    if warehouse is not None and _module_exists("monitoring_stack"):
        from stacks.monitoring_stack import MonitoringStack

        MonitoringStack(
            app, f"{prefix}Monitoring", config=config, data=data, serving=serving, warehouse=warehouse
        )
    return app


def main() -> None:
    """``cdk synth`` passes cdk.json's context (and ``-c`` overrides) in CDK_CONTEXT_JSON; a plain
    ``python app.py`` reads cdk.json itself, so both synthesize the same app."""
    context = None if "CDK_CONTEXT_JSON" in os.environ else cdk_json_context()
    try:
        app = build_app(context)
    except ConfigError as exc:
        sys.exit(f"trainserve: configuration error: {exc}")
    app.synth()


if __name__ == "__main__":
    main()
