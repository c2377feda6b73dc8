"""``trainserve demo``: the whole Train-Then-Serve loop on the local cloud, start to finish."""

from __future__ import annotations

import click

from trainserve.console import UserError, people_output_on_stderr, print_json
from trainserve.demo import DEFAULT_REQUESTS, DEFAULT_USERS, TRAFFIC_SEED, DemoError, run_demo


@click.command("demo")
@click.option(
    "--requests",
    type=click.IntRange(100, 100_000),
    default=DEFAULT_REQUESTS,
    show_default=True,
    help="Predictions to send through the API.",
)
@click.option(
    "--users",
    type=click.IntRange(10, 100_000),
    default=DEFAULT_USERS,
    show_default=True,
    help="Distinct user ids (sticky assignment keeps each on one variant).",
)
@click.option(
    "--seed", type=int, default=TRAFFIC_SEED, show_default=True, help="Seed of the generated traffic."
)
@click.option("--no-act", is_flag=True, help="Print the recommendation but do not promote or roll back.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON summary on stdout (and nothing else there: the progress and tables go to stderr).",
)
@click.pass_context
def demo(ctx: click.Context, requests: int, users: int, seed: int, no_act: bool, as_json: bool) -> None:
    """Run the whole loop locally: train v1 → approve → serve; train v2 → approve → A/B split; traffic and
    feedback through the prediction API; warehouse, monitoring, A/B report; promote or roll back.

    With --json, stdout is one JSON document; what is printed for people goes to stderr."""
    from trainserve.commands.local import start

    try:
        with people_output_on_stderr(as_json):  # the commands the demo runs print their tables on stdout
            result = run_demo(
                start_local=lambda: ctx.invoke(start),
                requests=requests,
                users=users,
                seed=seed,
                act=not no_act,
            )
    except DemoError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(
            {
                "seconds": round(result.seconds, 1),
                "baseline_version": result.baseline_version,
                "candidate_version": result.candidate_version,
                "predictions": result.predictions,
                "feedback": result.feedback,
                "by_variant": result.by_variant,
                "recommendation": result.recommendation,
                "endpoint": result.endpoint,
                "plot": result.plot,
            }
        )
