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
from release_planner import APPROVED, REJECTED

from trainserve.commands import options
from trainserve.commands.endpoint import release_adapter
from trainserve.console import UserError, console, print_json


def review(local: bool | None, version_text: str, status: str, note: str | None, as_json: bool) -> None:
    version = release_planner.version_of(version_text)
    if version is None:
        raise UserError(f"{version_text!r} is not a model version (expected a number such as 3, or v3)")
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
    result = {
        "version": version,
        "model_package_arn": package.arn,
        "previous_status": package.status,
        "status": status,
        "note": note,
        "changed": package.status != status,
    }
    if package.status != status:
        result["release_plan"] = planned_release(adapter, registry, version, status)
        kwargs = {"ModelPackageArn": package.arn, "ModelApprovalStatus": status}
        if note:
            kwargs["ApprovalDescription"] = note
        adapter.sm.update_model_package(**kwargs)
    if as_json:
        print_json(result)
    elif not result["changed"]:
        console.print(f"v{version} is already {status}: nothing changed")
    else:
        console.print(f"v{version}: {package.status} → {status}" + (f" ({note})" if note else ""))
        plan = result.get("release_plan")
        if plan and plan["changes"]:
            console.print("the release controller now: " + "; ".join(plan["changes"]))
        console.print(
            "the release controller now updates the endpoint; watch it with: trainserve endpoint status"
        )


def planned_release(adapter, registry, version: int, status: str) -> dict | None:
    """What the release controller will do with this decision: the same planner, on the registry as it is
    about to be and the endpoint as it is (None if the endpoint cannot be read or planned for now; the
    controller says why when it runs)."""
    after = [dataclasses.replace(p, status=status) if p.version == version else p for p in registry]
    try:
        decision = release_planner.plan(after, adapter.read_endpoint(), adapter.settings, (version, status))
    except Exception:  # noqa: BLE001 - a preview only; the decision itself is the registry's
        return None
    return {"action": decision.action, "changes": list(decision.changes), "blocked": decision.blocked}


@click.command("approve")
@click.argument("version")
@click.option("--note", help="Why (stored as the model package's ApprovalDescription).")
@options.local_option
@options.json_option
def approve(version: str, note: str | None, local: bool | None, as_json: bool) -> None:
    """Approve model VERSION (3 or v3): the release controller serves it (a challenger, or the first champion)."""
    review(local, version, APPROVED, note, as_json)


@click.command("reject")
@click.argument("version")
@click.option("--note", help="Why (stored as the model package's ApprovalDescription).")
@options.local_option
@options.json_option
def reject(version: str, note: str | None, local: bool | None, as_json: bool) -> None:
    """Reject model VERSION: if it is live, the release controller removes it from the endpoint."""
    review(local, version, REJECTED, note, as_json)
