"""Prediction logging cost through the local prediction API: predictions/s and p50/p99 latency with logging
on and off (LOG_SAMPLE_RATE 1 vs 0), payloads of 1 and 100 rows, and Firehose calls per request;
repetitions interleave logging on and off (in alternating order), and the table shows each setting's requests
pooled over its repetitions, and the cost of logging.

Within a repetition, each setting's ``--seconds`` are measured in blocks of about ``--block`` seconds (2 by
default), logging switched on and off between blocks in ABBA order (on, off, off, on, on, off, ...), each
block after a flush of moto's Firehose buffer and the warehouse loader and an unmeasured second of load:
this machine's speed drifts by up to a fifth between runs ten seconds apart (the CPU per request of the
model server and of the load generator, whose work does not depend on logging, moves with it), and blocks
two seconds apart meet it in about the same state. ``--block 0`` measures one run per setting per repetition
instead (a second of warm-up, then the warehouse loader's work flushed before each run), as the script did
before.

    .venv/bin/python benchmarks/prediction_logging.py                 # its own local cloud (about 6 minutes in all)
    .venv/bin/python benchmarks/prediction_logging.py --use-running   # the running local cloud (its params are switched)
    .venv/bin/python benchmarks/prediction_logging.py --seconds 5 --concurrency 4 --json
    .venv/bin/python benchmarks/prediction_logging.py --api-url http://127.0.0.1:4568 --n-features 30   # no switching

By default it starts its own local cloud in a temporary TRAINSERVE_HOME on free ports, trains and approves
a model through the CLI, runs the benchmark and stops it; ``--use-running`` uses the running local cloud
instead (LOG_SAMPLE_RATE is switched during the run and restored after). Everything stays on 127.0.0.1 and every
phase is bounded in time. Firehose calls are counted, not estimated: the local cloud counts PutRecordBatch
calls per stream (``firehose_calls`` of the warehouse component in ``.trainserve/status.json``). ``to log``
counts the prediction log records that went to the log fallback instead of Firehose (``undelivered_log_records``
of the API component): a run where it is not 0 did not do all of its logging work, and says so. The CPU
time each process of the local cloud used per request (the daemon, moto, the log delivery process, the
warehouse loader, the model server, and this load generator) is printed too: it shows where logging's
work goes.
At the end it asks the warehouse loader to load everything staged and checks that every prediction logged
(warm-ups included) is in the local warehouse, with how long the loader took to catch up.
Each cost comes with its 95% interval, from a paired bootstrap over the repetitions (``cost_intervals``), and
a verdict on the 10% target: met (the whole interval under it), not met (none of it), or undecided (the
machine's noise spans it).
The load generator runs on the same machine as the server (and competes with it for CPU): compare the
rows with each other, not with a production API.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib module ``logging``: keep its folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

import trainserve  # noqa: E402,F401  (puts lambdas/* on sys.path)
from trainserve import PROJECT_ROOT  # noqa: E402
from trainserve.target import local_target, read_local_state  # noqa: E402

CLI = [sys.executable, "-m", "trainserve.cli"]
PARAM_REFRESH_TIMEOUT_S = 10.0  # how long to wait for the local API to take a LOG_SAMPLE_RATE change
TARGET_COST_PCT = 10.0  # the issue's target: logging costs under 10% of throughput and of p99
RESAMPLES = 2000  # bootstrap resamples of the repetitions, for the costs' 95% intervals
WARMUP_S = 1.0  # unmeasured load before each block or run (the log sender's lag is about 0.3 s)
DEFAULT_BLOCK_S = 2.0  # seconds of a block (--block)


def _cli(env: dict[str, str], *args: str, timeout: float) -> str:
    r = subprocess.run(
        [*CLI, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
    )
    if r.returncode != 0:
        raise SystemExit(f"`trainserve {' '.join(args)}` failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def _free_base() -> int:
    """base, base+1 and base+2 free, below the ephemeral port range (``trainserve.local.ports``)."""
    from trainserve.local.ports import free_ports

    return free_ports(3)


def start_own_cloud() -> tuple[dict[str, str], str]:
    """A local cloud in a temp home with one approved model live; returns (env, home)."""
    home = tempfile.mkdtemp(prefix="trainserve-bench-")
    env = {**os.environ, "TRAINSERVE_HOME": home, "TRAINSERVE_PORT_BASE": str(_free_base())}
    print(f"starting a local cloud in {home} ...", file=sys.stderr)
    _cli(env, "local", "start", timeout=180)
    print("training a model (about a minute) ...", file=sys.stderr)
    _cli(env, "train", timeout=900)
    os.environ.update({"TRAINSERVE_HOME": home})
    target = local_target(read_local_state())
    sm = target.client("sagemaker")
    arn = sm.list_model_packages(ModelPackageGroupName=target.names.model_package_group)[
        "ModelPackageSummaryList"
    ][0]["ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if sm.describe_endpoint(EndpointName=target.names.endpoint_name)["EndpointStatus"] == "InService":
                break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(2)
    else:
        raise SystemExit("the endpoint did not become InService within 300 s")
    return env, home


def feature_count(target) -> int:
    import proxy_handler

    directory = proxy_handler.ModelDirectory(
        proxy_handler.Clients(target.client), target.names.endpoint_name, target.names.model_package_group
    )
    variants = directory.live_variants()
    return len(directory.feature_names(sorted(variants)[0]))


def set_sample_rate(target, rate: float | str) -> None:
    lam = target.client("lambda")
    fn = target.names.proxy_function
    env = lam.get_function_configuration(FunctionName=fn)["Environment"]["Variables"]
    env["LOG_SAMPLE_RATE"] = rate if isinstance(rate, str) else repr(float(rate))
    lam.update_function_configuration(FunctionName=fn, Environment={"Variables": env})
    from trainserve.local.api import request_refresh  # as `trainserve params set` does
    from trainserve.target import state_dir

    if not request_refresh(state_dir(), timeout=PARAM_REFRESH_TIMEOUT_S):
        raise SystemExit(f"the local API did not take LOG_SAMPLE_RATE={env['LOG_SAMPLE_RATE']} within 10 s")


def pipeline_counts(target) -> tuple[int, int]:
    """(PutRecordBatch calls on the predictions stream, prediction log records sent to the log fallback
    instead of Firehose) so far, from the local cloud's status snapshot (written every 2 s: wait for a fresh
    one)."""
    from trainserve.target import state_dir

    path = state_dir() / "status.json"
    first = json.loads(path.read_text())["updated_at"]
    deadline = time.monotonic() + 10
    stream = target.names.predictions_stream
    while time.monotonic() < deadline:
        status = json.loads(path.read_text())
        if status["updated_at"] != first:
            calls = status["components"]["warehouse"].get("firehose_calls", {})
            to_log = status["components"]["api"].get("undelivered_log_records", {})
            return int(calls.get(stream, 0)), int(to_log.get(stream, 0))
        time.sleep(0.2)
    raise RuntimeError(f"{path} was not refreshed within 10 s")


def warehouse_rows() -> int:
    """Predictions in the local warehouse (``prediction_log_dedup``: one row per prediction)."""
    from trainserve.local.warehouse import query
    from trainserve.target import state_dir

    status = json.loads((state_dir() / "status.json").read_text())
    _, rows = query(status["components"]["warehouse"]["path"], "SELECT count(*) FROM prediction_log_dedup")
    return int(rows[0][0])


def wait_for_warehouse(expected: int, before: int, timeout: float = 300.0) -> dict[str, Any]:
    """Ask the loader to load everything staged (``request_flush``) until ``expected`` new predictions are in
    the warehouse or ``timeout`` passes: how many landed and how long the loader took to catch up."""
    from trainserve.local.warehouse import request_flush
    from trainserve.target import state_dir

    started = time.monotonic()
    landed = warehouse_rows() - before
    while landed < expected and time.monotonic() - started < timeout:
        request_flush(state_dir(), timeout=min(60.0, timeout))
        landed = warehouse_rows() - before
    return {"expected": expected, "landed": landed, "catch_up_s": round(time.monotonic() - started, 1)}


def settle(timeout: float = 120.0) -> None:
    """Have the warehouse loader load everything staged so far and wait until it has (``request_flush``),
    so the measured run that follows pays for its own logging, not for the loading of what came before it
    (the loader waits while the API is busy, and would otherwise start in the short pause before a run)."""
    from trainserve.local.warehouse import request_flush
    from trainserve.target import state_dir

    if not request_flush(state_dir(), timeout=timeout):
        raise SystemExit(f"the warehouse loader did not load the staged logs within {timeout:.0f} s")


def process_roles() -> dict[int, str]:
    """The local cloud's processes by role (pid -> role), from its status snapshot and the process tree."""
    import psutil  # installed with sagemaker-training (requirements.txt)

    from trainserve.target import state_dir

    status = json.loads((state_dir() / "status.json").read_text())
    daemon = status["pid"]
    roles = {daemon: "daemon (API, runtime)"}
    control = status.get("control_plane") or {}
    if control.get("pid"):
        roles[control["pid"]] = "moto"
    delivery = status["components"].get("api", {}).get("log_delivery") or {}
    if delivery.get("pid"):
        roles[delivery["pid"]] = "log delivery"
    servers = {s["pid"] for s in status["components"].get("runtime", {}).get("model_servers", {}).values()}
    for child in psutil.Process(daemon).children(recursive=True):
        if child.pid in roles:
            continue
        try:
            lineage = {p.pid for p in child.parents()}
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if child.pid in servers or lineage & servers:
            roles[child.pid] = "model server"
        elif "resource_tracker" in cmdline:
            roles[child.pid] = "other"
        elif "spawn_main" in cmdline:
            roles[child.pid] = "warehouse loader"  # the daemon's only other spawned child
        else:
            roles[child.pid] = "other"
    return roles


