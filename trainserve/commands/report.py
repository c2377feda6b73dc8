"""``trainserve report ab [--json] [--plot FILE.png]``: the A/B report of the live variants.

Reads the warehouse (DuckDB locally, Redshift through the Data API on AWS) and the endpoint's live weights
and champion (the release controller's adapter). Never changes the endpoint: it prints the command to run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from trainserve.commands import options
from trainserve.console import UserError, console, err_console, print_json, step, table


def _endpoint(target: Any) -> tuple[dict | None, str | None]:
    """(DescribeEndpoint response: live weights and ``LastModifiedTime``; champion variant), or (None, None)
    without endpoint.

    The weights and ``LastModifiedTime`` come from one DescribeEndpoint response, so the window the report
    starts at that time is the one these weights hold in; the champion is the release controller's (its tag,
    read by its adapter, which also refuses variants not named v<N>).
    """
    import release_planner
    from botocore.exceptions import ClientError

    from trainserve.commands.endpoint import release_adapter

    adapter = release_adapter(target)
    state = adapter.read_endpoint()
    if not state.exists:
        return None, None
    try:
        desc = adapter.sm.describe_endpoint(EndpointName=target.names.endpoint_name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None, None  # deleted since the adapter read it
        raise
    variants = [
        {
            "VariantName": v["VariantName"],
            "CurrentWeight": v.get("CurrentWeight", v.get("DesiredWeight")),
            "DesiredWeight": v.get("DesiredWeight", v.get("CurrentWeight")),
        }
        for v in desc.get("ProductionVariants", [])
    ]
    champion = release_planner.variant_name(state.champion) if state.champion is not None else None
    return {
        "EndpointName": target.names.endpoint_name,
        "EndpointStatus": desc.get("EndpointStatus"),
        "LastModifiedTime": desc.get("LastModifiedTime"),
        "ProductionVariants": variants,
    }, champion


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "" if x is None else format(x, spec)


def _srm_line(srm: dict) -> str | None:
    from trainserve.report import srm_unexpected

    unit = srm.get("unit", "requests")
    got = srm_unexpected(srm)
    if got:
        test = f"at 0% but in the window: {got}"
    elif srm.get("p_value") is not None and srm.get("chi2") is not None:
        test = f"chi-square on {unit} {srm['chi2']:.2f}, p={srm['p_value']:.3g}"
    else:
        return None  # fewer than two variants receive traffic, or nothing in the window: no split to test
    if srm.get("applicable") is False:
        return f"[yellow]sample-ratio check not flagged[/] ({test}): see the warning above"
    if srm["mismatch"]:
        return f"[bold red]SAMPLE RATIO MISMATCH[/] ({test})"
    return f"[green]split as configured[/] ({test})"


def print_report(rep: dict) -> None:
    w = rep.get("window")
    span = f" — {w['start']} .. {w['end']}" if w else ""
    console.print(f"[bold]A/B report[/] {rep['endpoint_name']}{span}  (decision: {rep['decision_test']})")
    if w and w.get("reason"):
        console.print(f"window: {w['reason']}")
    for warning in rep.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}")
    rows = []
    for v in rep["variants"]:
        ci = v["accuracy_ci"]
        rows.append(
            [
                v["variant_name"],
                v["model_version"],
                v["role"],
                _fmt(v["weight"], ".1%"),
                v["requests"],
                _fmt(v["share"], ".1%"),
                f"{_fmt(v['latency_p50_ms'], '.1f')} / {_fmt(v['latency_p95_ms'], '.1f')} / {_fmt(v['latency_p99_ms'], '.1f')}",
                _fmt(v["positive_rate"], ".1%"),
                v["labelled"],
                f"{_fmt(v['accuracy'], '.2%')} [{_fmt(ci[0], '.2%')}, {_fmt(ci[1], '.2%')}]" if ci else "",
            ]
        )
    table(
        "Variants",
        [
            "variant",
            "version",
            "role",
            "weight",
            "requests",
            "share",
            "latency p50/p95/p99 ms",
            "positive",
            "labelled",
            "accuracy [CI]",
        ],
        rows,
    )
    srm = rep.get("srm")
    line = _srm_line(srm) if srm else None
    if line:
        console.print(line)
    if rep["comparisons"]:
        table(
            "Challengers vs champion",
            [
                "challenger",
                "champion",
                "difference",
                "p fixed",
                "p sequential",
                "P(better)",
                "still needed",
                "decision",
            ],
            [
                [
                    c["challenger"],
                    c["champion"],
                    _fmt(c["difference"], "+.2%"),
                    _fmt(c["p_value_fixed"], ".3g"),
                    _fmt(c["p_value_sequential"], ".3g"),
                    _fmt(c["prob_better"], ".3f"),
                    ", ".join(f"{k}: {n:,}" for k, n in c["still_needed"].items()),
                    c["decision"],
                ]
                for c in rep["comparisons"]
            ],
        )
    for note in rep.get("notes", []):
        console.print(f"[dim]note: {note}[/]")
    rec = rep["recommendation"]
    colour = {"promote": "green", "rollback": "red"}.get(rec["action"], "yellow")
    console.print(f"[bold {colour}]{rec['action'].upper()}[/]: {rec['reason']}")
    console.print(f"  next: [bold]{rec['command']}[/]")


@click.group()
def report() -> None:
    """Reports over the prediction warehouse."""


@report.command("ab")
@options.local_option
@options.json_option
@click.option("--plot", "plot", type=click.Path(dir_okay=False), help="Also write a PNG with the charts.")
@click.option(
    "--since",
    type=options.UTC_DATETIME,
    default=None,
    help="Start of the window, ISO 8601: 2026-12-05T23:44:00Z, ...+01:00 (converted to UTC), or without Z or "
    "an offset, UTC. Default: when the endpoint's weights last changed, plus the proxy's cache delay; "
    "without that time, the newest live variant's first prediction.",
)
def ab(local: bool | None, as_json: bool, plot: str | None, since: datetime | None) -> None:
    """A/B report: per-variant traffic, latency, accuracy; challengers vs champion; what to do next."""
    from warehouse_query import WarehouseQueryError

    from trainserve.report import (
        WindowError,
        build_report,
        check_since,
        fetch_baselines,
        warehouse_query_for,
        write_plot,
    )

    def window_error(exc: WindowError) -> UserError:
        return UserError(f"--since {exc.since:%Y-%m-%d %H:%M:%S} {exc.detail}: the window would be empty")

    try:
        check_since(since)  # before anything is read
    except WindowError as exc:
        raise window_error(exc) from None
    target = options.resolve_target(local)
    try:
        query = warehouse_query_for(target)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    state, champion = _endpoint(target)
    try:
        with step("querying the warehouse"):
            rep = build_report(
                query,
                config=target.config,
                endpoint_state=state,
                endpoint_name=target.names.endpoint_name,
                since=since,
                champion=champion,
            )
    except WarehouseQueryError as exc:
        raise UserError(str(exc)) from None
    except WindowError as exc:
        raise window_error(exc) from None
    if state is None:
        name = target.names.endpoint_name
        rep["notes"].append(f"endpoint {name} does not exist: weights and SRM unavailable")
        # what was logged can still be read, but there is no live variant to promote or roll back; without
        # logged predictions (a fresh cloud) there may never have been an endpoint at all
        if rep["variants"]:
            reason = (
                f"no endpoint {name} exists: the figures are of the predictions logged by an endpoint of that "
                "name that is gone"
            )
        else:
            reason = (
                f"no endpoint {name} exists and the warehouse holds no prediction of one: approve a model "
                "version and the release controller creates it"
            )
        rep["recommendation"] = {
            "action": "nothing to act on",
            "reason": reason,
            "command": "trainserve endpoint status",
        }
    if plot:
        baselines, problems = fetch_baselines(target, rep)
        rep["notes"].extend(problems)
        write_plot(rep, plot, baselines)
        rep["plot"] = plot
        if not as_json:
            err_console.print(f"plot written to {plot}")
    if as_json:
        print_json(rep)
    else:
        print_report(rep)
