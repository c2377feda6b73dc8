"""``trainserve traffic set V=W ... | promote V | rollback``: live traffic changes on the endpoint.

The same planner functions and SageMaker adapter as the release controller Lambda: a request the rules
refuse (unknown variant, negative or all-zero weights, ...) is an error and nothing is changed.
"""

from __future__ import annotations

import click
import release_planner
from release_planner import Decision, PlanError
from sagemaker_adapter import EndpointBusy, SageMakerAdapter

from trainserve.commands import options
from trainserve.commands.endpoint import endpoint_report, print_report, read_ready_endpoint, release_adapter
from trainserve.console import UserError, console, print_json, step

# How long to wait for the endpoint between two steps (drain, then redeploy). Blue/green guardrails on AWS
# bake for GUARDRAIL_WAIT_SECONDS; the local cloud is InService at once.
AWS_STEP_WAIT_S = 3600.0
AWS_POLL_S = 15.0
LOCAL_STEP_WAIT_S = 60.0
LOCAL_POLL_S = 0.2


def apply_decision(
    adapter: SageMakerAdapter, decision: Decision, state, registry, local: bool, as_json: bool
) -> None:
    """Apply a planner decision (waiting between its steps), then print the endpoint."""
    if decision.steps:
        try:
            with step(decision.reason):
                state = adapter.apply(
                    decision,
                    registry,
                    state,
                    step_wait_s=LOCAL_STEP_WAIT_S if local else AWS_STEP_WAIT_S,
                    poll_s=LOCAL_POLL_S if local else AWS_POLL_S,
                )
        except EndpointBusy as exc:
            raise UserError(f"{exc}; run the command again once the endpoint is InService") from None
    elif not as_json:
        console.print(f"nothing to change: {decision.reason}")
    report = endpoint_report(adapter, state)
    report["action"] = decision.action
    report["reason"] = decision.reason
    if as_json:
        print_json(report)
    else:
        print_report(report)


def _plan(fn, *args) -> Decision:
    try:
        return fn(*args)
    except PlanError as exc:
        raise UserError(str(exc)) from None


@click.group()
def traffic() -> None:
    """Live traffic: weights, promotion, rollback."""


@traffic.command("set")
@click.argument("weights", nargs=-1, required=True, metavar="VARIANT=WEIGHT...")
@options.local_option
@options.json_option
def set_(weights: tuple[str, ...], local: bool | None, as_json: bool) -> None:
    """Set live weights (normalized to sum 1; no redeploy): traffic set v1=0.7 v2=0.3

    Variants not named keep their current weight before normalization. The champion does not change
    (use `traffic promote`).
    """
    requested: dict[str, str] = {}
    for item in weights:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UserError(f"{item!r} is not VARIANT=WEIGHT (e.g. v1=0.9)")
        version = release_planner.version_of(name)
        key = release_planner.variant_name(version) if version else name.strip()
        if key in requested:
            raise UserError(f"variant {key} is given twice")
        requested[key] = value.strip()
    target = options.resolve_target(local)
    adapter = release_adapter(target)
    state = read_ready_endpoint(adapter)
    decision = _plan(release_planner.set_weights, state, requested)
    apply_decision(adapter, decision, state, [], target.is_local, as_json)


@traffic.command("promote")
@click.argument("variant")
@options.local_option
@options.json_option
def promote(variant: str, local: bool | None, as_json: bool) -> None:
    """Make VARIANT (v2 or 2) the champion at 100%; the others drain at once and are then removed."""
    target = options.resolve_target(local)
    adapter = release_adapter(target)
    state = read_ready_endpoint(adapter)
    registry = adapter.read_registry()
    decision = _plan(release_planner.promote, state, variant, registry)
    apply_decision(adapter, decision, state, registry, target.is_local, as_json)


@traffic.command("rollback")
@options.local_option
@options.json_option
def rollback(local: bool | None, as_json: bool) -> None:
    """Send every challenger to 0% at once (weights only), then remove them: the champion serves alone."""
    target = options.resolve_target(local)
    adapter = release_adapter(target)
    state = read_ready_endpoint(adapter)
    decision = _plan(release_planner.rollback, state)
    apply_decision(adapter, decision, state, [], target.is_local, as_json)
