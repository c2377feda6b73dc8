"""``trainserve models``: the model registry (``list`` here; ``approve``/``reject`` are added to this group
from ``trainserve/commands/models_review.py``)."""

from __future__ import annotations

import click

from trainserve.commands.options import json_option, local_option, resolve_target
from trainserve.console import UserError, console, print_json, table
from trainserve.registry import APPROVAL_STATUSES, RegistryError, list_model_versions


@click.group("models")
def models() -> None:
    """Model versions in the registry: list, approve, reject."""


@models.command("list")
@local_option
@click.option(
    "--status",
    type=click.Choice(APPROVAL_STATUSES, case_sensitive=False),
    default=None,
    help="Only versions with this approval status.",
)
@json_option
def list_models(local: bool | None, status: str | None, as_json: bool) -> None:
    """Versions, approval status, creation time, estimator and evaluation metrics."""
    if status:
        status = next(s for s in APPROVAL_STATUSES if s.lower() == status.lower())
    target = resolve_target(local)
    sm = target.client("sagemaker")
    group = target.names.model_package_group
    try:
        versions = list_model_versions(sm, group, status, s3=target.client("s3"))
    except RegistryError as exc:
        raise UserError(str(exc)) from exc
    if as_json:
        # No note is null, however the registry says it (SageMaker leaves the field out; moto keeps "")
        print_json(
            [{**v.as_json(), "approval_description": v.approval_description or None} for v in versions]
        )
        return
    if not versions:
        console.print(f"no model versions{f' with status {status}' if status else ''} in {group}")
        return
    rows = []
    for v in versions:
        metrics = "  ".join(f"{k} {val:.3f}" for k, val in v.metrics.items())
        rows.append(
            [
                v.version,
                v.approval_status,
                v.created.strftime("%Y-%m-%d %H:%M") if v.created else "",
                v.estimator or "",
                metrics,
                v.approval_description or "",
            ]
        )
    table(
        f"Model versions in {group}", ["version", "status", "created", "estimator", "metrics", "note"], rows
    )
