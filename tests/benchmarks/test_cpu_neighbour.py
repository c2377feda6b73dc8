"""``cpu_neighbour.py --duty``: the neighbour spins for BUSY_MS, then sleeps IDLE_MS, over and over."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_neighbour.py"
_spec = importlib.util.spec_from_file_location("cpu_neighbour_benchmark", _PATH)
assert _spec is not None and _spec.loader is not None
neighbour = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(neighbour)


class _Done(Exception):
    pass


def test_the_duty_loop_spins_then_sleeps(monkeypatch) -> None:
    """Run the neighbour's source against a clock that moves 1 ms a reading: it spins 25 ms, sleeps 75 ms."""
    now = [0.0]
    spins: list[float] = []
    sleeps: list[float] = []

    def clock() -> float:
        now[0] += 0.001
        spins.append(now[0])
        return now[0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise _Done
        now[0] += seconds

    fake = types.ModuleType("time")
    fake.perf_counter = clock  # type: ignore[attr-defined]
    fake.sleep = sleep  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "time", fake)
    with pytest.raises(_Done):
        exec(compile(neighbour.duty_loop(25, 75), "<neighbour>", "exec"), {})
    assert sleeps == [0.075, 0.075, 0.075]
    # each cycle: one reading to set the deadline, then readings until 25 ms have passed
    assert 3 * 25 <= len(spins) <= 3 * 27
