"""``trainserve params get [--json]`` and ``trainserve params set NAME=VALUE ...``: the proxy's parameters.

They are the environment variables of the proxy Lambda function (``target.names.proxy_function``), read
with ``GetFunctionConfiguration`` and changed with ``UpdateFunctionConfiguration`` (merged into the existing
environment), locally (moto's function record, which the local API re-reads every second) exactly as on
AWS (new invocations get a fresh environment). ``set`` checks every value with the proxy's own parser first:
an unknown name or a bad value is an error and nothing is changed.
"""

from __future__ import annotations

import click
import proxy_logic

from trainserve.commands import options
from trainserve.console import UserError, console, print_json, table


def _environment(lam, function: str) -> dict[str, str]:
    cfg = lam.get_function_configuration(FunctionName=function)
    return dict(cfg.get("Environment", {}).get("Variables", {}))


def describe(env: dict[str, str]) -> dict:
    """The parameters as set (raw), as the proxy reads them (effective), and any problems."""
    params, problems = proxy_logic.parse_params(env)
    return {
        "parameters": {name: env.get(name) for name in proxy_logic.PARAMS},
        "effective": params.as_dict(),
        "problems": [
            {"name": p.name, "value": p.value, "reason": p.reason, "default": p.default} for p in problems
        ],
    }


def _show(function: str, info: dict) -> None:
    problems = {p["name"]: p for p in info["problems"]}
    rows = []
    for name, (field, _) in proxy_logic.PARAMS.items():
        raw = info["parameters"][name]
        note = f"invalid ({problems[name]['reason']}): default used" if name in problems else ""
        rows.append([name, "(unset)" if raw is None else repr(raw), info["effective"][field], note])
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
    info = {"function": function, **describe(_environment(target.client("lambda"), function))}
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
        out[name.strip().upper()] = value.strip()
    try:
        return proxy_logic.validate_assignments(out)
    except proxy_logic.ParamError as exc:
        raise UserError(f"{exc}; nothing was changed") from None


@params.command("set")
@click.argument("assignments", nargs=-1, required=True)
@options.json_option
@options.local_option
def set_(assignments: tuple[str, ...], as_json: bool, local: bool | None) -> None:
    """Set NAME=VALUE ... (SERVING_ENABLED, TARGET_VARIANT, DECISION_THRESHOLD, LOG_SAMPLE_RATE, STICKY_ASSIGNMENT)."""
    changes = parse_assignments(assignments)
    target = options.resolve_target(local)
    function = target.names.proxy_function
    lam = target.client("lambda")
    env = _environment(lam, function)
    env.update(changes)
    lam.update_function_configuration(FunctionName=function, Environment={"Variables": env})
    if not target.is_local:
        lam.get_waiter("function_updated_v2").wait(FunctionName=function)
    info = {"function": function, "changed": changes, **describe(_environment(lam, function))}
    if as_json:
        print_json(info)
        return
    _show(function, info)
    when = "within a second" if target.is_local else "on new invocations"
    console.print(f"changed {', '.join(f'{k}={v!r}' for k, v in changes.items())}; applies {when}")
