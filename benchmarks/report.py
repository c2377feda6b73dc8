"""Benchmark of the A/B report: 10^5, 10^6, 10^7 logged predictions (+ feedback for ~80%) in a DuckDB file.

    .venv/bin/python benchmarks/report.py [--sizes 100000,1000000,10000000] [--dir /tmp/trainserve-bench]

Rows are generated inside DuckDB (``range()`` + ``hash()``, see ``tests/report/warehouse_fixture.py``), two
variants at 90/10 over 24 hours, 100,000 sticky users. ``build_report`` is timed end to end (its 4 SQL statements through the
same ``DuckDBQuery`` the CLI uses, over the de-duplicating views of schema.sql, plus the statistics); the
SQL share is measured by timing the query backend. Target: < 5 s at 10^7 rows.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder is sys.path[0]; a sibling benchmark module could shadow the stdlib
# (benchmarks/logging.py does), so take the folder off the path before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != _HERE]

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "report"))

from warehouse_fixture import ENDPOINT, Arm, create_schema, fill  # noqa: E402
from warehouse_query import DuckDBQuery  # noqa: E402

import trainserve  # noqa: E402,F401  (puts lambdas/* on sys.path)
from stacks.config import load  # noqa: E402
from trainserve.report import build_report  # noqa: E402

USERS = 100_000  # sticky users with skewed activity (the sample-ratio check counts users)
ARMS = [Arm("v1", 1, 0.9, 0.80), Arm("v2", 2, 0.1, 0.81, score_shift=0.05, latency_ms=12.0)]
STATE = {
    "EndpointName": ENDPOINT,
    "ProductionVariants": [
        {"VariantName": "v1", "CurrentWeight": 0.9},
        {"VariantName": "v2", "CurrentWeight": 0.1},
    ],
}


class TimedQuery(DuckDBQuery):
    def __init__(self, path):
        super().__init__(path)
        self.seconds = 0.0
        self.statements = 0

    def query(self, sql, params=None):
        t = time.perf_counter()
        try:
            return super().query(sql, params)
        finally:
            self.seconds += time.perf_counter() - t
            self.statements += 1


def generate(path: Path, n: int) -> float:
    import duckdb

    path.unlink(missing_ok=True)
    t = time.perf_counter()
    con = duckdb.connect(str(path))
    create_schema(con)
    chunk = 2_000_000
    for offset in range(0, n, chunk):
        size = min(chunk, n - offset)
        seconds = 24 * 3600 * size / n
        start = datetime(2026, 1, 1).timestamp() + 24 * 3600 * offset / n
        fill(
            con, ARMS, size, start=datetime.fromtimestamp(start), seconds=seconds, offset=offset, users=USERS
        )
    con.close()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--dir", default=None, help="where the DuckDB files go (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=3, help="report runs per size (the best is shown)")
    args = ap.parse_args()
    cfg = load(ROOT)
    folder = Path(args.dir or tempfile.mkdtemp(prefix="trainserve-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        path = folder / f"warehouse-{n}.duckdb"
        gen_s = generate(path, n)
        best = None
        for _ in range(args.repeat):
            q = TimedQuery(path)
            t = time.perf_counter()
            rep = build_report(q, config=cfg, endpoint_state=STATE)
            total = time.perf_counter() - t
            if best is None or total < best[0]:
                best = (total, q.seconds, rep)
        total, sql_s, rep = best
        size_mb = path.stat().st_size / 1e6
        rows.append((n, gen_s, size_mb, sql_s, total - sql_s, total, rep["recommendation"]["action"]))
        print(
            f"done {n:>12,}: report {total:.2f} s (load average {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
            flush=True,
        )
        path.unlink()
    print(
        f"{'predictions':>12} | {'generate s':>10} | {'file MB':>8} | {'SQL s':>7} | {'stats s':>7} | "
        f"{'report s':>8} | {'µs/row':>7} | recommendation"
    )
    print("-" * 100)
    for n, gen_s, mb, sql_s, stats_s, total, action in rows:
        print(
            f"{n:>12,} | {gen_s:>10.2f} | {mb:>8.0f} | {sql_s:>7.2f} | {stats_s:>7.3f} | {total:>8.2f} | "
            f"{1e6 * total / n:>7.3f} | {action}"
        )


if __name__ == "__main__":
    main()
