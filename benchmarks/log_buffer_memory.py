"""Memory the proxy's log buffer holds: ``--requests`` requests of ``--rows`` rows of ``--features`` features,
their log records made as the proxy makes them (``PredictionRecords`` with ``NumberedIds`` and
``JsonRows.of``), held at once (as in a full buffer, when the log delivery falls behind), measured with
tracemalloc; and the same records if they kept the parsed rows as well as their text (as ``JsonRows.of`` did
before ``70dc03f``), for comparison. Rows of 0.5 (the prediction logging benchmark's) and of random doubles.

    .venv/bin/python benchmarks/log_buffer_memory.py                  # 1,000 requests of 100 rows: 100,000 records
    .venv/bin/python benchmarks/log_buffer_memory.py --requests 200 --rows 100 --features 30
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trainserve  # noqa: E402,F401,I001  (puts lambdas/* on sys.path, for prediction_log)
from prediction_log import JsonRows, NumberedIds, PredictionRecords  # noqa: E402


def records(
    rows: int, names: tuple[str, ...], value: Callable[[], float], keep_rows: bool
) -> PredictionRecords:
    """One request's log records, from rows parsed from a request body as the proxy parses them."""
    body = json.dumps({"instances": [[value() for _ in names] for _ in range(rows)]})
    parsed = [[float(x) for x in row] for row in json.loads(body)["instances"]]
    text = JsonRows.of(parsed)
    held = JsonRows(text.text, text.key, parsed, text.count, text.exact) if keep_rows else text
    return PredictionRecords(
        {
            "event_time": "2026-12-05T17:00:00.000Z",
            "endpoint_name": "trainserve-endpoint",
            "variant_name": "v1",
            "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/trainserve-models/1",
            "model_version": 1,
            "user_id": None,
        },
        NumberedIds(str(uuid.uuid4()), rows),
        names,
        held,
        [random.random() for _ in range(rows)],
        [random.randint(0, 1) for _ in range(rows)],
        {"threshold": 0.5, "latency_ms": 12.345, "params": "{}"},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000, help="requests held at once (default 1000)")
    ap.add_argument("--rows", type=int, default=100, help="rows per request (default 100)")
    ap.add_argument("--features", type=int, default=30, help="features per row (default 30)")
    args = ap.parse_args()
    if not (1 <= args.requests <= 100_000 and 1 <= args.rows <= 1000 and 1 <= args.features <= 1000):
        raise SystemExit("--requests must be in 1..100000, --rows in 1..1000, --features in 1..1000")
    names = tuple(f"feature_{i}" for i in range(args.features))
    print(f"{args.requests:,} requests of {args.rows} rows of {args.features} features held at once:")
    for label, value in (("0.5", lambda: 0.5), ("random doubles", lambda: random.gauss(0.0, 1.0))):
        for keep_rows in (False, True):
            tracemalloc.start()
            held = [records(args.rows, names, value, keep_rows) for _ in range(args.requests)]
            current, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            kind = "text and parsed rows (before 70dc03f)" if keep_rows else "text only (JsonRows.of)"
            print(f"  rows of {label:<15} {kind:<38} {current / 1e6:8.1f} MB")
            del held


if __name__ == "__main__":
    main()
