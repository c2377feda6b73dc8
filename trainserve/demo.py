"""``trainserve demo``: the whole Train-Then-Serve loop on the local cloud, through the product's real code.

Every step goes through what an operator or a client would use: the local training pipeline, a registry
status change (what a reviewer does in the SageMaker console) turned into the release event by the approval
watcher, the release controller, the prediction API (proxy → runtime → model servers), Firehose staging and
the warehouse loader, the monitoring job, the A/B report, and the traffic commands.

Running it again works: on a local cloud that already has an endpoint, the new baseline is approved and then
promoted to champion (what an operator would do to start a fresh comparison), and the report only reads the
predictions made since this run started.
"""

from __future__ import annotations

import csv
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainserve.console import console, err_console
from trainserve.target import Target, state_dir

# The two candidates: a deliberately small baseline, and a stronger challenger from the same training code.
BASELINE = {"estimator": "random_forest", "hyperparameters": {"n_estimators": 3, "max_depth": 1}}
CANDIDATE = {"estimator": "logistic_regression", "hyperparameters": {"C": 1.0, "max_iter": 1000}}
TRAFFIC_SEED = 7
DEFAULT_REQUESTS = 2000
DEFAULT_USERS = 400
FEEDBACK_SHARE = 0.9
ENDPOINT_WAIT_SECONDS = 60.0
WAREHOUSE_WAIT_SECONDS = 60.0


class DemoError(RuntimeError):
    """A demo step failed: the message names the step and the cause."""

    def __init__(self, step: str, cause: str):
        super().__init__(f"step '{step}' failed: {cause}")
        self.step = step


@dataclass
class DemoResult:
    started_at: datetime
    traffic_started_at: datetime | None = None
    baseline_version: int | None = None
    candidate_version: int | None = None
    predictions: int = 0
    feedback: int = 0
    by_variant: dict[str, int] = field(default_factory=dict)
    recommendation: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    endpoint: dict[str, Any] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    plot: str | None = None
    seconds: float = 0.0


@contextmanager
def demo_step(number: int, title: str) -> Iterator[None]:
    """A numbered step: its title, its duration, and a failure that names it."""
    err_console.rule(f"[bold]{number}. {title}")
    started = time.monotonic()
    try:
        yield
    except DemoError:
        raise
    except Exception as exc:  # any failure inside a step is reported with the step's name
        raise DemoError(title, f"{type(exc).__name__}: {exc}") from exc
    err_console.print(f"[green]✓[/] {title} ({time.monotonic() - started:.1f} s)")


def _progress(step: str, state: str, detail: str) -> None:
    if state == "start":
        err_console.print(f"  … {step} {detail}".rstrip())
    elif state == "done":
        err_console.print(f"  [green]✓[/] {step} {detail}".rstrip())
    else:
        err_console.print(f"  · {step} {state} {detail}".rstrip())


def train_and_register(target: Target, spec: dict[str, Any], step_title: str) -> int:
    from trainserve.local.training_runner import run_local_training

    result = run_local_training(
        target, estimator=spec["estimator"], hyperparameters=spec["hyperparameters"], progress=_progress
    )
    if not result.registered or result.model_version is None:
        raise DemoError(step_title, f"the model was not registered: {result.reason}")
    return int(result.model_version)


def approve(target: Target, version: int, note: str) -> None:
    """What a reviewer does in the SageMaker console: a registry status change, nothing else."""
    from trainserve.registry import describe_model_version

    sm = target.client("sagemaker")
    package = describe_model_version(sm, target.names.model_package_group, version)
    sm.update_model_package(
        ModelPackageArn=package.arn, ModelApprovalStatus="Approved", ApprovalDescription=note
    )
    err_console.print(f"  approved v{version} in the registry ({note}); waiting for the release event")


def will_serve(target: Target, version: int) -> tuple[bool, str]:
    """Whether the release controller will serve ``version`` once it is approved (the same planner, on the
    registry as it is about to be and the endpoint as it is), and its reason: a version trained on other
    input features than the live champion's, for one, is not added."""
    import release_planner

    from trainserve.commands.endpoint import release_adapter
    from trainserve.commands.models_review import release_decision

    adapter = release_adapter(target)
    decision = release_decision(adapter, adapter.read_registry(), version, release_planner.APPROVED)
    return decision.desired is not None and version in decision.desired.weights, decision.reason


def endpoint_state(target: Target) -> dict[str, Any]:
    from trainserve.commands.endpoint import endpoint_report, release_adapter

    return endpoint_report(release_adapter(target))