def cpu_seconds(roles: dict[int, str]) -> dict[str, float]:
    """CPU seconds (user + system) used so far per role, this benchmark process as ``load generator``."""
    import psutil

    out: dict[str, float] = {}
    for pid, role in roles.items():
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[role] = out.get(role, 0.0) + t.user + t.system
    t = psutil.Process().cpu_times()
    out["load generator"] = t.user + t.system
    return out


class _Client:
    """One keep-alive client POSTing to the API's ``/predict``: counts 200 answers (``good``: each row of them
    is a prediction logged at LOG_SAMPLE_RATE 1) and the rest (``bad``), keeps the latencies of the answered
    requests (ms), and reconnects after a connection error."""

    def __init__(self, api_url: str) -> None:
        self.url = urlparse(api_url)
        self.path = (self.url.path.rstrip("/") or "") + "/predict"
        self.conn = self._connect()
        self.good = self.bad = 0
        self.latencies: list[float] = []

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=30)

    def post(self, body: bytes, since: float) -> None:
        """One request; its latency counts from ``since`` (a ``perf_counter`` reading)."""
        try:
            self.conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
            r = self.conn.getresponse()
            r.read()
        except (OSError, http.client.HTTPException):
            self.bad += 1
            self.conn.close()
            self.conn = self._connect()
            return
        if r.status == 200:
            self.good += 1
        else:
            self.bad += 1
        self.latencies.append((time.perf_counter() - since) * 1000)


