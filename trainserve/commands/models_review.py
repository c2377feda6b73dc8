"""``trainserve models approve|reject V [--note TEXT]``: a person's decision on a registered model version.

Only the registry changes here (``UpdateModelPackage``). The release itself follows from the registry's
state change event: on AWS, EventBridge invokes the release controller; locally, the approval watcher
turns the change into the same event. The integrator adds ``approve`` and ``reject`` to the ``models``
group.
"""

from __future__ import annotations

import dataclasses

import click
import release_planner
from release_planner import APPROVED, REJECTED, ReleaseBlocked
from rich.markup import escape

from trainserve.commands import options
from trainserve.commands.endpoint import release_adapter
from trainserve.console import UserError, console, err_console, print_json

NOTE_HELP = (
    "Why (stored as the model package's ApprovalDescription; a status change without --note clears the "
    "previous decision's note)."
)


MAX_NOTE_CHARS = 1024  # UpdateModelPackage's ApprovalDescription: 0 to 1024 characters


def review(local: bool | None, version_text: str, status: str, note: str | None, as_json: bool) -> None:
    version = release_planner.version_of(version_text)
    if version is None:
        raise UserError(f"{version_text!r} is not a model version (expected a number such as 3, or v3)")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise UserError(
            f"--note is {len(note)} characters; the model registry keeps at most {MAX_NOTE_CHARS} (SageMaker's "
            "ApprovalDescription); nothing was changed"
        )
    target = options.resolve_target(local)
    adapter = release_adapter(target)
    registry = adapter.read_registry()
    group = adapter.settings.model_package_group
    package = next((p for p in registry if p.version == version), None)
    if package is None:
        known = ", ".join(str(p.version) for p in registry) or "none"
        raise UserError(
            f"model version {version} is not in the model package group {group} (versions: {known})"
        )
    changed = package.status != status
    applied = False  # an approved version not live, approved again: its approval's plan applied now
    again = None
    if changed:
        # The note belongs to this decision: without --note the previous decision's note is cleared (an empty
        # ApprovalDescription: the API allows 0 to 1024 characters), so the registry never shows a rejection's
        # reason beside an approval.
        plan, why = planned_release(adapter, registry, version, status)
        adapter.sm.update_model_package(
            ModelPackageArn=package.arn, ModelApprovalStatus=status, ApprovalDescription=note or ""
        )
    else:
        # No status change, so no release event. An approved version that is not live gets its approval's
        # plan applied now (``_approve_again``); otherwise the plan is the controller's for the registry as it
        # is (what `trainserve endpoint sync` would do). A note given replaces the decision's note.
        again = _approve_again(target, adapter, version) if status == APPROVED else None
        if note:
            adapter.sm.update_model_package(ModelPackageArn=package.arn, ApprovalDescription=note)
        if again is not None:
            (plan, applied), why = again, None
        else:
            plan, why = planned_release(adapter, registry)
    # the note in force afterwards: the one given, none (a status change without --note clears it), or the
    # one the registry keeps (the same status without --note changes nothing)
    in_force = note or None
    if not changed and not note:
        described = adapter.sm.describe_model_package(ModelPackageName=package.arn)
        in_force = described.get("ApprovalDescription") or None
    result = {
        "version": version,
        "model_package_arn": package.arn,
        "previous_status": package.status,
        "status": status,
        "note": in_force,
        "changed": changed,
        "release_plan": plan,
        "applied": applied,
    }
    if as_json:
        print_json(result)
        return
    if changed:
        console.print(f"v{version}: {package.status} → {status}" + (f" ({escape(note)})" if note else ""))
        print_plan(plan, why)
        return
    if applied and plan:
        console.print(
            f"v{version} is already {status} but was not served: its approval applied again: "
            + "; ".join(plan["changes"])
        )
        return
    if note:
        console.print(f"v{version} is already {status}; its note is now: {escape(note)}")
    elif again is not None and plan and plan["changes"]:  # approved again; the plan would not add it
        console.print(f"v{version} is already {status}: nothing changed ({'; '.join(plan['changes'])})")
    else:
        console.print(f"v{version} is already {status}: nothing changed")
    if plan and plan["action"] != "none":
        err_console.print(
            "[yellow]not yet in line with the registry:[/] " + "; ".join(plan["changes"]) + " (the release "
            "controller applies it if a release event for it is on its way; `trainserve endpoint sync` "
            "applies it now)"
        )
    if plan and plan["blocked"]:
        err_console.print(f"[bold yellow]a person must act:[/] {plan['blocked']}")