def wait_for_endpoint(
    target: Target, ready: Callable[[dict[str, Any]], bool], what: str, timeout: float = ENDPOINT_WAIT_SECONDS
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    with err_console.status(f"  waiting for the endpoint: {what}"):
        while time.monotonic() < deadline:
            state = endpoint_state(target)
            if state["exists"] and state["status"] == "InService" and ready(state):
                return state
            time.sleep(0.5)
    raise TimeoutError(
        f"the endpoint did not reach '{what}' within {timeout:.0f} s; last state: {_weights(state)}"
    )


def _weights(state: dict[str, Any]) -> dict[str, float]:
    return {v["variant"]: round(v["desired_weight"], 4) for v in state.get("variants", [])}


def _live(state: dict[str, Any]) -> dict[str, float]:
    return {k: w for k, w in _weights(state).items() if w > 0}


def warm_up(target: Target, variants: list[str]) -> None:
    """One direct invocation per variant (not through the API, so nothing is logged), as a load balancer's
    health check would: the first real requests then do not pay for a model server's start."""
    from trainserve.registry import describe_model_version

    runtime = target.client("sagemaker-runtime")
    sm = target.client("sagemaker")
    s3 = target.client("s3")
    for variant in variants:
        features = describe_model_version(
            sm, target.names.model_package_group, int(variant[1:]), s3
        ).feature_names
        body = json.dumps({"instances": [[0.0] * len(features)]})
        runtime.invoke_endpoint(
            EndpointName=target.names.endpoint_name,
            TargetVariant=variant,
            ContentType="application/json",
            Body=body,
        )


def wait_for_proxy_weights(target: Target) -> None:
    """Wait until the proxy's cached weights are the endpoint's (``report.PROXY_WEIGHTS_DELAY_SECONDS`` after
    its last change): traffic sent before then may still follow the old weights, and the A/B report's window
    starts there."""
    from trainserve.report import PROXY_WEIGHTS_DELAY_SECONDS

    desc = target.client("sagemaker").describe_endpoint(EndpointName=target.names.endpoint_name)
    changed = desc["LastModifiedTime"]
    settled = changed.timestamp() + PROXY_WEIGHTS_DELAY_SECONDS
    wait = settled - time.time()
    if wait > 0:
        err_console.print(f"  waiting {wait:.1f} s for the prediction API's cached weights to follow")
        time.sleep(wait)


def print_endpoint(state: dict[str, Any]) -> None:
    from trainserve.commands.endpoint import print_report

    print_report(state)


def load_traffic(data_dir: Path) -> tuple[list[str], list[list[float]], list[int]]:
    """The held-out rows (never used in training) and their true labels."""
    with open(data_dir / "traffic" / "traffic.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = {r[0]: [float(x) for x in r[1:]] for r in reader}
    with open(data_dir / "traffic" / "traffic_labels.csv", newline="") as f:
        labels = {r["row_id"]: int(r["target"]) for r in csv.DictReader(f)}
    ids = sorted(rows)
    return header[1:], [rows[i] for i in ids], [labels[i] for i in ids]


def _post(url: str, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(
            f"{url} answered {exc.code}: {exc.read().decode(errors='replace')[:300]}"
        ) from None


def send_traffic(
    target: Target, rows: list[list[float]], labels: list[int], *, requests: int, users: int, seed: int
) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    """Send ``requests`` one-row predictions from ``users`` distinct users (sticky assignment) through the
    prediction API; return (request_id, variant, true label) per prediction and the count per variant."""
    rng = random.Random(seed)
    plan = [(f"user-{rng.randrange(users):04d}", rng.randrange(len(rows))) for _ in range(requests)]
    url = f"{target.api_url}/predict"
    done: list[tuple[str, str, int]] = []
    lock = threading.Lock()
    counts: dict[str, int] = {}

    def one(item: tuple[str, int]) -> None:
        user, row = item
        answer = _post(url, {"instances": [rows[row]], "user_id": user})
        p = answer["predictions"][0]
        with lock:
            done.append((p["request_id"], p["variant"], labels[row]))
            counts[p["variant"]] = counts.get(p["variant"], 0) + 1

    with (
        err_console.status(f"  sending {requests} predictions from {users} users") as status,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        for i, _ in enumerate(pool.map(one, plan), 1):
            if i % 250 == 0:
                status.update(f"  sending predictions: {i}/{requests}")
    return done, counts


def send_feedback(target: Target, predictions: list[tuple[str, str, int]], share: float, seed: int) -> int:
    """The true outcome for ``share`` of the predictions (as a label arriving later would), in batches."""
    rng = random.Random(seed + 1)
    chosen = [p for p in predictions if rng.random() < share]
    url = f"{target.api_url}/feedback"
    for start in range(0, len(chosen), 200):
        batch = chosen[start : start + 200]
        _post(url, {"feedback": [{"request_id": rid, "outcome": outcome} for rid, _, outcome in batch]})
    return len(chosen)


def wait_for_warehouse(target: Target, since: datetime, predictions: int, feedback: int) -> tuple[int, int]:
    from trainserve.local.warehouse import query

    path = target.warehouse["path"]
    stamp = since.strftime("%Y-%m-%d %H:%M:%S.%f")
    sql = (
        "SELECT (SELECT COUNT(*) FROM prediction_log_dedup WHERE event_time >= ?),"
        " (SELECT COUNT(*) FROM prediction_feedback_dedup WHERE event_time >= ?)"
    )
    deadline = time.monotonic() + WAREHOUSE_WAIT_SECONDS
    got = (0, 0)
    with err_console.status("  waiting for Firehose staging → warehouse load"):
        while time.monotonic() < deadline:
            _, rows = query(path, sql, [stamp, stamp])
            got = (int(rows[0][0]), int(rows[0][1]))
            if got[0] >= predictions and got[1] >= feedback:
                return got
            time.sleep(0.5)
    raise TimeoutError(
        f"the warehouse has {got[0]}/{predictions} predictions and {got[1]}/{feedback} feedback rows "
        f"after {WAREHOUSE_WAIT_SECONDS:.0f} s"
    )


def run_demo(
    *,
    start_local: Callable[[], None],
    requests: int = DEFAULT_REQUESTS,
    users: int = DEFAULT_USERS,
    seed: int = TRAFFIC_SEED,
    act: bool = True,
) -> DemoResult:
    """Run the six steps; raise ``DemoError`` naming the failing step. The endpoint after each change is
    kept in ``result.snapshots`` (label -> ``endpoint status --json`` shape)."""
    from trainserve.target import resolve

    t0 = time.monotonic()
    result = DemoResult(started_at=datetime.now(UTC).replace(tzinfo=None))
    out_dir = state_dir() / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)

    with demo_step(1, "Start the local cloud (or reuse the running one)"):
        start_local()
        target = resolve(local=True)

    title = "Train a baseline model, register it, approve it: the endpoint serves it alone"
    with demo_step(2, title):
        v1 = train_and_register(target, BASELINE, title)
        result.baseline_version = v1
        serves, why = will_serve(target, v1)
        approve(target, v1, "demo: baseline")
        if serves:
            state = wait_for_endpoint(target, lambda s: f"v{v1}" in _live(s), f"v{v1} live")
            crowded = _live(state) != {f"v{v1}": 1.0}
            if crowded:  # a previous run left other variants
                err_console.print(
                    f"  other variants are live ({_live(state)}): promoting v{v1} to start clean"
                )
        else:  # e.g. a champion trained on other input features: v1 does not join it
            crowded = True
            err_console.print(
                f"  the release controller does not add v{v1} ({why}): promoting it to start clean"
            )
        if crowded:  # the operator makes the new baseline the sole champion
            _traffic("promote", target, f"v{v1}")  # prints the endpoint after the promotion
            state = wait_for_endpoint(target, lambda s: _live(s) == {f"v{v1}": 1.0}, f"v{v1} alone at 100%")
        else:
            print_endpoint(state)
        result.snapshots["baseline"] = state

    title = "Train a different candidate, approve it: it goes live as a challenger"
    with demo_step(3, title):
        v2 = train_and_register(target, CANDIDATE, title)
        result.candidate_version = v2
        serves, why = will_serve(target, v2)
        if not serves:
            raise RuntimeError(f"the release controller would not add v{v2} beside v{v1}: {why}")
        approve(target, v2, "demo: challenger")
        weight = target.config.challenger_weight
        state = wait_for_endpoint(
            target,
            lambda s: abs(_live(s).get(f"v{v2}", 0) - weight) < 1e-6 and f"v{v1}" in _live(s),
            f"v{v2} at {weight:.0%} beside v{v1}",
        )
        result.snapshots["challenger"] = state
        print_endpoint(state)
        # The operator ramps the challenger up once it serves without errors, so the comparison needs fewer
        # requests; the report compares the observed split with these weights.
        _traffic("set", target, weights=(f"v{v1}=0.5", f"v{v2}=0.5"))
        state = wait_for_endpoint(
            target, lambda s: _live(s) == {f"v{v1}": 0.5, f"v{v2}": 0.5}, f"v{v1} and v{v2} at 50/50"
        )
        result.snapshots["ramped"] = state
        warm_up(target, [f"v{v1}", f"v{v2}"])
        wait_for_proxy_weights(target)

    with demo_step(4, "Send held-out rows through the prediction API, then feedback for most of them"):
        _, rows, labels = load_traffic(_sample_data_dir(out_dir))
        result.traffic_started_at = datetime.now(UTC).replace(tzinfo=None)
        predictions, counts = send_traffic(target, rows, labels, requests=requests, users=users, seed=seed)
        result.predictions = len(predictions)
        result.by_variant = dict(sorted(counts.items()))
        err_console.print(f"  {len(predictions)} predictions from {users} users: {result.by_variant}")
        result.feedback = send_feedback(target, predictions, FEEDBACK_SHARE, seed)
        err_console.print(f"  {result.feedback} feedback outcomes sent")

    with demo_step(5, "Load the warehouse, run the monitoring job, report on the A/B test"):
        since = result.traffic_started_at or result.started_at
        got = wait_for_warehouse(target, since, result.predictions, result.feedback)
        err_console.print(
            f"  warehouse: {got[0]} predictions, {got[1]} feedback rows from this run's traffic"
        )
        from trainserve.commands.monitor import print_result, run_local

        print_result(run_local(target, max(5, int((time.monotonic() - t0) / 60) + 5)))
        result.report, result.plot = ab_report(target, since, out_dir / "ab_report.png")
        result.recommendation = result.report["recommendation"]

    action = result.recommendation.get("action")
    with demo_step(6, f"Act on the recommendation: {action}"):
        if act and action == "promote":
            variant = result.recommendation["command"].split()[-1]  # trainserve traffic promote vN
            _traffic("promote", target, variant)  # prints the endpoint after the promotion
            state = wait_for_endpoint(
                target, lambda s: _live(s) == {variant: 1.0}, f"{variant} alone at 100%"
            )
        elif act and action == "rollback":
            _traffic("rollback", target)
            state = wait_for_endpoint(target, lambda s: len(_live(s)) == 1, "challengers removed")
        else:
            err_console.print(f"  no action: {result.recommendation.get('reason')}")
            state = endpoint_state(target)
        result.endpoint = result.snapshots["final"] = state
        if not (act and action == "promote"):  # the promotion printed it already
            print_endpoint(state)

    result.seconds = time.monotonic() - t0
    _closing(target, result)
    return result


def _sample_data_dir(out_dir: Path) -> Path:
    from training.sample_data import write_sample_data

    data_dir = out_dir / "sample-data"
    write_sample_data(data_dir)
    return data_dir


def ab_report(target: Target, since: datetime, plot: Path) -> tuple[dict[str, Any], str]:
    from trainserve.commands.report import _endpoint, print_report
    from trainserve.report import build_report, fetch_baselines, warehouse_query_for, write_plot

    state, champion = _endpoint(target)
    rep = build_report(
        warehouse_query_for(target),
        config=target.config,
        endpoint_state=state,
        endpoint_name=target.names.endpoint_name,
        since=since,
        champion=champion,
    )
    baselines, problems = fetch_baselines(target, rep)
    rep["notes"].extend(problems)
    write_plot(rep, str(plot), baselines)
    rep["plot"] = str(plot)
    print_report(rep)
    return rep, str(plot)


def _traffic(
    action: str, target: Target, variant: str | None = None, weights: tuple[str, ...] | None = None
) -> None:
    """The same code path as ``trainserve traffic set|promote|rollback`` (the planner + adapter)."""
    import click

    from trainserve.commands import traffic

    command = {"promote": traffic.promote, "rollback": traffic.rollback, "set": traffic.set_}[action]
    kwargs: dict[str, Any] = {"local": True, "as_json": False}
    if variant is not None:
        kwargs["variant"] = variant
    if weights is not None:
        kwargs["weights"] = weights
    err_console.print(f"  $ trainserve traffic {action} {variant or ' '.join(weights or ())}".rstrip())
    with click.Context(command) as ctx:
        ctx.invoke(command, **kwargs)


def _closing(target: Target, result: DemoResult) -> None:
    home = state_dir()
    console.rule("[bold]Done")
    rec = result.recommendation
    console.print(
        f"The loop ran in {result.seconds:.0f} s: v{result.baseline_version} (baseline) and "
        f"v{result.candidate_version} (challenger) were trained, approved and served side by side; "
        f"{result.predictions} predictions and {result.feedback} outcomes reached the warehouse; "
        f"the report said [bold]{rec.get('action')}[/] ({rec.get('reason')})."
    )
    console.print(
        f"  warehouse   {target.warehouse['path']}  (DuckDB: tables prediction_log, prediction_feedback)"
    )
    console.print(f"  A/B plot    {result.plot}")
    console.print(f"  logs        {home / 'local.log'}")
    console.print(
        f"  AWS API     {target.aws_endpoint_url}  (export AWS_ENDPOINT_URL=... to use any AWS SDK)"
    )
    console.print("Try next:")
    for cmd in (
        "trainserve endpoint status",
        "trainserve models list",
        f"cut -d, -f2- {home / 'demo' / 'sample-data' / 'traffic' / 'traffic.csv'} | head -3 | trainserve predict --user alice",
        "trainserve params set DECISION_THRESHOLD=0.7",
        "trainserve report ab --plot ab.png",
        "trainserve local status",
        "trainserve local stop",
    ):
        console.print(f"  {cmd}", soft_wrap=True, markup=False, highlight=False)  # one line, to paste whole
