"""``trainserve params get [--json]`` and ``trainserve params set NAME=VALUE ...``: the proxy's parameters.

They are the environment variables of the proxy Lambda function (``target.names.proxy_function``), read
with ``GetFunctionConfiguration`` and changed with ``UpdateFunctionConfiguration`` (merged into the existing
environment), locally (moto's function record) exactly as on AWS. ``set`` returns once the change is in
force: on AWS when the function update has completed (new invocations get the new environment), locally
when the local API has re-read it (``request_refresh``), so the next request sees it. ``set`` checks every
value with the proxy's own parser first, and a ``TARGET_VARIANT`` against the endpoint's live variants: an
unknown name, a bad value or a variant that is not live is an error and nothing is changed.

A pin can stop being live after it was set (``traffic rollback``, a rejection, a promote): the proxy then
ignores it and routes by the endpoint's weights. ``get`` (and ``set``'s answer) show that as a problem of
``TARGET_VARIANT``, in the table's note and in ``--json``'s ``problems``, and show what the proxy does: no pin
in force (``effective.target_variant`` null, the table's "in force" ``(none)``), while ``parameters`` (the
table's "set to") keeps the configured name.
"""

from __future__ import annotations

import click
import proxy_logic
from botocore.exceptions import ClientError

from trainserve.commands import options
from trainserve.console import UserError, console, print_json, table
from trainserve.local.resources import function_environment

REFRESH_TIMEOUT_SECONDS = 10.0  # how long ``set`` waits for the local API to take a change


