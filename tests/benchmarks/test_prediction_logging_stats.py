"""The prediction logging benchmark's statistics: pooled costs, their bootstrap intervals, the verdicts."""

from __future__ import annotations

import importlib.util
import random
import statistics
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "prediction_logging.py"
_spec = importlib.util.spec_from_file_location("prediction_logging_benchmark", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _run(latencies: list[float], requests: int, elapsed_s: float = 5.0) -> dict:
    return {"latencies_ms": latencies, "requests": requests, "elapsed_s": elapsed_s}


def _per_rep(reps: int, p99_factor: float, rps_factor: float, seed: int = 1) -> dict:
    """``reps`` repetitions of 100-row runs: logging on has every latency ``p99_factor`` times its pair's
    and ``rps_factor`` times its requests; repetitions differ from each other (the machine's noise)."""
    draw = random.Random(seed)
    out = {}
    for rep in range(1, reps + 1):
        drift = draw.uniform(0.8, 1.25)
        off = [drift * draw.lognormvariate(2.7, 0.3) for _ in range(1000)]
        out[(100, 0.0, rep)] = _run(off, 1000)
        out[(100, 1.0, rep)] = _run([x * p99_factor for x in off], round(1000 * rps_factor))
    return out


def test_an_interval_holds_the_pooled_cost_and_a_clear_cost_is_not_met() -> None:
    per_rep = _per_rep(10, p99_factor=1.2, rps_factor=0.95)
    intervals = bench.cost_intervals(per_rep, 100, resamples=300)
    assert intervals is not None
    # every resample pools pairs in which logging costs 20% of p99 and 5% of throughput exactly
    assert intervals["p99"] == pytest.approx((20.0, 20.0), abs=0.05)
    assert intervals["throughput"] == pytest.approx((5.0, 5.0), abs=0.05)
    assert bench.verdict(*intervals["p99"]) == "not met"
    assert bench.verdict(*intervals["throughput"]) == "met"


def test_noise_between_repetitions_widens_the_interval_around_the_target() -> None:
    draw = random.Random(7)
    per_rep = {}
    for rep in range(1, 11):
        base = [draw.lognormvariate(2.7, 0.3) for _ in range(500)]
        other = [draw.lognormvariate(2.7, 0.3) * draw.uniform(0.85, 1.35) for _ in range(500)]
        per_rep[(100, 0.0, rep)] = _run(base, 500)
        per_rep[(100, 1.0, rep)] = _run(other, 500)
    low, high = bench.cost_intervals(per_rep, 100, resamples=400)["p99"]
    assert low < high
    pooled_on = bench._pooled_figures([per_rep[(100, 1.0, r)] for r in range(1, 11)])
    pooled_off = bench._pooled_figures([per_rep[(100, 0.0, r)] for r in range(1, 11)])
    pooled = 100 * (pooled_on[1] / pooled_off[1] - 1)
    assert low <= pooled <= high


def test_intervals_are_reproducible_and_need_three_complete_repetitions() -> None:
    per_rep = _per_rep(5, p99_factor=1.1, rps_factor=1.0)
    assert bench.cost_intervals(per_rep, 100, resamples=200) == bench.cost_intervals(
        per_rep, 100, resamples=200
    )
    two = {k: v for k, v in per_rep.items() if k[2] <= 2}
    assert bench.cost_intervals(two, 100) is None
    # a repetition without its logging-off run is not drawn
    lopsided = {k: v for k, v in per_rep.items() if not (k[2] > 2 and k[1] == 0.0)}
    assert bench.cost_intervals(lopsided, 100) is None
    assert bench.cost_intervals(per_rep, 1) is None  # no runs of that size


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(-3.0, 9.9, "met"), (10.0, 25.0, "not met"), (4.0, 16.0, "undecided"), (-1.0, 10.0, "undecided")],
)
def test_verdict(low: float, high: float, expected: str) -> None:
    assert bench.verdict(low, high) == expected


