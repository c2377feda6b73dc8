"""``trainserve traffic set V=W ... | promote V | rollback``: live traffic changes on the endpoint.

The same planner functions and SageMaker adapter as the release controller Lambda: a request the rules
refuse (unknown variant, negative or all-zero weights, ...) is an error and nothing is changed.

``rollback`` drains the challengers to 0% at once, then records the decision in the model registry, the
source of truth: each rolled-back challenger is rejected ("rolled back by trainserve traffic rollback at
<UTC>"), so the release controller's rejection path removes it from the endpoint, and neither a redelivered
approval event nor ``endpoint sync`` brings it back; ``trainserve models approve V`` re-admits it.

``promote`` rejects the variants it takes off that are newer than the new champion ("taken off the endpoint
by trainserve traffic promote vN at <UTC>"): still approved, they would come back with a repeated approval
event. Older ones stay approved (the newest of them replaces the
champion if it is rejected).

A command that takes off the endpoint the variant the proxy's ``TARGET_VARIANT`` pins (read from the proxy
function's environment) warns, with how to clear the pin (``warnings`` in ``--json``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click
import proxy_logic
import release_planner
from botocore.exceptions import ClientError
from release_planner import REJECTED, Decision, EndpointState, PackageVersion, PlanError
from sagemaker_adapter import EndpointBusy, SageMakerAdapter

from trainserve.commands import options
from trainserve.commands.endpoint import (
    endpoint_changes,
    endpoint_report,
    print_report,
    read_ready_endpoint,
    release_adapter,
)
from trainserve.console import UserError, console, err_console, print_json, step
from trainserve.target import Target

# How long to wait for the endpoint between two steps (drain, then redeploy). Blue/green guardrails on AWS
# bake for GUARDRAIL_WAIT_SECONDS; the local cloud is InService at once.
AWS_STEP_WAIT_S = 3600.0
AWS_POLL_S = 15.0
LOCAL_STEP_WAIT_S = 60.0
LOCAL_POLL_S = 0.2
CLEAR_PIN = "trainserve params set TARGET_VARIANT="


def run_steps(
    adapter: SageMakerAdapter, decision: Decision, state: EndpointState, registry, local: bool
) -> EndpointState:
    """Apply a planner decision's steps (waiting between them); the endpoint afterwards."""
    if not decision.steps:
        return state
    try:
        with step(decision.reason):
            return adapter.apply(
                decision,
                registry,
                state,
                step_wait_s=LOCAL_STEP_WAIT_S if local else AWS_STEP_WAIT_S,
                poll_s=LOCAL_POLL_S if local else AWS_POLL_S,
            )
    except EndpointBusy as exc:
        raise UserError(f"{exc}; run the command again once the endpoint is InService") from None


def report_outcome(
    adapter: SageMakerAdapter,
    decision: Decision,
    state: EndpointState,
    as_json: bool,
    warnings: Iterable[str] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """Print the endpoint (with the decision, any ``extra`` fields and the warnings). ``rejected`` (the versions
    the command rejected in the registry) is always there, empty for the commands that reject none."""
    warnings = list(warnings)
    report = endpoint_report(adapter, state)
    report["action"] = decision.action
    report["reason"] = decision.reason
    report["rejected"] = []
    report.update(extra or {})
    report["warnings"] = warnings
    if as_json:
        print_json(report)
        return
    for warning in warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}")
    print_report(report)


def apply_decision(
    adapter: SageMakerAdapter,
    decision: Decision,
    state: EndpointState,
    registry,
    local: bool,
    as_json: bool,
    target: Target | None = None,
) -> None:
    """Apply a planner decision (waiting between its steps), then print the endpoint. With ``target``, a
    decision that takes off the variant the proxy pins (``TARGET_VARIANT``) also warns."""
    removed = removed_variants(state, decision)
    if not decision.steps and not as_json:
        console.print(f"nothing to change: {decision.reason}")
    after = run_steps(adapter, decision, state, registry, local)
    warnings = pin_warnings(target, removed) if target is not None else []
    report_outcome(adapter, decision, after, as_json, warnings)


