"""The local warehouse loader's cost per prediction logged: CPU µs per row of a load cycle (fetch a staging
object from S3, parse it, insert it, merge it into the de-duplicated table, commit, close the file), on a
warehouse that already holds ``--table-rows`` predictions; and the parse alone, the fast whole-column path
(``arrow_batch``) against the record-by-record reference (``parse_object``), each to the Arrow table that is
inserted.

    .venv/bin/python benchmarks/warehouse_load.py                       # about 30 seconds
    .venv/bin/python benchmarks/warehouse_load.py --table-rows 3000000 --rows-per-cycle 30000 --cycles 5 --json

Records are what the proxy writes (``prediction_log.encode``: 30 features, about 1.2 KB a line); S3 is moto
in this process. A cycle of 30,000 rows is about what 2 s of 100-row requests stage at 150 requests/s.
The figures are CPU time of this process (DuckDB runs with one thread, as in the loader process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trainserve  # noqa: E402,F401  (puts lambdas/* on sys.path)

BUCKET = "trainserve-staging"
FEATURES = tuple(f"feature_{i:02d}_{name}" for i, name in enumerate(["radius", "texture", "area"] * 10))


def records(n: int, start: int) -> bytes:
    import prediction_log

    lines = []
    for i in range(start, start + n):
        lines.append(
            prediction_log.encode(
                {
                    "request_id": f"{uuid.uuid4()}-{i % 100}",
                    "event_time": f"2026-11-24 01:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000000:06d}",
                    "endpoint_name": "trainserve-endpoint",
                    "variant_name": "v1" if i % 3 else "v2",
                    "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/trainserve-models/1",
                    "model_version": 1,
                    "user_id": None if i % 4 else f"user-{i % 977}",
                    "features": prediction_log.JsonObjectText(
                        FEATURES, [((i * 7 + j) % 1000) / 37 for j in range(30)]
                    ),
                    "score": (i % 1000) / 1000,
                    "label": i % 2,
                    "threshold": 0.5,
                    "latency_ms": 3.25,
                    "params": '{"decision_threshold":0.5,"log_sample_rate":1.0,"serving_enabled":true}',
                }
            )
        )
    return b"".join(lines)


def prefill(path: Path, rows: int) -> None:
    """``rows`` predictions in the raw and de-duplicated tables, written by SQL (fast), features included."""
    from trainserve.local.warehouse import LocalWarehouse

    w = LocalWarehouse(path)
    features = json.dumps(dict.fromkeys(FEATURES, 12.345678), separators=(",", ":"))
    with w._write() as con:
        for table in ("prediction_log", "prediction_log_dedup"):
            con.execute(
                f"""INSERT INTO {table} SELECT 'old-' || i, TIMESTAMP '2026-11-23 00:00:00' + to_microseconds(i),
                'trainserve-endpoint', 'v1', 'arn', 1, NULL, ? || i, 0.5, 1, 0.5, 3.0, '{{}}'
                FROM range(?) t(i)""",
                [features, rows],
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--table-rows", type=int, default=1_000_000, help="rows already loaded (default 1,000,000)"
    )
    ap.add_argument("--rows-per-cycle", type=int, default=30_000, help="rows per load cycle (default 30,000)")
    ap.add_argument("--cycles", type=int, default=5, help="load cycles measured (default 5; medians)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    if not (
        0 <= args.table_rows <= 20_000_000 and 1 <= args.rows_per_cycle <= 500_000 and 1 <= args.cycles <= 50
    ):
        raise SystemExit("--table-rows in 0..2e7, --rows-per-cycle in 1..500000, --cycles in 1..50")
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    import boto3
    from moto import mock_aws

    from trainserve.local import warehouse as wh

    with tempfile.TemporaryDirectory(prefix="trainserve-loadbench-") as tmp, mock_aws():
        path = Path(tmp) / "warehouse.duckdb"
        print(f"pre-filling {args.table_rows:,} rows ...", file=sys.stderr)
        prefill(path, args.table_rows)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        w = wh.LocalWarehouse(path, threads=1)
        columns = w.columns["prediction_log"]
        cycles, fast_parse, reference_parse = [], [], []
        for c in range(args.cycles):
            data = records(args.rows_per_cycle, c * args.rows_per_cycle)
            t = time.process_time()
            wh.arrow_batch(data, columns)
            fast_parse.append(time.process_time() - t)
            t = time.process_time()
            wh._rows_table(wh.parse_object(data, columns)[0], columns)
            reference_parse.append(time.process_time() - t)
            s3.put_object(Bucket=BUCKET, Key=f"firehose/predictions/{c:04d}", Body=data)
            t = time.process_time()
            loaded = w.load_staged(s3, BUCKET, ["firehose/predictions/"])
            cycles.append(time.process_time() - t)
            assert loaded == args.rows_per_cycle, loaded
        counts = w.counts()
    per_row = 1e6 / args.rows_per_cycle
    result = {
        "table_rows": args.table_rows,
        "rows_per_cycle": args.rows_per_cycle,
        "cycles": args.cycles,
        "line_bytes": round(len(data) / args.rows_per_cycle),
        "load_cycle_cpu_us_per_row": round(statistics.median(cycles) * per_row, 2),
        "parse_fast_cpu_us_per_row": round(statistics.median(fast_parse) * per_row, 2),
        "parse_reference_cpu_us_per_row": round(statistics.median(reference_parse) * per_row, 2),
        "rows_after": counts["prediction_log"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"\nwarehouse of {args.table_rows:,} rows, {args.rows_per_cycle:,} rows a cycle "
        f"({result['line_bytes']} bytes a line), medians of {args.cycles} cycles, CPU µs per row:"
    )
    print(
        f"  load cycle (S3 get, parse, insert, dedup merge, commit, close): {result['load_cycle_cpu_us_per_row']}"
    )
    print(
        f"  parse, fast path (arrow_batch):                                 {result['parse_fast_cpu_us_per_row']}"
    )
    print(
        f"  parse, record by record (parse_object, then Arrow):             {result['parse_reference_cpu_us_per_row']}"
    )


if __name__ == "__main__":
    main()
