"""What any busy neighbour process costs the local prediction API on this machine: 100-row requests with
logging off, alternately alone and beside a CPU-bound process at the lowest CPU priority (nice 19, or
``--idle`` for SCHED_IDLE). It shows the floor under ``prediction_logging.py``'s figures: logging's work runs
in processes beside the API (log delivery, moto, the warehouse loader), and on a 2-CPU machine even a
lowest-priority neighbour moves the API's tail latency. ``--duty BUSY_MS IDLE_MS`` makes the neighbour busy
only part of the time (BUSY_MS of CPU, then IDLE_MS asleep, over and over): ``--duty 25 75`` is a neighbour
the size of logging's work at 100 rows (about a quarter of a CPU, in bursts of about the length of one
Firehose call's work).

    .venv/bin/python benchmarks/cpu_neighbour.py            # uses the running local cloud; about 1 minute
    .venv/bin/python benchmarks/cpu_neighbour.py --idle --repeat 5 --seconds 8
    .venv/bin/python benchmarks/cpu_neighbour.py --duty 25 75 --repeat 6

Needs a running local cloud with a live endpoint (``trainserve demo`` leaves one). LOG_SAMPLE_RATE is set to 0
during the runs and restored after. Everything stays on 127.0.0.1, and the neighbour is killed after each run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))

_spec = importlib.util.spec_from_file_location("prediction_logging", _HERE / "prediction_logging.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def duty_loop(busy_ms: float, idle_ms: float) -> str:
    """Python source of a neighbour that spins ``busy_ms``, sleeps ``idle_ms``, and so on until killed."""
    return (
        "import time\n"
        "clock = time.perf_counter\n"
        "while True:\n"
        f"    until = clock() + {busy_ms / 1000!r}\n"
        "    while clock() < until: pass\n"
        f"    time.sleep({idle_ms / 1000!r})\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="duration of each run (default 6)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="pairs of runs, alone and with the neighbour (default 3)"
    )
    ap.add_argument("--rows", type=int, default=100, help="rows per request (default 100)")
    ap.add_argument("--idle", action="store_true", help="run the neighbour as SCHED_IDLE instead of nice 19")
    ap.add_argument(
        "--duty",
        nargs=2,
        type=float,
        metavar=("BUSY_MS", "IDLE_MS"),
        help="a neighbour busy BUSY_MS, then asleep IDLE_MS, in turn (default: busy all the time)",
    )
    args = ap.parse_args()
    if not (0 < args.seconds <= 60 and 1 <= args.repeat <= 10 and 1 <= args.rows <= 1000):
        raise SystemExit("--seconds in (0, 60], --repeat in 1..10, --rows in 1..1000")
    if args.duty and not (0 < args.duty[0] <= 1000 and 0 < args.duty[1] <= 1000):
        raise SystemExit("--duty BUSY_MS IDLE_MS: each in (0, 1000]")
    from trainserve.target import local_target, read_local_state

    state = read_local_state()
    if state is None:
        raise SystemExit("no local cloud is running (start one, e.g. with `trainserve demo`)")
    target = local_target(state)
    n_features = bench.feature_count(target)
    original = (
        target.client("lambda")
        .get_function_configuration(FunctionName=target.names.proxy_function)["Environment"]["Variables"]
        .get("LOG_SAMPLE_RATE", "1.0")
    )
    body = json.dumps({"instances": [[0.5] * n_features for _ in range(args.rows)]}).encode()
    priority = ["chrt", "-i", "0"] if args.idle else ["nice", "-n", "19"]
    loop = "while True: pass" if not args.duty else duty_loop(*args.duty)
    runs: dict[bool, list[dict]] = {False: [], True: []}
    bench.set_sample_rate(target, 0.0)
    try:
        bench.load(target.api_url, body, min(2.0, args.seconds), 4)  # warm-up
        for _ in range(args.repeat):
            for busy in (False, True):
                neighbour = subprocess.Popen([*priority, sys.executable, "-c", loop]) if busy else None
                try:
                    r = bench.load(target.api_url, body, args.seconds, 4)
                finally:
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
                runs[busy].append(r)
                print(json.dumps({"neighbour": busy, **r}), file=sys.stderr)
    finally:
        bench.set_sample_rate(target, original)
    alone, beside = (
        {k: statistics.median(r[k] for r in runs[b]) for k in ("rps", "p99_ms")} for b in (False, True)
    )
    kind = "SCHED_IDLE" if args.idle else "nice 19"
    if args.duty:
        kind += f", busy {args.duty[0]:g} ms / asleep {args.duty[1]:g} ms"
    print(f"\n{args.rows}-row requests, logging off, medians of {args.repeat}:")
    label = f"beside a busy loop ({kind}):"
    width = max(33, len(label))
    print(f"  {'alone:':{width}} {alone['rps']:8.1f} req/s, p99 {alone['p99_ms']:.2f} ms")
    print(f"  {label:{width}} {beside['rps']:8.1f} req/s, p99 {beside['p99_ms']:.2f} ms")
    print(
        f"  the neighbour's cost: throughput {100 * (1 - beside['rps'] / alone['rps']):+.1f}%, "
        f"p99 {100 * (beside['p99_ms'] / alone['p99_ms'] - 1):+.1f}%"
    )


if __name__ == "__main__":
    main()
