#!/usr/bin/env python3
"""The trainserve CDK app: reads and validates the configuration once, then builds the five stacks.

Configuration: the ``trainserve`` block of ``cdk.json``'s context, with flat ``-c key=value`` overrides for any
key of ``stacks.config.FIELDS`` (``cdk synth -c quality_threshold=0.95``). A bad value stops synth with a
message naming the key, before any stack is built. Every stack is environment-agnostic (no account, no
region: synth runs offline) and checked by cdk-nag's AwsSolutions pack (a finding fails synth).

``cdk synth`` passes cdk.json's context in ``CDK_CONTEXT_JSON``; a plain ``python app.py`` reads cdk.json
itself, so both build the same app. Tests call ``build_app(context)``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks.config import CONTEXT_KEY, FIELDS, Config, ConfigError

if TYPE_CHECKING:
    from aws_cdk import App

PROJECT_ROOT = Path(__file__).resolve().parent
# How the CDK CLI hands the context to the app (aws-cdk-lib cx-api CONTEXT_ENV / CONTEXT_OVERFLOW_LOCATION_ENV).
CLI_CONTEXT_ENV = "CDK_CONTEXT_JSON"
CLI_CONTEXT_OVERFLOW_ENV = "CONTEXT_OVERFLOW_LOCATION_ENV"


def cdk_json_context(project_root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The whole ``context`` object of ``cdk.json`` (feature flags and the ``trainserve`` block)."""
    return dict(json.loads((project_root / "cdk.json").read_text()).get("context", {}))


# Read by the CLI only (``trainserve report ab``, from cdk.json): a ``-c`` override of one reaches no stack.
CLI_ONLY_KEYS = ("ab_alpha", "ab_power", "ab_min_effect")


def check_flat_keys(context: Mapping[str, Any]) -> list[str]:
    """Flat ``-c key=value`` keys: one that is not a configuration key but looks like a misspelt one is an
    error (it would otherwise be ignored without a word); returns warnings for keys read by the CLI only.
    CDK's own keys (``@aws-cdk/...``, ``aws:cdk:...``, anything with ':' or '/') are left alone."""
    import difflib

    names = [f.name for f in FIELDS]
    warnings = []
    for key in context:
        if key == CONTEXT_KEY or key.startswith("@") or ":" in key or "/" in key:
            continue
        if key in CLI_ONLY_KEYS:
            warnings.append(
                f"-c {key}: read by the trainserve CLI (report ab) from cdk.json, not by any stack; set it in "
                f"cdk.json's '{CONTEXT_KEY}' block for it to take effect"
            )
        elif key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
            if close:
                raise ConfigError(
                    f"unknown key '{key}': did you mean '{close[0]}'? (the keys are stacks.config.FIELDS)"
                )
    return warnings


def config_from_context(get: Callable[[str], Any]) -> Config:
    """The ``trainserve`` block merged with flat overrides (``get(key)``, e.g. ``try_get_context``), validated."""
    block = get(CONTEXT_KEY)
    if isinstance(block, str):  # `-c trainserve='{...}'` arrives as a string
        try:
            block = json.loads(block)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"context '{CONTEXT_KEY}' is not a JSON object: {exc}") from None
    if block is not None and not isinstance(block, Mapping):
        raise ConfigError(f"context '{CONTEXT_KEY}' must be a JSON object, got {type(block).__name__}")
    values = dict(block or {})
    for field in FIELDS:
        override = get(field.name)
        if override is not None:
            values[field.name] = override
    return Config.from_mapping(values)


def read_config(app: App) -> Config:
    """The app's configuration, from its context (``cdk.json`` + ``-c`` overrides)."""
    return config_from_context(app.node.try_get_context)


def stack_prefix(config: Config) -> str:
    """``project_name`` capitalized per '-' part: ``my-ml`` -> ``MyMl``."""
    return "".join(part.capitalize() for part in config.project_name.split("-"))


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None) -> App:
    """Validate the configuration, then build the five stacks with cdk-nag attached (not yet synthesized).

    ``context``: the app context (``cdk.json``'s ``context`` object, plus flat overrides); ``None`` takes it
    from the environment the way ``cdk synth`` provides it. Raises ``ConfigError`` naming the bad key.
    """
    if context is not None:
        check_flat_keys(context)
        config_from_context(context.get)  # fail fast, before loading CDK
    from aws_cdk import App, Validations
    from cdk_nag import AwsSolutionsChecks

    from stacks.data_stack import DataStack
    from stacks.monitoring_stack import MonitoringStack
    from stacks.serving_stack import ServingStack
    from stacks.training_stack import TrainingStack
    from stacks.warehouse_stack import WarehouseStack

    app = App(context=dict(context) if context is not None else None, outdir=outdir)
    config = read_config(app)
    prefix = stack_prefix(config)
    project = config.project_name
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))

    data = DataStack(app, f"{prefix}Data", config=config, description=f"{project}: KMS key and buckets")
    training = TrainingStack(
        app,
        f"{prefix}Training",
        config=config,
        data=data,
        description=f"{project}: model registry and SageMaker training pipeline",
    )
    warehouse = WarehouseStack(app, f"{prefix}Warehouse", config=config, data=data)
    serving = ServingStack(
        app,
        f"{prefix}Serving",
        config=config,
        data=data,
        training=training,
        warehouse=warehouse,
        description=f"{project}: release controller, endpoint cleanup and prediction API",
    )
    MonitoringStack(
        app, f"{prefix}Monitoring", config=config, data=data, serving=serving, warehouse=warehouse
    )
    return app


def main() -> None:
    """``cdk synth`` / ``python app.py``: fail fast on a bad configuration (before loading CDK), then synth."""
    from_cli = CLI_CONTEXT_ENV in os.environ or CLI_CONTEXT_OVERFLOW_ENV in os.environ
    context = None if from_cli else cdk_json_context()
    try:
        if CLI_CONTEXT_ENV in os.environ:
            cli_context = json.loads(os.environ[CLI_CONTEXT_ENV] or "{}")
            for warning in check_flat_keys(cli_context):
                print(f"trainserve: warning: {warning}", file=sys.stderr)
            config_from_context(cli_context.get)
        elif context is not None:
            config_from_context(context.get)
        app = build_app(context)
    except ConfigError as exc:
        sys.exit(f"trainserve: configuration error: {exc}")
    app.synth()


if __name__ == "__main__":
    main()