def _figures(clients: list[_Client], elapsed: float, **extra: Any) -> dict[str, Any]:
    """The clients' requests pooled: counts, rps and latency percentiles (the latencies sorted)."""
    latencies = sorted(x for c in clients for x in c.latencies)
    return {
        "requests": len(latencies),
        "answered": sum(c.good for c in clients),
        "errors": sum(c.bad for c in clients),
        **extra,
        **_latency_figures(latencies, elapsed),
    }


def _latency_figures(latencies: list[float], elapsed: float) -> dict[str, Any]:
    """The figures of requests answered in ``elapsed`` seconds with ``latencies`` (ms, sorted): the time, the
    latencies (pooled over the repetitions, then dropped from the output), rps, p50 and p99."""
    n = len(latencies)
    return {
        "elapsed_s": round(elapsed, 3),
        "latencies_ms": latencies,
        "rps": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(statistics.median(latencies), 2) if n else None,
        "p99_ms": round(_p99(latencies), 2) if n else None,
    }


def _run_clients(clients: list[_Client], work: Any, join_timeout: float) -> float:
    """Run ``work(client)`` in a thread per client until each returns; the time it took (s)."""
    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=join_timeout)
    for c in clients:
        c.conn.close()
    return time.perf_counter() - started


def load(api_url: str, body: bytes, seconds: float, concurrency: int) -> dict[str, Any]:
    """``concurrency`` keep-alive clients POSTing ``body`` back to back for ``seconds``: rps and latency
    percentiles."""
    stop_at = time.perf_counter() + seconds

    def work(client: _Client) -> None:
        while time.perf_counter() < stop_at:
            client.post(body, since=time.perf_counter())

    clients = [_Client(api_url) for _ in range(concurrency)]
    elapsed = _run_clients(clients, work, seconds + 60)
    return _figures(clients, elapsed)


