"""The prediction logging benchmark's open loop (``--rate``): requests go out on schedule, each latency counts
from when its request was due (a wait for a free client or for the server included), and what the server
cannot take in time is counted, not hidden. A stand-in server on 127.0.0.1 plays the API."""

from __future__ import annotations

import importlib.util
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "prediction_logging.py"
_spec = importlib.util.spec_from_file_location("prediction_logging_benchmark_open", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _server(delay_s: float):
    seen: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(time.perf_counter())
            time.sleep(delay_s)
            out = b'{"predictions": []}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture(params=[0.0], ids=["fast"])
def api(request):
    """(URL, the times the server saw requests); ``request.param``: how long it takes to answer (s)."""
    server, seen = _server(request.param)
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


slow = pytest.mark.parametrize("api", [0.05], ids=["slow"], indirect=True)


def test_every_request_goes_out_on_its_schedule(api) -> None:
    url, seen = api
    r = bench.load_at_rate(url, b"{}", seconds=0.5, rate=40, connections=4)
    assert (r["requests"], r["answered"], r["errors"], r["not_sent"]) == (20, 20, 0, 0)
    assert len(seen) == 20
    # paced, not sent back to back: 20 requests at 40/s span 19/40 s = 0.475 s
    assert seen[-1] - seen[0] >= 0.45
    assert len(r["latencies_ms"]) == 20 and r["latencies_ms"] == sorted(r["latencies_ms"])
    assert r["p99_ms"] == pytest.approx(bench._p99(r["latencies_ms"]), abs=0.01)


@slow
def test_a_latency_counts_from_when_its_request_was_due(api) -> None:
    """One client, a server taking 50 ms, 20 requests due within 0.2 s: they queue, and the wait counts
    (a closed loop would report about 50 ms for each)."""
    url, _ = api
    r = bench.load_at_rate(url, b"{}", seconds=0.2, rate=100, connections=1)
    assert r["requests"] == 20 and r["not_sent"] == 0
    lat = r["latencies_ms"]
    assert lat[0] >= 50
    # the last was due at 0.19 s and could start only after 19 others of 50 ms each (0.95 s)
    assert lat[-1] >= 700


@slow
def test_requests_the_server_cannot_take_in_time_are_counted_not_sent(api) -> None:
    url, seen = api
    r = bench.load_at_rate(url, b"{}", seconds=0.1, rate=200, connections=1, grace_s=0.0)
    assert r["not_sent"] > 0
    assert r["requests"] + r["not_sent"] == 20
    assert len(seen) == r["requests"]


def test_medians_sum_what_was_not_sent() -> None:
    runs = [
        {
            "rows": 1,
            "log_sample_rate": 1.0,
            "requests": 10,
            "rps": 5.0,
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "errors": 0,
            "not_sent": n,
        }
        for n in (0, 3)
    ]
    (row,) = bench.medians(runs)
    assert row["not_sent"] == 3
    closed = [{k: v for k, v in r.items() if k != "not_sent"} for r in runs]
    assert "not_sent" not in bench.medians(closed)[0]