def _approve_again(target, adapter, version: int) -> tuple[dict, bool] | None:
    """An approved version that is not live: the release controller's decision for its approval event,
    applied now (as ``trainserve endpoint sync`` applies a reconcile), since approving it again changes no
    status and so sends no event (a challenger dropped to make room comes back this way). (the plan, whether
    it changed the endpoint); None when the version is live (nothing to do) or there is no endpoint (the
    plan for the registry as it is then says what comes); a UserError, before any change, when the endpoint
    is busy. A release controller run for the same version at the same time ends in the same endpoint (its
    plan finds the version live)."""
    from trainserve.commands.endpoint import endpoint_changes
    from trainserve.commands.traffic import run_steps

    with endpoint_changes(target):
        try:
            state = adapter.read_endpoint()
        except ReleaseBlocked:
            return None
        # no endpoint yet: the approval's own event creates it (the controller may be doing so now), or
        # `endpoint sync` does (the plan for the registry as it is says so)
        if not state.exists or state.variant(version) is not None:
            return None
        if state.status != "InService":
            raise UserError(
                f"endpoint {adapter.settings.endpoint_name} is {state.status}: v{version} is approved but not "
                "served, and approving it again applies its approval on an endpoint in service; run this "
                "command again once `trainserve endpoint status` shows InService (nothing was changed)"
            )
        # read again under the lock, as the traffic commands do: what the plan decides from is current
        registry = adapter.with_inputs(adapter.read_registry(), state, version)
        try:
            decision = release_planner.plan(registry, state, adapter.settings, (version, APPROVED))
        except ReleaseBlocked:
            return None
        run_steps(adapter, decision, state, registry, target.is_local)
    return _plan_of(decision), bool(decision.steps)


def _plan_of(decision: release_planner.Decision) -> dict:
    """A decision as ``release_plan`` shows it."""
    return {"action": decision.action, "changes": list(decision.changes), "blocked": decision.blocked}


def print_plan(plan: dict | None, why: str | None) -> None:
    """What the release controller will do with the decision, as the plan says: a change, none, or blocked."""
    if plan is None:
        console.print(
            f"the release controller now decides what the endpoint does (no preview: {escape(why or '')}); "
            "watch it with: trainserve endpoint status"
        )
        return
    if plan["action"] == "none" and plan["blocked"]:
        console.print("the endpoint stays as it is until a person acts (below)")
    elif plan["action"] == "none":
        reason = "; ".join(plan["changes"]) or "it already matches the registry"
        console.print(f"the endpoint stays as it is ({reason}): the release controller changes nothing")
    else:
        console.print("the release controller now: " + "; ".join(plan["changes"]))
        console.print("watch it with: trainserve endpoint status")
    if plan["blocked"]:
        err_console.print(
            f"[bold yellow]warning: a person must act:[/] {plan['blocked']} (the release controller's run "
            "for this change fails, into its failure queue)"
        )


def release_decision(adapter, registry, version: int | None = None, status: str | None = None):
    """The release controller's decision for the registry as it is about to be (with ``version`` at
    ``status``; without them, as it is) and the endpoint as it is: the same planner, with the input features
    of the versions it compares. Raises what reading the endpoint or planning raises (``ReleaseBlocked``...)."""
    after = [dataclasses.replace(p, status=status) if p.version == version else p for p in registry]
    event = (version, status) if version is not None and status is not None else None
    state = adapter.read_endpoint()
    after = adapter.with_inputs(after, state, version)
    return release_planner.plan(after, state, adapter.settings, event)


def planned_release(
    adapter, registry, version: int | None = None, status: str | None = None
) -> tuple[dict | None, str | None]:
    """What the release controller will do: the same planner, on the registry as it is about to be (with
    ``version`` at ``status``; without them, as it is) and the endpoint as it is. (plan, None), or (None, why)
    if the endpoint cannot be read or planned for now (the controller says why when it runs). An endpoint
    the controller cannot change at all (Failed...) is a plan that changes nothing, blocked."""
    try:
        decision = release_decision(adapter, registry, version, status)
    except ReleaseBlocked as exc:
        return {"action": "none", "changes": [], "blocked": str(exc)}, None
    except Exception as exc:  # noqa: BLE001 - a preview only; the decision itself is the registry's
        return None, str(exc) or type(exc).__name__
    return _plan_of(decision), None


@click.command("approve")
@click.argument("version")
@click.option("--note", help=NOTE_HELP)
@options.local_option
@options.json_option
def approve(version: str, note: str | None, local: bool | None, as_json: bool) -> None:
    """Approve model VERSION (3 or v3): the release controller serves it (a challenger, or the first champion)."""
    review(local, version, APPROVED, note, as_json)


@click.command("reject")
@click.argument("version")
@click.option("--note", help=NOTE_HELP)
@options.local_option
@options.json_option
def reject(version: str, note: str | None, local: bool | None, as_json: bool) -> None:
    """Reject model VERSION: if it is live, the release controller removes it from the endpoint."""
    review(local, version, REJECTED, note, as_json)