def live_variants(target) -> list[str] | None:
    """The endpoint's live variants, sorted; None when the endpoint does not exist (other errors raise)."""
    try:
        desc = target.client("sagemaker").describe_endpoint(EndpointName=target.names.endpoint_name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None
        raise
    return sorted(v["VariantName"] for v in desc.get("ProductionVariants", []))


def pin_problem(target, pin: str) -> dict | None:
    """A problem entry when the pinned ``pin`` is not live on the endpoint (the proxy then routes by the
    weights, as if unpinned), or when that cannot be checked; None when it is live."""
    return _pin_check(target, pin)[1]


def _pin_check(target, pin: str) -> tuple[bool | None, dict | None]:
    """(whether ``pin`` is live: None when that cannot be checked, its problem entry or None)."""
    endpoint = target.names.endpoint_name
    entry = {"name": "TARGET_VARIANT", "value": pin, "default": None}
    try:
        live = live_variants(target)
    except ClientError as exc:
        reason = f"cannot check whether it is live on {endpoint}: {exc}"
        return None, {**entry, "reason": reason, "message": f"TARGET_VARIANT={pin}: {reason}"}
    if live is None:
        reason = f"not live on {endpoint} (it does not exist yet)"
        message = f"TARGET_VARIANT={pin} is {reason}: no model is served until it does"
    elif pin in live:
        return True, None
    else:
        reason = f"not live on {endpoint} (live: {', '.join(live) or 'none'})"
        message = f"TARGET_VARIANT={pin} is {reason}: the proxy routes by the weights"
    return False, {**entry, "reason": reason, "message": message}


def describe(env: dict[str, str], target=None) -> dict:
    """The parameters as set (raw), as the proxy uses them (effective), and any problems: invalid values
    (the proxy uses the default) and, given ``target``, a pinned ``TARGET_VARIANT`` that is not live, which
    the proxy ignores (``proxy_handler._choose_variant``: it routes by the weights, as if unpinned), so its
    effective value is None; one whose liveness cannot be checked stays as configured."""
    params, problems = proxy_logic.parse_params(env)
    effective = params.as_dict()
    out = [
        {
            "name": p.name,
            "value": p.value,
            "reason": p.reason,
            "default": p.default,
            "message": f"{p.name}={p.value!r} is invalid ({p.reason}): the default {p.default!r} is used",
        }
        for p in problems
    ]
    if target is not None and params.target_variant:
        live, pinned = _pin_check(target, params.target_variant)
        if pinned is not None:
            out.append(pinned)
        if live is False:
            effective["target_variant"] = None
    return {
        "parameters": {name: env.get(name) for name in proxy_logic.PARAMS},
        "effective": effective,
        "problems": out,
    }


def _show(function: str, info: dict) -> None:
    problems = {p["name"]: p for p in info["problems"]}
    rows = []
    for name, (field, _) in proxy_logic.PARAMS.items():
        raw = info["parameters"][name]
        note = problems[name]["message"] if name in problems else ""
        value = info["effective"][field]
        if field == "target_variant" and value is None:
            value = "(none)"  # no pin in force: the proxy routes by the weights
        rows.append([name, "(unset)" if raw is None else repr(raw), value, note])
    table(f"proxy parameters of {function}", ["name", "set to", "in force", "note"], rows)


@click.group("params")
def params() -> None:
    """The prediction proxy's live parameters (kill switch, pinned variant, threshold, sampling, sticky)."""


@params.command("get")
@options.json_option
@options.local_option
def get(as_json: bool, local: bool | None) -> None:
    """Show the proxy's parameters."""
    target = options.resolve_target(local)
    function = target.names.proxy_function
    info = {"function": function, **describe(function_environment(target.client("lambda"), function), target)}
    if as_json:
        print_json(info)
    else:
        _show(function, info)


def parse_assignments(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"{item!r} is not NAME=VALUE (e.g. DECISION_THRESHOLD=0.6)")
        if name.strip().upper() in out:
            raise UserError(f"{name.strip().upper()} is given twice; nothing was changed")
        out[name.strip().upper()] = value.strip()
    try:
        return proxy_logic.validate_assignments(out)
    except proxy_logic.ParamError as exc:
        raise UserError(f"{exc}; nothing was changed") from None


def check_target_variant(target, variant: str) -> None:
    """A pinned variant must be live on the endpoint when it is set: the proxy would ignore it otherwise (and
    route by the weights), so setting it would change nothing but what ``get`` shows."""
    endpoint = target.names.endpoint_name
    live = live_variants(target)
    if live is None:
        raise UserError(
            f"TARGET_VARIANT={variant}: endpoint {endpoint} does not exist yet, so no variant is live; "
            "nothing was changed"
        )
    if variant not in live:
        raise UserError(
            f"TARGET_VARIANT={variant} is not a live variant of {endpoint} (live: {', '.join(live) or 'none'}); "
            "nothing was changed"
        )


@params.command("set")
@click.argument("assignments", nargs=-1, required=True)
@options.json_option
@options.local_option
def set_(assignments: tuple[str, ...], as_json: bool, local: bool | None) -> None:
    """Set NAME=VALUE ... (SERVING_ENABLED, TARGET_VARIANT, DECISION_THRESHOLD, LOG_SAMPLE_RATE, STICKY_ASSIGNMENT)."""
    changes = parse_assignments(assignments)
    target = options.resolve_target(local)
    if changes.get("TARGET_VARIANT"):
        check_target_variant(target, changes["TARGET_VARIANT"])
    function = target.names.proxy_function
    lam = target.client("lambda")
    env = function_environment(lam, function)
    env.update(changes)
    lam.update_function_configuration(FunctionName=function, Environment={"Variables": env})
    if target.is_local:
        from trainserve.local.api import REFRESH_SECONDS, request_refresh
        from trainserve.target import state_dir

        applied = request_refresh(state_dir(), timeout=REFRESH_TIMEOUT_SECONDS)
    else:
        lam.get_waiter("function_updated_v2").wait(FunctionName=function)
        applied = True
    info = {
        "function": function,
        "changed": changes,
        "applied": applied,
        **describe(function_environment(lam, function), target),
    }
    if as_json:
        print_json(info)
        return
    _show(function, info)
    changed = ", ".join(f"{k}={v!r}" for k, v in changes.items())
    if applied:
        when = "from the next request" if target.is_local else "for new invocations"
        console.print(f"changed {changed}; in force {when}")
    else:
        console.print(
            f"changed {changed}, but the local API did not confirm it within {REFRESH_TIMEOUT_SECONDS:g} s "
            f"(see `trainserve local status`); it re-reads its parameters every {REFRESH_SECONDS:g} s"
        )
