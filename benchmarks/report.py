"""Benchmark of the A/B report: 10^5, 10^6, 10^7 logged predictions (+ feedback for ~80%) in a DuckDB file.

    .venv/bin/python benchmarks/report.py [--sizes 100000,1000000,10000000] [--dir /tmp/trainserve-bench]

Rows are generated inside DuckDB (``range()`` + ``hash()``, see ``tests/report/warehouse_fixture.py``), two
variants at 90/10 over 24 hours, 100,000 sticky users, then the local warehouse's de-duplicated tables are
built from them (``trainserve.local.warehouse.create_dedup_tables``, what its loader keeps up to date batch
by batch). ``build_report`` is timed end to end (its SQL statements through the same ``DuckDBQuery`` the
CLI uses, plus the statistics); the SQL share is measured by timing the query backend. ``merge ms`` is what
the loader adds to one load cycle at that size: merging a batch of 500 new predictions and their outcomes
into the de-duplicated tables. ``--layout views`` times the report over schema.sql's ROW_NUMBER views
instead (Redshift's layout: de-duplication at every read). Target: < 5 s at 10^7 rows.
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
from trainserve.local import warehouse  # noqa: E402
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


def generate(path: Path, n: int, layout: str) -> float:
    """Fill ``path`` with ``n`` predictions; ``layout='local'`` also builds the de-duplicated tables."""
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
    if layout == "local":
        warehouse.create_dedup_tables(con)
    con.close()
    return time.perf_counter() - t


def merge_ms(path: Path, n: int, batch: int = 500) -> float:
    """Milliseconds to merge ``batch`` new predictions (one a redelivery) and their outcomes into the
    de-duplicated tables of an ``n``-row warehouse, as one load cycle does (rolled back afterwards)."""
    import duckdb

    con = duckdb.connect(str(path))
    try:
        con.execute(
            f"CREATE TEMP TABLE new_log AS SELECT * REPLACE ('new-' || request_id AS request_id)"
            f" FROM prediction_log LIMIT {batch - 1}"
        )
        con.execute("INSERT INTO new_log SELECT * FROM prediction_log LIMIT 1")
        con.execute(
            f"CREATE TEMP TABLE new_feedback AS SELECT * REPLACE ('new-' || request_id AS request_id)"
            f" FROM prediction_feedback LIMIT {batch}"
        )
        con.execute("BEGIN TRANSACTION")
        t = time.perf_counter()
        warehouse.merge_dedup(con, "prediction_log", "new_log")
        warehouse.merge_dedup(con, "prediction_feedback", "new_feedback")
        took = time.perf_counter() - t
        added = con.execute("SELECT COUNT(*) FROM prediction_log_dedup").fetchone()[0] - n
        con.execute("ROLLBACK")
        if added != batch - 1:
            raise SystemExit(f"merge added {added} rows, expected {batch - 1}")
        return 1000 * took
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--dir", default=None, help="where the DuckDB files go (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=3, help="report runs per size (the best is shown)")
    ap.add_argument(
        "--layout",
        choices=("local", "views"),
        default="local",
        help="local: the local warehouse's de-duplicated tables (default); views: schema.sql's views",
    )
    args = ap.parse_args()
    cfg = load(ROOT)
    folder = Path(args.dir or tempfile.mkdtemp(prefix="trainserve-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        path = folder / f"warehouse-{n}.duckdb"
        gen_s = generate(path, n, args.layout)
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
        merge = merge_ms(path, n) if args.layout == "local" else float("nan")
        rows.append((n, gen_s, size_mb, merge, sql_s, total - sql_s, total, rep["recommendation"]["action"]))
        print(
            f"done {n:>12,}: report {total:.2f} s (load average {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
            flush=True,
        )
        path.unlink()
    print(f"layout: {args.layout}")
    print(
        f"{'predictions':>12} | {'generate s':>10} | {'file MB':>8} | {'merge ms':>8} | {'SQL s':>7} | "
        f"{'stats s':>7} | {'report s':>8} | {'µs/row':>7} | recommendation"
    )
    print("-" * 111)
    for n, gen_s, mb, merge, sql_s, stats_s, total, action in rows:
        print(
            f"{n:>12,} | {gen_s:>10.2f} | {mb:>8.0f} | {merge:>8.1f} | {sql_s:>7.2f} | {stats_s:>7.3f} | "
            f"{total:>8.2f} | {1e6 * total / n:>7.3f} | {action}"
        )


if __name__ == "__main__":
    main()