def load_at_rate(
    api_url: str, body: bytes, seconds: float, rate: float, connections: int, grace_s: float = 10.0
) -> dict[str, Any]:
    """An open loop: request ``i`` is due ``i / rate`` seconds after the start, sent by whichever of
    ``connections`` keep-alive clients is free, and its latency counts from when it was due (so a request
    that waited for a free client, or for the server, counts that wait: no coordinated omission). Requests
    still unsent ``grace_s`` after the last one was due are not sent (``not_sent``). Same figures as
    ``load``."""
    total = max(1, int(seconds * rate))
    lock = threading.Lock()
    next_index = [0]
    not_sent = [0]
    start = time.perf_counter() + 0.05
    give_up_at = start + seconds + grace_s

    def take() -> int | None:
        """The next request's index; -1 for one too late to send; None when all are taken."""
        with lock:
            i = next_index[0]
            if i >= total:
                return None
            next_index[0] += 1
            if time.perf_counter() > give_up_at:
                not_sent[0] += 1
                return -1
            return i

    def work(client: _Client) -> None:
        while (i := take()) is not None:
            if i < 0:
                continue
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            client.post(body, since=due)

    clients = [_Client(api_url) for _ in range(connections)]
    elapsed = _run_clients(clients, work, seconds + grace_s + 60)
    return _figures(clients, elapsed - 0.05, not_sent=not_sent[0])


def block_count(seconds: float, block: float) -> int:
    """How many blocks each setting's ``seconds`` of measurement is split into: blocks of about ``block``
    seconds (at least one; ``block`` 0: one run per setting)."""
    return max(1, round(seconds / block)) if block > 0 else 1


def block_order(first: float, blocks: int) -> list[float]:
    """The LOG_SAMPLE_RATE of each block of a repetition: ``blocks`` for each setting in ABBA order, starting
    with ``first`` (1.0, 0.0, 0.0, 1.0, 1.0, 0.0, ...). Each setting follows each setting about equally often,
    and a drift that is linear in time falls on both alike."""
    other = 1.0 - first
    return [rate for k in range(blocks) for rate in ((first, other) if k % 2 == 0 else (other, first))]