def removed_variants(state: EndpointState, decision: Decision) -> list[str]:
    """The live variants ``decision`` takes off the endpoint."""
    if not decision.steps or decision.desired is None:
        return []
    keep = set(decision.desired.versions)
    return [v.name for v in state.variants if v.version not in keep]


def pinned_variant(target: Target) -> str | None:
    """The variant the proxy pins (its function's ``TARGET_VARIANT``, as the proxy parses it), or None.
    ClientError other than a missing function propagates."""
    from trainserve.local.resources import function_environment

    try:
        env = function_environment(target.client("lambda"), target.names.proxy_function)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise
    params, _problems = proxy_logic.parse_params(env)
    return params.target_variant


def pin_warnings(target: Target, removed: Iterable[str], rollback: bool = False) -> list[str]:
    """A warning when the proxy's TARGET_VARIANT pins one of the ``removed`` variants (``rollback``: they are
    drained now and removed by the release controller)."""
    removed = sorted(set(removed))
    if not removed:
        return []
    function = target.names.proxy_function
    try:
        pin = pinned_variant(target)
    except ClientError as exc:
        return [
            f"could not read TARGET_VARIANT of the proxy function {function} "
            f"({exc.response.get('Error', {}).get('Code', 'error')}): if it pins {', '.join(removed)}, "
            f"that pin is no longer live; clear it with: {CLEAR_PIN}"
        ]
    if pin not in removed:
        return []
    meanwhile = (
        f"the pinned requests still reach {pin} at 0% until the release controller removes it, and then "
        if rollback
        else ""
    )
    return [
        f"the proxy's TARGET_VARIANT pins {pin} (function {function}), which this command takes off the "
        f"endpoint: {meanwhile}the pin is no longer live; clear it with: {CLEAR_PIN}"
    ]


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
    """Set live weights (no redeploy): traffic set v1=0.7 v2=0.3

    Naming every live variant: shares that sum to 1, or ratios (a weight above 1: v1=7 v2=3 is 70/30).
    Naming some: each weight is a share (0 to 1) and the variants not named share the rest in proportion to
    their current weights (on 95/5, v1=0.7 gives v2 30%). Shares that do not sum to 1 are refused. The
    champion does not change (use `traffic promote`).
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
    with endpoint_changes(target):
        adapter = release_adapter(target)
        state = read_ready_endpoint(adapter)
        decision = _plan(release_planner.set_weights, state, requested)
        apply_decision(adapter, decision, state, [], target.is_local, as_json, target)


@traffic.command("promote")
@click.argument("variant")
@options.local_option
@options.json_option
def promote(variant: str, local: bool | None, as_json: bool) -> None:
    """Make VARIANT (v2 or 2) the champion at 100%; the others drain at once and are then removed.

    An approved version that is not live but newer than the champion can be promoted too: it is deployed
    alone at 100%. The variants taken off that are newer than VARIANT are rejected in the model registry, so
    that no repeated approval event brings them back (older ones stay approved).
    """
    target = options.resolve_target(local)
    with endpoint_changes(target):
        adapter = release_adapter(target)
        state = read_ready_endpoint(adapter)
        # with the input features of the versions involved: a promotion that changes them says so
        registry = adapter.with_inputs(adapter.read_registry(), state, release_planner.version_of(variant))
        decision = _plan(release_planner.promote, state, variant, registry)
        champion = decision.desired.champion if decision.desired is not None else 0
        removed = removed_variants(state, decision)
        # The variants newer than the new champion are taken off by a person's decision; still approved, a
        # redelivered approval event would bring them back. Older ones cannot come back (older than the
        # champion) and stay approved: the newest of them replaces the champion if it is ever rejected.
        losers = sorted(v.version for v in state.variants if v.version > champion) if decision.steps else []
        if not decision.steps and not as_json:
            console.print(f"nothing to change: {decision.reason}")
        after = run_steps(adapter, decision, state, registry, target.is_local)
        description = (
            f"taken off the endpoint by trainserve traffic promote {release_planner.variant_name(champion)} at "
            f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )
        rejected, notes = reject_in_registry(adapter, registry, losers, description, rollback=False)
        if not as_json:
            for note in notes:
                console.print(note)
        report_outcome(
            adapter, decision, after, as_json, pin_warnings(target, removed), {"rejected": rejected}
        )


@traffic.command("rollback")
@options.local_option
@options.json_option
def rollback(local: bool | None, as_json: bool) -> None:
    """Send every challenger to 0% at once (weights only) and reject it in the model registry, so that the
    release controller removes it and no redelivered approval or endpoint sync brings it back.

    Each rolled-back version's ApprovalDescription says "rolled back by trainserve traffic rollback at <UTC>";
    `trainserve models approve V` re-admits one (as a challenger).
    """
    target = options.resolve_target(local)
    with endpoint_changes(target):
        adapter = release_adapter(target)
        state = read_ready_endpoint(adapter)
        registry = adapter.read_registry()
        decision = _plan(release_planner.rollback, state, False)
        challengers = release_planner.rollback_challengers(state)
        state = run_steps(adapter, decision, state, registry, target.is_local)
        description = f"rolled back by trainserve traffic rollback at {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        rejected, notes = reject_in_registry(adapter, registry, challengers, description, rollback=True)
        warnings = pin_warnings(target, [release_planner.variant_name(v) for v in challengers], rollback=True)
        if not as_json:
            if not decision.steps:
                console.print(
                    f"{'nothing to drain' if challengers else 'nothing to change'}: {decision.reason}"
                )
            for note in notes:
                console.print(note)
        report_outcome(adapter, decision, state, as_json, warnings, {"rejected": rejected})


def reject_in_registry(
    adapter: SageMakerAdapter,
    registry: list[PackageVersion],
    versions: Iterable[int],
    description: str,
    rollback: bool,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Reject in the registry each version taken off the endpoint (by ``rollback``: drained to 0%, and the
    release controller then removes it; by ``promote``: removed already), with ``description`` as its
    ApprovalDescription, unless it is already rejected: what was rejected (``--json``'s ``rejected``), and a
    sentence per version for the text output."""
    by_version = {p.version: p for p in registry}
    rejected: list[dict[str, Any]] = []
    notes: list[str] = []
    for version in versions:
        name = release_planner.variant_name(version)
        package = by_version.get(version)
        if package is None or package.status == REJECTED:
            if rollback:
                why = "is not in the model registry" if package is None else "was already rejected"
                notes.append(f"{name} {why}: the release controller removes it")
            continue
        try:
            adapter.reject(package, description)
        except ClientError as exc:
            if rollback:
                raise UserError(
                    f"{name} is drained to 0%, but rejecting it in the registry failed ({exc}); it stays live at "
                    "0% until it is rejected: run trainserve traffic rollback again"
                ) from None
            raise UserError(
                f"the promotion is done and {name} is off the endpoint, but rejecting it in the registry failed "
                f"({exc}); it is still approved, so a repeated approval event could bring it back as a "
                f"challenger: reject it with trainserve models reject {version}"
            ) from None
        rejected.append(
            {
                "variant": name,
                "version": version,
                "model_package_arn": package.arn,
                "previous_status": package.status,
                "approval_description": description,
            }
        )
        effect = "the release controller removes it from the endpoint, and" if rollback else "so"
        notes.append(
            f"{name} rejected in the model registry ({description}): {effect} no repeated approval event or "
            f"endpoint sync brings it back; to re-admit it: trainserve models approve {version}"
        )
    return rejected, notes
