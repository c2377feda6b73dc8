"""Serving benchmark: our serving app against MLflow, a hand-written FastAPI app and a constant-response floor.

    .venv/bin/python benchmarks/serving.py [--quick] [--json results.json]

One model (StandardScaler + LogisticRegression on scikit-learn's breast-cancer data), four servers, each
with 2 workers on 127.0.0.1:
  ours     inference/serve.py (granian, RSGI, the pipeline compiled to numpy)
  mlflow   `mlflow models serve --env-manager local --workers 2` (uvicorn) on mlflow.sklearn.save_model output
  fastapi  a plain FastAPI + uvicorn /invocations app (predict_proba; no access log), written below
  floor    a raw ASGI app returning a constant body (granian): the cost of HTTP alone
Four workloads: JSON 1 row, JSON 100 rows, CSV 1 row, CSV 100 rows (MLflow needs a CSV header line, so its
CSV bodies carry one). Predictions are checked against scikit-learn before any load is applied.
Each measurement is `wrk -t1 -c16 -d10s --latency` with a Lua script for the POST body; 3 repetitions,
interleaved across servers (the machine is shared, so load drifts); medians are reported. Only the server
under load runs (each repetition starts each server in turn and stops it after its four workloads), and
wrk uses one thread (it keeps up with 20,000 requests/s), so that the 2 CPUs go to the server, not to idle
neighbours or a second load-generator thread: on 2 CPUs those show up as scheduling stalls in every p99.
--quick: 2 s, 1 repetition. Every server is killed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/ holds scripts, not a package: its files (e.g. logging.py) must not shadow the standard library
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import joblib  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
WORKERS = 2
CONNECTIONS = 16
WRK_THREADS = 1
PEERS = ("mlflow", "fastapi")
SERVERS = ("ours", "mlflow", "fastapi", "floor")
WORKLOADS = ("json-1", "json-100", "csv-1", "csv-100")

FASTAPI_APP = '''
"""A plain FastAPI /invocations app, as commonly written: request body -> numpy -> predict_proba -> JSON."""
import io
import json
import os

import joblib
import numpy as np
from fastapi import FastAPI, HTTPException, Request

app = FastAPI()
model = joblib.load(os.environ["PEER_MODEL"])


@app.get("/ping")
def ping():
    return {"status": "ok"}


@app.post("/invocations")
async def invocations(request: Request):
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("text/csv"):
            X = np.loadtxt(io.StringIO(body.decode()), delimiter=",", ndmin=2)
        elif content_type.startswith("application/json"):
            doc = json.loads(body)
            X = np.asarray(doc["instances"] if isinstance(doc, dict) else doc, dtype=float)
            if X.ndim == 1:
                X = X[None, :]
        else:
            raise HTTPException(status_code=415, detail="unsupported content type")
    except (ValueError, KeyError) as e:
        raise HTTPException(status_code=400, detail=str(e)) from None
    scores = model.predict_proba(X)[:, 1]
    return {"predictions": [{"score": float(s), "label": int(s >= 0.5)} for s in scores]}
'''

FLOOR_APP = '''
"""The floor: a raw ASGI app that answers every request with the same small JSON body."""
BODY = b'{"predictions":[{"score":0.5,"label":1}]}'
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(START)
    await send(END)
'''

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = assert(io.open("{path}", "rb"))
wrk.body = f:read("*a")
f:close()
"""


@dataclass
class Server:
    name: str
    cmd: list
    env: dict = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ setup


def build_model(work: Path):
    data = load_breast_cancer()
    X, y = data.data.astype(np.float64), data.target
    names = [n.replace(" ", "_") for n in data.feature_names]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    model_dir = work / "model"
    model_dir.mkdir()
    joblib.dump(pipeline, model_dir / "model.joblib")
    (model_dir / "schema.json").write_text(
        json.dumps({"feature_names": names, "label": "target", "classes": [0, 1]})
    )
    import mlflow.sklearn  # slow import: only here

    mlflow.sklearn.save_model(pipeline, str(work / "mlflow_model"))
    return pipeline, X, names, model_dir


