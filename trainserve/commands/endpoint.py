"""``trainserve endpoint status``: the endpoint's variants, model versions, weights and champion.

Also the release helpers the ``traffic`` and ``models approve|reject`` commands share: the release
controller's settings (read from the deployed release function's environment, so the CLI acts exactly as
the controller does; from the configuration when that function is absent) and its SageMaker adapter.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import click
import release_planner
import sagemaker_adapter
from botocore.exceptions import ClientError
from release_planner import ReleaseBlocked, ReleaseSettings, SettingsError
from sagemaker_adapter import EndpointBusy, SageMakerAdapter

from trainserve.commands import options
from trainserve.console import UserError, console, err_console, print_json, table
from trainserve.target import Target


def release_settings(target: Target) -> ReleaseSettings:
    """The release controller's settings: its function's environment, else built from the configuration."""
    name = target.names.release_function
    try:
        env = target.client("lambda").get_function_configuration(FunctionName=name).get("Environment", {})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        env = {}
    variables = env.get("Variables") or {}
    if variables:
        try:
            return ReleaseSettings.from_env(variables)
        except SettingsError as exc:
            raise UserError(f"release function {name}: {exc}") from None
    if env.get("Error"):  # e.g. no kms:Decrypt on the key that encrypts the function's environment
        err_console.print(
            f"[yellow]warning:[/] cannot read the environment of {name} ({env['Error'].get('Message', '')}); "
            "using the configuration instead (without data capture)"
        )
    cfg, names = target.config, target.names
    return ReleaseSettings(
        project_name=cfg.project_name,
        endpoint_name=names.endpoint_name,
        model_package_group=names.model_package_group,
        challenger_weight=cfg.challenger_weight,
        max_live_variants=cfg.max_live_variants,
        instance_type=cfg.serving_instance_type,
        instance_count=cfg.serving_instance_count,
        traffic_routing=cfg.traffic_routing,
        guardrail_wait_seconds=cfg.guardrail_wait_seconds,
    )


def release_adapter(target: Target) -> SageMakerAdapter:
    return SageMakerAdapter(release_settings(target), target.client("sagemaker"))


@contextlib.contextmanager
def endpoint_changes(target: Target) -> Iterator[None]:
    """Around a command that changes the endpoint, from reading it to the end of its change: on the local cloud,
    hold its endpoint lock (``component.ENDPOINT_LOCK``, which the approval watcher holds while the release
    controller runs), so that two changes never plan on an endpoint the other is changing; a command that
    finds it held waits (and says so). On AWS nothing: SageMaker refuses an update while another runs."""
    if not target.is_local:
        yield
        return
    from trainserve.local.component import ENDPOINT_LOCK, ENDPOINT_LOCK_WAIT_S, exclusive
    from trainserve.target import state_dir

    def waiting() -> None:
        err_console.print("waiting for another change of the endpoint to finish ...")

    home = state_dir()
    home.mkdir(parents=True, exist_ok=True)
    lock = home / ENDPOINT_LOCK
    with exclusive(lock, time.monotonic() + ENDPOINT_LOCK_WAIT_S, on_wait=waiting) as held:
        if not held:
            raise UserError(
                f"another change of the endpoint has held it for {ENDPOINT_LOCK_WAIT_S:.0f} s ({lock}); nothing "
                "was changed: try again"
            )
        yield


def read_ready_endpoint(adapter: SageMakerAdapter) -> release_planner.EndpointState:
    """The endpoint, refusing to plan a change while it is busy."""
    try:
        return adapter.wait_until_ready(timeout_s=0)
    except EndpointBusy as exc:
        raise UserError(f"{exc}; try again when it is InService (trainserve endpoint status)") from None
    except ReleaseBlocked as exc:
        raise UserError(str(exc)) from None


def endpoint_report(
    adapter: SageMakerAdapter, state: release_planner.EndpointState | None = None
) -> dict[str, Any]:
    """The endpoint as plain data: status, champion, and each variant with version, package and weights."""
    try:
        state = state or adapter.read_endpoint()
    except ReleaseBlocked as exc:
        raise UserError(str(exc)) from None
    registry = adapter.read_registry()
    champion = state.champion
    # What the release controller would still change (a failed or pending release), and whether a person
    # must act: the same planner, in reconcile mode, over the same registry and endpoint.
    blocked, pending = None, None
    try:
        decision = release_planner.plan(registry, state, adapter.settings)
        blocked = decision.blocked
        pending = decision.reason if decision.steps else None
    except ReleaseBlocked as exc:
        blocked = str(exc)
    return {
        "endpoint": adapter.settings.endpoint_name,
        "exists": state.exists,
        "status": state.status if state.exists else "absent",
        "champion": release_planner.variant_name(champion) if champion is not None else None,
        "endpoint_config": state.config_name,
        "variants": sagemaker_adapter.describe_variants(state, registry),
        "blocked": blocked,
        "pending_change": pending,
    }


def print_report(report: dict[str, Any]) -> None:
    if report.get("blocked"):
        err_console.print(f"[bold yellow]a person must act:[/] {report['blocked']}")
    if report.get("pending_change"):
        err_console.print(f"[yellow]not yet in line with the registry:[/] {report['pending_change']}")
    if not report["exists"]:
        if report.get("pending_change"):  # an approved version waits for the release controller
            console.print(
                f"endpoint {report['endpoint']} does not exist yet: the release controller is creating it "
                "(locally within seconds of the approval; `trainserve endpoint sync` applies the change now)"
            )
        else:
            console.print(
                f"endpoint {report['endpoint']} does not exist yet: approve a model version "
                "(trainserve models approve V) and the release controller creates it"
            )
        return
    rows = [
        [
            v["variant"] + (" ★" if v["champion"] else ""),
            "champion" if v["champion"] else "challenger",
            f"{v['current_weight']:.1%}" if v["current_weight"] is not None else "",
            f"{v['desired_weight']:.1%}",
            f"{v['instance_count']} × {v['instance_type']}",
            v["approval_status"],
            (v["model_package_arn"] or "").split(":model-package/")[-1],
        ]
        for v in report["variants"]
    ]
    table(
        f"endpoint {report['endpoint']} ({report['status']})",
        ["variant", "role", "current", "desired", "instances", "approval", "model package"],
        rows,
    )


@click.group()
def endpoint() -> None:
    """The SageMaker endpoint the release controller manages."""


@endpoint.command("status")
@options.local_option
@options.json_option
def status(local: bool | None, as_json: bool) -> None:
    """Variants, model versions, current and desired weights, the champion."""
    target = options.resolve_target(local)
    report = endpoint_report(release_adapter(target))
    if as_json:
        print_json(report)
    else:
        print_report(report)


@endpoint.command("sync")
@options.local_option
@options.json_option
def sync(local: bool | None, as_json: bool) -> None:
    """Make the endpoint match the registry now, as the release controller would (e.g. after a release
    event ended in the failure queue). Only versions already live or the first approval are served (with
    max_live_variants 1: the newest approved version); rejected ones (a rollback rejects) are removed."""
    from trainserve.commands.traffic import apply_decision

    target = options.resolve_target(local)
    with endpoint_changes(target):
        adapter = release_adapter(target)
        state = read_ready_endpoint(adapter)
        # with the input features of the live and the newest approved versions: a newer approved version
        # trained on other features is named, with why it is not served
        registry = adapter.with_inputs(adapter.read_registry(), state)
        try:
            decision = release_planner.plan(registry, state, adapter.settings)
        except ReleaseBlocked as exc:
            raise UserError(str(exc)) from None
        apply_decision(adapter, decision, state, registry, target.is_local, as_json, target)