def pool_blocks(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One setting's blocks of a repetition as one run: requests, answers and errors summed, rps as all its
    requests over all its blocks' time, p50 and p99 of all its latencies, and each process's CPU per request
    (from each block's ``cpu_s``)."""
    latencies = sorted(x for p in parts for x in p["latencies_ms"])
    n = len(latencies)
    out: dict[str, Any] = {
        "requests": n,
        "answered": sum(p["answered"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "blocks": len(parts),
    }
    if any("not_sent" in p for p in parts):
        out["not_sent"] = sum(p.get("not_sent", 0) for p in parts)
    out.update(_latency_figures(latencies, sum(p["elapsed_s"] for p in parts)))
    cpu: dict[str, float] = {}
    for p in parts:
        for role, seconds in p.get("cpu_s", {}).items():
            cpu[role] = cpu.get(role, 0.0) + seconds
    if cpu and n:
        out["cpu_ms_per_request"] = {role: round(1000 * seconds / n, 3) for role, seconds in cpu.items()}
    return out


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _p99(latencies: list[float]) -> float:
    """The 99th percentile of ``latencies`` (sorted, not empty), as every figure here takes it."""
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--api-url", help="benchmark this API as it is (no parameter switching, no call counting)"
    )
    ap.add_argument("--n-features", type=int, help="features per row (needed with --api-url)")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement (default 5)")
    ap.add_argument(
        "--concurrency",
        type=int,
        help="concurrent keep-alive clients (default 4; 16 with --rate, where they only carry the load)",
    )
    ap.add_argument(
        "--rate",
        type=float,
        help="an open loop at this many requests/s instead of clients sending back to back: the p99 at a load "
        "the API keeps up with (the throughput cost then only shows whether it kept up)",
    )
    ap.add_argument(
        "--use-running", action="store_true", help="use the running local cloud (needs a live endpoint)"
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=6,
        help="repetitions, logging on and off interleaved in alternating order, pooled (default 6)",
    )
    ap.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[1, 100],
        help="rows per request, one run each (default: 1 100, the serving benchmark's payloads)",
    )
    ap.add_argument(
        "--block",
        type=float,
        default=DEFAULT_BLOCK_S,
        help=f"switch logging on and off every this many seconds within a repetition, in ABBA order, so that "
        f"both settings meet the machine in the same state (default {DEFAULT_BLOCK_S:g}; 0: one run per setting)",
    )
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    if args.concurrency is None:
        args.concurrency = 16 if args.rate else 4
    if args.seconds <= 0 or args.seconds > 120 or not 1 <= args.concurrency <= 64:
        raise SystemExit("--seconds must be in (0, 120] and --concurrency in 1..64")
    if args.rate is not None and not 0 < args.rate <= 10_000:
        raise SystemExit("--rate must be in (0, 10000] requests/s")
    if not 1 <= args.repeat <= 30:
        raise SystemExit("--repeat must be in 1..30")
    if not 0 <= args.block <= args.seconds:
        raise SystemExit("--block must be in [0, --seconds]")
    if not all(1 <= rows <= 1000 for rows in args.rows):
        raise SystemExit("--rows must each be in 1..1000")

    own: tuple[dict[str, str], str] | None = None
    target = None
    if args.api_url:
        if not args.n_features:
            raise SystemExit("--api-url needs --n-features")
        host = urlparse(args.api_url).hostname
        if host not in ("127.0.0.1", "localhost"):
            raise SystemExit("this benchmark only talks to 127.0.0.1")
        api_url, n_features = args.api_url, args.n_features
    else:
        if args.use_running:
            state = read_local_state()
            if state is None:
                raise SystemExit("no local cloud is running (start one, or drop --use-running)")
        else:
            own = start_own_cloud()
            state = read_local_state()
        target = local_target(state)
        original_rate = (
            target.client("lambda")
            .get_function_configuration(FunctionName=target.names.proxy_function)["Environment"]["Variables"]
            .get("LOG_SAMPLE_RATE", "1.0")
        )
        api_url = target.api_url
        n_features = feature_count(target)

    def run_load(body: bytes, seconds: float) -> dict[str, Any]:
        if args.rate:
            return load_at_rate(api_url, body, seconds, args.rate, args.concurrency)
        return load(api_url, body, seconds, args.concurrency)

    runs: list[dict[str, Any]] = []
    per_rep: dict[tuple[int, float | None, int], dict[str, Any]] = {}  # (rows, rate, rep) -> its requests
    # predictions answered with LOG_SAMPLE_RATE 1, warm-ups included: all should reach the warehouse
    logged = 0
    rows_before = warehouse_rows() if target is not None else 0
    landing: dict[str, Any] | None = None
    blocks = block_count(args.seconds, args.block)

    def keep(rep: int, rows: int, rate: float | None, r: dict[str, Any]) -> None:
        """A setting's run of a repetition: its requests for the pooled figures (``per_rep``), the rest in
        ``runs`` (and on stderr as it comes)."""
        per_rep[(rows, rate, rep)] = {
            "latencies_ms": r.pop("latencies_ms"),
            "requests": r["requests"],
            "elapsed_s": r["elapsed_s"],
        }
        runs.append({"rep": rep, "rows": rows, "log_sample_rate": rate, **r})
        if not args.json:
            print(json.dumps(runs[-1]), file=sys.stderr)

    try:
        for rep in range(args.repeat):  # interleaved: drift in the machine's load hits both settings alike
            # logging on first in odd repetitions, off first in even ones: what the previous run leaves
            # behind (the pipeline finishing its work) falls on both settings alike
            first = 1.0 if rep % 2 == 0 else 0.0
            for rows in args.rows:
                body = json.dumps({"instances": [[0.5] * n_features for _ in range(rows)]}).encode()
                if target is None:  # --api-url: the API as it is, one run
                    run_load(body, min(WARMUP_S, args.seconds))
                    keep(rep + 1, rows, None, run_load(body, args.seconds))
                    continue
                before = pipeline_counts(target)
                roles = process_roles()
                parts: dict[float, list[dict[str, Any]]] = {1.0: [], 0.0: []}
                logged_requests = 0  # requests answered with logging on, warm-ups included
                for rate in block_order(first, blocks):
                    set_sample_rate(target, rate)
                    if blocks > 1:
                        # each block pays for its own logging, not for the staging and loading of earlier
                        # blocks' records (Firehose's and COPY's work on AWS): moto's Firehose buffer and the
                        # warehouse loader are flushed before its warm-up (left to fill, the buffer writes
                        # itself as one staging object at 256 MB, about 15 s of 100-row logging, inside
                        # whichever block reaches it). The warm-up's records are delivered in the block, as
                        # the block's last records are after it: the block carries about its own logging.
                        settle()
                    warm = run_load(body, min(WARMUP_S, args.seconds))
                    if blocks == 1:
                        settle()  # one run per setting (as before --block): each run pays for its own logging
                    cpu_before = cpu_seconds(roles)
                    r = run_load(body, args.seconds / blocks)
                    cpu_after = cpu_seconds(roles)
                    r["cpu_s"] = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
                    parts[rate].append(r)
                    if rate == 1.0:
                        logged += (warm["answered"] + r["answered"]) * rows
                        logged_requests += warm["requests"] + r["requests"]
                time.sleep(1.0)  # the sender's last batch
                after = pipeline_counts(target)
                for rate in (first, 1.0 - first):
                    r = pool_blocks(parts[rate])
                    if rate == 1.0:  # Firehose calls of the logging-on blocks, warm-ups included, per request
                        r["firehose_calls_per_request"] = (
                            round((after[0] - before[0]) / logged_requests, 3) if logged_requests else None
                        )
                        r["records_to_log"] = after[1] - before[1]
                    else:
                        r["firehose_calls_per_request"] = None
                        r["records_to_log"] = 0
                    keep(rep + 1, rows, rate, r)
        if target is not None:
            print("waiting for the warehouse loader to load every logged prediction ...", file=sys.stderr)
            landing = wait_for_warehouse(logged, rows_before)
    finally:
        if target is not None and own is None:
            set_sample_rate(target, original_rate)
        if own is not None:
            _cli(own[0], "local", "stop", timeout=120)
            shutil.rmtree(own[1], ignore_errors=True)
    results = summarize(runs, per_rep)
    costs = logging_costs(results, runs, per_rep)
    if args.json:
        print(
            json.dumps(
                {
                    "concurrency": args.concurrency,
                    "rate": args.rate,
                    "seconds": args.seconds,
                    "repeat": args.repeat,
                    "results": results,
                    "logging_cost": costs,
                    "warehouse": landing,
                    "runs": runs,
                },
                indent=2,
            )
        )
        return
    load_kind = (
        f"an open loop at {args.rate:g} requests/s over {args.concurrency} keep-alive clients (latency from "
        "when each request was due)"
        if args.rate
        else f"{args.concurrency} keep-alive clients"
    )
    measured = (
        f"{args.seconds:g} s per setting in each repetition, in {blocks} blocks of {args.seconds / blocks:g} s "
        "(logging on and off in ABBA order)"
        if blocks > 1
        else f"{args.seconds:g} s per run"
    )
    print(
        f"\nlocal prediction API, {load_kind}, {measured}, "
        f"{args.repeat} repetitions pooled (req/s: all requests over all runs' time; p50, p99: of all requests)"
    )
    print(
        f"{'rows':>5} {'log rate':>8} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'firehose/req':>12} "
        f"{'to log':>6} {'errors':>6}"
    )
    for r in results:
        print(
            f"{r['rows']:>5} {r['log_sample_rate'] if r['log_sample_rate'] is not None else '-':>8} {r['requests']:>9} "
            f"{r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {_or_dash(r.get('firehose_calls_per_request')):>12} "
            f"{r['records_to_log']:>6} {r['errors']:>6}"
        )
    cpu_roles = sorted(
        {role for r in results for role, ms in r.get("cpu_ms_per_request", {}).items() if ms > 0}
    )
    if cpu_roles:
        print("\nCPU ms per request, by process (medians; everything shares the machine's CPUs)")
        print(f"{'rows':>5} {'log rate':>8} " + " ".join(f"{role[:16]:>16}" for role in cpu_roles))
        for r in results:
            cpu = r.get("cpu_ms_per_request", {})
            print(
                f"{r['rows']:>5} {r['log_sample_rate']!s:>8} "
                + " ".join(f"{cpu.get(role, 0.0):>16.3f}" for role in cpu_roles)
            )
    if landing is not None:
        print(
            f"\npredictions logged (LOG_SAMPLE_RATE 1, warm-ups included): {landing['expected']:,}; in the "
            f"warehouse: {landing['landed']:,} (the loader caught up {landing['catch_up_s']} s after the last run)"
        )
        if landing["landed"] < landing["expected"]:
            print("WARNING: some logged predictions did not reach the warehouse")
    if any(r.get("not_sent") for r in results):
        print(
            f"WARNING: the API did not keep up with {args.rate:g} requests/s: some requests were never sent "
            "(`not_sent`); lower --rate"
        )
    if args.rate:
        print(
            f"(an open loop at {args.rate:g} requests/s: the throughput cost only shows whether the API kept up; "
            "the p99 cost is what logging adds to a prediction's latency at that load)"
        )
    if any(r["records_to_log"] for r in results):
        print(
            "WARNING: some prediction logs went to the log fallback instead of Firehose (the sender fell behind):"
            " logging did not do all its work in these runs"
        )
    # in an open loop the offered rate fixes the throughput: only the p99 has a verdict worth printing
    judged = (
        (("p99", "p99_cost_interval_pct"),)
        if args.rate
        else (
            ("throughput", "throughput_cost_interval_pct"),
            ("p99", "p99_cost_interval_pct"),
        )
    )
    for c in costs:
        throughput = "" if args.rate else f"throughput {c['throughput_cost_pct']:+.1f}%, "
        print(
            f"logging cost, {c['rows']} row(s): {throughput}"
            f"p99 {c['p99_cost_pct']:+.1f}% (target: under {TARGET_COST_PCT:g}%{'' if args.rate else ' each'})"
        )
        if "throughput_cost_interval_pct" in c:
            print(
                "  95% intervals (bootstrap over the repetitions): "
                + "; ".join(
                    f"{name} {c[key][0]:+.1f}% to {c[key][1]:+.1f}%, target {c['verdict'][name]}"
                    for name, key in judged
                )
            )
        if "throughput_cost_pct_per_repetition" in c:
            print(
                "  per repetition: throughput "
                + ", ".join(f"{v:+.1f}%" for v in c["throughput_cost_pct_per_repetition"])
                + "; p99 "
                + ", ".join(f"{v:+.1f}%" for v in c["p99_cost_pct_per_repetition"])
            )
        if "server_cpu_ms_per_request" in c:
            cpu = c["server_cpu_ms_per_request"]
            print(
                f"  CPU of the local cloud's processes per request: {cpu['on']:.2f} ms with logging, "
                f"{cpu['off']:.2f} ms without ({100 * (cpu['on'] / cpu['off'] - 1):+.0f}%)"
            )


def summarize(
    runs: list[dict[str, Any]], per_rep: dict[tuple[int, float | None, int], dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per (rows, log rate): throughput as all its requests over all its runs' time, p50 and p99 of
    all its requests (``per_rep``, each run's requests, pooled; without it, the medians over the
    repetitions), the other figures' medians, errors summed."""
    out = []
    for row in medians(runs):
        setting = (row["rows"], row["log_sample_rate"])
        groups = [g for (rows, rate, _), g in (per_rep or {}).items() if (rows, rate) == setting]
        figures = _pooled_figures(groups)
        if figures is not None:
            row["rps"] = round(figures[0], 1)
            row["p50_ms"] = round(statistics.median(x for g in groups for x in g["latencies_ms"]), 2)
            row["p99_ms"] = round(figures[1], 2)
            row["requests"] = sum(g["requests"] for g in groups)
        out.append(row)
    return out


def medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (rows, log rate): the median of each figure over the repetitions, errors summed."""
    out = []
    keys = sorted({(r["rows"], r["log_sample_rate"]) for r in runs}, key=lambda k: (k[0], -(k[1] or 0)))
    for rows, rate in keys:
        group = [r for r in runs if r["rows"] == rows and r["log_sample_rate"] == rate]
        row: dict[str, Any] = {"rows": rows, "log_sample_rate": rate}
        for key in ("requests", "rps", "p50_ms", "p99_ms", "firehose_calls_per_request"):
            values = [r[key] for r in group if r.get(key) is not None]
            # rounded: the median of an even count is a mean (0.0425, not 0.042499999999999996)
            row[key] = round(statistics.median(values), 4) if values else None
        row["errors"] = sum(r["errors"] for r in group)
        if any("not_sent" in r for r in group):
            row["not_sent"] = sum(r.get("not_sent", 0) for r in group)
        roles = sorted({role for r in group for role in r.get("cpu_ms_per_request", {})})
        if roles:
            row["cpu_ms_per_request"] = {
                role: round(statistics.median(r["cpu_ms_per_request"].get(role, 0.0) for r in group), 3)
                for role in roles
            }
        row["records_to_log"] = sum(r.get("records_to_log") or 0 for r in group)
        out.append(row)
    return out


def _cost(on: dict[str, Any], off: dict[str, Any]) -> tuple[float, float] | None:
    if on.get("rps") and off.get("rps") and on.get("p99_ms") and off.get("p99_ms"):
        return 100 * (1 - on["rps"] / off["rps"]), 100 * (on["p99_ms"] / off["p99_ms"] - 1)
    return None


def logging_costs(
    results: list[dict[str, Any]],
    runs: list[dict[str, Any]] | None = None,
    per_rep: dict[tuple[int, float | None, int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per payload size: how much lower the throughput and how much higher the p99 are with logging on (from
    ``results``: pooled over the repetitions), the same per repetition (logging on and off measured back to
    back: the spread shows the machine's noise), with ``per_rep`` (each run's requests) their 95% intervals
    and whether each target is met (``cost_intervals``, ``verdict``), and the CPU time logging adds to a
    request, summed over the local cloud's processes."""
    out = []
    for rows in sorted({r["rows"] for r in results}):
        on = next((r for r in results if r["rows"] == rows and r["log_sample_rate"] == 1.0), None)
        off = next((r for r in results if r["rows"] == rows and r["log_sample_rate"] == 0.0), None)
        cost = _cost(on, off) if on and off else None
        if cost is None:
            continue
        entry: dict[str, Any] = {
            "rows": rows,
            "throughput_cost_pct": round(cost[0], 1),
            "p99_cost_pct": round(cost[1], 1),
        }
        paired = []
        for rep in sorted({r["rep"] for r in runs or [] if r["rows"] == rows}):
            pair = {r["log_sample_rate"]: r for r in runs or [] if r["rows"] == rows and r["rep"] == rep}
            c = _cost(pair[1.0], pair[0.0]) if 1.0 in pair and 0.0 in pair else None
            if c is not None:
                paired.append(c)
        if paired:
            entry["throughput_cost_pct_per_repetition"] = [round(c[0], 1) for c in paired]
            entry["p99_cost_pct_per_repetition"] = [round(c[1], 1) for c in paired]
        intervals = cost_intervals(per_rep or {}, rows)
        if intervals is not None:
            entry["throughput_cost_interval_pct"] = intervals["throughput"]
            entry["p99_cost_interval_pct"] = intervals["p99"]
            entry["verdict"] = {name: verdict(*interval) for name, interval in intervals.items()}
        cpu_on = sum(v for k, v in on.get("cpu_ms_per_request", {}).items() if k != "load generator")
        cpu_off = sum(v for k, v in off.get("cpu_ms_per_request", {}).items() if k != "load generator")
        if cpu_off:
            entry["server_cpu_ms_per_request"] = {"on": round(cpu_on, 3), "off": round(cpu_off, 3)}
        out.append(entry)
    return out


def _pooled_figures(groups: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(requests per second, p99 ms) of runs pooled: all their requests over all their time, the p99 of all
    their latencies (the table's figures, ``summarize``, and each bootstrap resample's); None without
    requests."""
    requests = sum(g["requests"] for g in groups)
    elapsed = sum(g["elapsed_s"] for g in groups)
    latencies = sorted(x for g in groups for x in g["latencies_ms"])
    if not requests or elapsed <= 0 or not latencies:
        return None
    return requests / elapsed, _p99(latencies)


def cost_intervals(
    per_rep: dict[tuple[int, float | None, int], dict[str, Any]],
    rows: int,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, tuple[float, float]] | None:
    """95% intervals of the pooled costs of logging (throughput and p99, in %) for ``rows``-row requests: a
    paired bootstrap over the repetitions (each resample draws repetitions with replacement, and pools each
    drawn repetition's run with logging on and its run with logging off, measured back to back), so the
    interval reflects how much the pooled figure moves with the machine's noise from one repetition to the
    next. None with fewer than 3 complete repetitions."""
    reps = sorted(
        rep for (r, rate, rep) in per_rep if r == rows and rate == 1.0 and (rows, 0.0, rep) in per_rep
    )
    if len(reps) < 3:
        return None
    draw = random.Random(seed)
    throughput, p99 = [], []
    for _ in range(resamples):
        sample = [draw.choice(reps) for _ in reps]
        on = _pooled_figures([per_rep[(rows, 1.0, rep)] for rep in sample])
        off = _pooled_figures([per_rep[(rows, 0.0, rep)] for rep in sample])
        if on is None or off is None or not off[0] or not off[1]:
            continue
        throughput.append(100 * (1 - on[0] / off[0]))
        p99.append(100 * (on[1] / off[1] - 1))
    if not throughput:
        return None

    def interval(values: list[float]) -> tuple[float, float]:
        values.sort()
        n = len(values)
        return round(values[int(0.025 * (n - 1))], 1), round(values[int(0.975 * (n - 1))], 1)

    return {"throughput": interval(throughput), "p99": interval(p99)}


def verdict(low: float, high: float, target: float = TARGET_COST_PCT) -> str:
    """Whether a cost's 95% interval meets ``target`` (a cost under it): "met" when the whole interval is
    under it, "not met" when none of it is, and otherwise "undecided" (the noise spans the target)."""
    if high < target:
        return "met"
    if low >= target:
        return "not met"
    return "undecided"


if __name__ == "__main__":
    main()