def write_payloads(work: Path, X: np.ndarray, names: list[str]) -> dict:
    """{(server, workload): (path, content type, rows)}: the same rows for every server."""

    def csv(rows, header=False):
        lines = [",".join(names)] if header else []
        lines += [",".join(repr(float(v)) for v in row) for row in rows]
        return "\n".join(lines).encode()

    payloads = {}
    for workload in WORKLOADS:
        kind, n = workload.split("-")
        rows = X[: int(n)]
        for server in SERVERS:
            if kind == "json":
                body, ctype = json.dumps({"instances": rows.tolist()}).encode(), "application/json"
            else:
                body, ctype = csv(rows, header=server == "mlflow"), "text/csv"
            path = work / f"{server}-{workload}.body"
            path.write_bytes(body)
            lua = work / f"{server}-{workload}.lua"
            lua.write_text(LUA.format(content_type=ctype, path=path))
            payloads[server, workload] = (path, ctype, rows, lua)
    return payloads


def define_servers(work: Path, model_dir: Path) -> list[Server]:
    (work / "peer_fastapi.py").write_text(textwrap.dedent(FASTAPI_APP))
    (work / "floor_app.py").write_text(textwrap.dedent(FLOOR_APP))
    servers = []
    for name in SERVERS:
        port = free_port()
        if name == "ours":
            cmd = [PYTHON, str(ROOT / "inference" / "serve.py"), "--model-dir", str(model_dir), "--host", HOST,
                   "--port", str(port), "--workers", str(WORKERS)]  # fmt: skip
            env = {}
        elif name == "mlflow":
            cmd = [str(BIN / "mlflow"), "models", "serve", "-m", str(work / "mlflow_model"), "--env-manager", "local",
                   "--workers", str(WORKERS), "-h", HOST, "-p", str(port)]  # fmt: skip
            # it execs `uvicorn` from PATH: the venv's
            env = {
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "MLFLOW_TRACKING_URI": f"file://{work / 'mlruns'}",
            }
        elif name == "fastapi":
            cmd = [PYTHON, "-m", "uvicorn", "peer_fastapi:app", "--app-dir", str(work), "--host", HOST,
                   "--port", str(port), "--workers", str(WORKERS), "--no-access-log", "--log-level", "warning"]  # fmt: skip
            env = {"PEER_MODEL": str(model_dir / "model.joblib")}
        else:
            cmd = [str(BIN / "granian"), "--interface", "asginl", "--workers", str(WORKERS), "--host", HOST,
                   "--port", str(port), "--no-ws", "--http", "1", "--working-dir", str(work), "floor_app:app"]  # fmt: skip
            env = {}
        servers.append(Server(name, cmd, env, port, log_path=work / f"{name}.log"))
    return servers


def start(server: Server) -> None:
    log = open(server.log_path, "wb")  # noqa: SIM115 (closed with the process)
    server.proc = subprocess.Popen(
        server.cmd,
        env={**os.environ, **server.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stop() takes its workers too
    )
    log.close()


def wait_ready(server: Server, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited early:\n{server.log_path.read_text()[-3000:]}")
        try:
            if request(server.port, "GET", "/ping")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(
        f"{server.name} did not become ready in {timeout:.0f} s:\n{server.log_path.read_text()[-3000:]}"
    )


def stop(server: Server) -> None:
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------------------------------ correctness


def check_predictions(server: Server, payloads: dict, pipeline) -> str:
    """Every workload answered 200 with scikit-learn's predictions; returns what was compared."""
    for workload in WORKLOADS:
        path, ctype, rows, _ = payloads[server.name, workload]
        status, body = request(server.port, "POST", "/invocations", path.read_bytes(), ctype)
        if status != 200:
            raise RuntimeError(f"{server.name} {workload}: HTTP {status}: {body[:300]!r}")
        doc = json.loads(body)
        if server.name == "floor":
            continue
        preds = doc["predictions"]
        if len(preds) != len(rows):
            raise RuntimeError(f"{server.name} {workload}: {len(preds)} predictions for {len(rows)} rows")
        if server.name == "mlflow":  # MLflow's pyfunc serves predict(): labels
            got = [p if not isinstance(p, dict) else p.get("0") for p in preds]
            if got != pipeline.predict(rows).tolist():
                raise RuntimeError(f"mlflow {workload}: labels differ from scikit-learn's predict")
            continue
        scores = np.array([p["score"] for p in preds])
        want = pipeline.predict_proba(rows)[:, 1]
        if np.max(np.abs(scores - want)) > 1e-12:
            raise RuntimeError(
                f"{server.name} {workload}: scores differ from predict_proba by {np.max(np.abs(scores - want))}"
            )
        if [p["label"] for p in preds] != pipeline.predict(rows).tolist():
            raise RuntimeError(f"{server.name} {workload}: labels differ from scikit-learn's predict")
    if server.name == "floor":
        return "constant body"
    return (
        "labels == predict"
        if server.name == "mlflow"
        else "scores == predict_proba (1e-12), labels == predict"
    )


# ---------------------------------------------------------------------------------------------- wrk


_LATENCY = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(server: Server, lua: Path, seconds: float) -> Result:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s", "--latency", "-s",
           str(lua), f"http://{HOST}:{server.port}/invocations"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    lat = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)] for m in _LATENCY.finditer(out)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not rps or "50" not in lat or "99" not in lat:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Result(float(rps.group(1)), lat["50"], lat["99"], errors)


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