def test_logging_costs_report_intervals_and_verdicts() -> None:
    per_rep = _per_rep(6, p99_factor=1.3, rps_factor=0.85)
    runs = []
    for (rows, rate, rep), run in per_rep.items():
        figures = bench._pooled_figures([run])
        runs.append(
            {
                "rep": rep,
                "rows": rows,
                "log_sample_rate": rate,
                "requests": run["requests"],
                "rps": figures[0],
                "p99_ms": figures[1],
                "p50_ms": 1.0,
                "errors": 0,
            }
        )
    results = bench.summarize(runs, per_rep)
    on = next(r for r in results if r["log_sample_rate"] == 1.0)
    pooled = sorted(x for (_, rate, _), g in per_rep.items() if rate == 1.0 for x in g["latencies_ms"])
    assert on["requests"] == sum(g["requests"] for (_, rate, _), g in per_rep.items() if rate == 1.0)
    assert on["rps"] == round(on["requests"] / (6 * 5.0), 1)
    assert on["p50_ms"] == round(statistics.median(pooled), 2)
    assert on["p99_ms"] == round(pooled[int(len(pooled) * 0.99)], 2)
    (cost,) = bench.logging_costs(results, runs, per_rep)
    assert cost["p99_cost_pct"] == pytest.approx(30.0, abs=0.2)
    assert cost["throughput_cost_pct"] == pytest.approx(15.0, abs=0.2)
    assert cost["verdict"] == {"throughput": "not met", "p99": "not met"}
    low, high = cost["p99_cost_interval_pct"]
    assert low <= cost["p99_cost_pct"] <= high
    (without,) = bench.logging_costs(results, runs)
    assert "verdict" not in without and without["p99_cost_pct"] == cost["p99_cost_pct"]


def test_blocks_alternate_in_abba_order_with_as_many_of_each_setting() -> None:
    assert bench.block_order(1.0, 3) == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert bench.block_order(0.0, 2) == [0.0, 1.0, 1.0, 0.0]
    assert bench.block_order(1.0, 1) == [1.0, 0.0]  # one run per setting, as --block 0 measures
    for blocks in range(1, 8):
        order = bench.block_order(1.0, blocks)
        assert order.count(1.0) == order.count(0.0) == blocks
        pairs = list(zip(order, order[1:], strict=False))
        # each setting follows each setting about equally often: what a block leaves behind falls on both
        assert abs(pairs.count((1.0, 0.0)) - pairs.count((0.0, 1.0))) <= 1
        assert abs(pairs.count((1.0, 1.0)) - pairs.count((0.0, 0.0))) <= 1


@pytest.mark.parametrize(
    ("seconds", "block", "expected"), [(10, 2, 5), (5, 2, 2), (5, 0, 1), (1, 2, 1), (10, 3, 3), (10, 10, 1)]
)
def test_each_setting_s_seconds_make_blocks_of_about_the_block_length(seconds, block, expected) -> None:
    assert bench.block_count(seconds, block) == expected


def test_a_setting_s_blocks_pool_into_one_run_of_its_repetition() -> None:
    parts = [
        {"latencies_ms": [3.0, 1.0], "requests": 2, "answered": 2, "errors": 0, "elapsed_s": 2.0,
         "cpu_s": {"moto": 0.004, "daemon": 0.010}},
        {"latencies_ms": [2.0, 9.0, 4.0], "requests": 3, "answered": 2, "errors": 1, "elapsed_s": 2.5,
         "cpu_s": {"moto": 0.001, "daemon": 0.015}},
    ]  # fmt: skip
    run = bench.pool_blocks(parts)
    assert run["latencies_ms"] == [1.0, 2.0, 3.0, 4.0, 9.0]
    assert (run["requests"], run["answered"], run["errors"], run["blocks"]) == (5, 4, 1, 2)
    assert run["elapsed_s"] == 4.5 and run["rps"] == round(5 / 4.5, 1)
    assert run["p50_ms"] == 3.0 and run["p99_ms"] == 9.0
    assert run["cpu_ms_per_request"] == {"moto": 1.0, "daemon": 5.0}  # all blocks' CPU over all requests
    assert "not_sent" not in run
    parts[0]["not_sent"] = 3
    assert bench.pool_blocks(parts)["not_sent"] == 3