# --------------------------------------------------------------------------------------------- report


def report(table: dict, checks: dict, args) -> str:
    lines = [
        f"Serving benchmark: wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{args.seconds}s, {args.reps} repetition(s), "
        f"medians; {WORKERS} workers per server; load average at the end {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs",
        "",
        f"{'workload':<10} {'server':<8} {'RPS':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}",
    ]
    for workload in WORKLOADS:
        for name in SERVERS:
            r = table[workload][name]
            lines.append(
                f"{workload:<10} {name:<8} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>6}"
            )
        best = max(PEERS, key=lambda p: table[workload][p].rps)
        ours, peer = table[workload]["ours"], table[workload][best]
        lines.append(
            f"{'':<10} ours / best peer ({best}): throughput x{ours.rps / peer.rps:.2f}, "
            f"p99 {ours.p99_ms:.2f} vs {peer.p99_ms:.2f} ms"
        )
        lines.append("")
    lines.append("Checked before the load: " + "; ".join(f"{k}: {v}" for k, v in checks.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per run, 1 repetition")
    parser.add_argument("--json", type=Path, help="also write the medians to this JSON file")
    args = parser.parse_args(argv)
    args.seconds, args.reps = (2, 1) if args.quick else (10, 3)
    if shutil.which("wrk") is None:
        print("benchmarks/serving.py needs wrk: apt-get install -y wrk  (Debian/Ubuntu)", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        work = Path(tmp)
        try:
            print("building the model and the MLflow copy ...", flush=True)
            pipeline, X, names, model_dir = build_model(work)
            payloads = write_payloads(work, X, names)
            servers = define_servers(work, model_dir)
            # One server runs at a time: an idle server still wakes up (supervisors, timers) and steals
            # CPU from the one under load, which shows in the tail. Each repetition starts every server
            # afresh, in turn (interleaved: drift in the machine's load hits every server alike).
            checks: dict = {}
            warm = 1 if args.quick else 2
            runs: dict = {w: {s.name: [] for s in servers} for w in WORKLOADS}
            total = args.reps * len(WORKLOADS) * len(servers)
            done = 0
            for rep in range(args.reps):
                for server in servers:
                    start(server)
                    try:
                        wait_ready(server)
                        if rep == 0:
                            checks[server.name] = check_predictions(server, payloads, pipeline)
                            print(f"predictions checked: {server.name}", flush=True)
                        for workload in WORKLOADS:
                            run_wrk(server, payloads[server.name, workload][3], warm)
                        for workload in WORKLOADS:
                            runs[workload][server.name].append(
                                run_wrk(server, payloads[server.name, workload][3], args.seconds)
                            )
                            done += 1
                            print(
                                f"  [{done}/{total}] {workload} {server.name}: "
                                f"{runs[workload][server.name][-1].rps:.0f} rps",
                                flush=True,
                            )
                    finally:
                        stop(server)
            table = {w: {name: median(rs) for name, rs in by.items()} for w, by in runs.items()}
            print()
            print(report(table, checks, args))
            if args.json:
                args.json.write_text(
                    json.dumps(
                        {w: {n: r.__dict__ for n, r in by.items()} for w, by in table.items()}, indent=2
                    )
                )
            return 0
        except KeyboardInterrupt:
            print("interrupted: stopping the servers", file=sys.stderr)
            return 130
        finally:
            for server in servers:
                stop(server)


if __name__ == "__main__":
    sys.exit(main())
