"""``trainserve local start|stop|status`` for real: a detached daemon in a temporary TRAINSERVE_HOME on free
ports (TRAINSERVE_PORT_BASE), always stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from trainserve.cli import cli
from trainserve.local.daemon import port_free
from trainserve.local.watcher import wait_until

# one worker runs this module (its tests share module fixtures) under `pytest -n 2 --dist loadgroup`
pytestmark = pytest.mark.xdist_group("test_local_cli")


def _free_base() -> int:
    """base, base+1 and base+2 free, below the ephemeral port range (``trainserve.local.ports``)."""
    from trainserve.local.ports import free_ports

    return free_ports(3)


def _run(*args: str):
    return CliRunner().invoke(cli, ["local", *args], catch_exceptions=False)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A TRAINSERVE_HOME and port base; whatever daemon a test started there is stopped afterwards."""
    path = tmp_path_factory.mktemp("trainserve-home")
    base = _free_base()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRAINSERVE_HOME", str(path))
        mp.setenv("TRAINSERVE_PORT_BASE", str(base))
        yield path, base
        state_file = path / "local.json"
        if state_file.exists():
            _kill(json.loads(state_file.read_text())["pid"])


def test_start_status_start_again_stop_stop_again(home):
    path, base = home
    started = _run("start")
    assert started.exit_code == 0, started.output + (started.stderr or "")
    state = json.loads((path / "local.json").read_text())
    assert state["aws_endpoint_url"] == f"http://127.0.0.1:{base}"
    assert f"http://127.0.0.1:{base + 1}" in started.output

    status = _run("status", "--json")
    assert status.exit_code == 0
    info = json.loads(status.stdout)
    assert info["running"] is True
    assert info["pid"] == state["pid"]
    assert info["aws_endpoint_url"] == f"http://127.0.0.1:{base}"
    assert info["runtime_url"] == f"http://127.0.0.1:{base + 1}"
    assert info["api_url"] == f"http://127.0.0.1:{base + 2}"
    assert info["warehouse_path"] == str(path / "warehouse.duckdb")
    assert info["region"] == "us-east-1"
    assert info["credentials"] == {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    assert info["environment"]["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{base}"
    assert {"runtime", "watcher"} <= set(info["components"])
    assert info["components"]["watcher"]["failures"] == 0

    text = _run("status")
    assert text.exit_code == 0
    assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{base}" in text.stdout
    assert "watcher" in text.stdout

    again = _run("start")
    assert again.exit_code == 0
    assert f"already running at http://127.0.0.1:{base}" in again.stdout

    stopped = _run("stop")
    assert stopped.exit_code == 0, stopped.output
    assert not (path / "local.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(state["pid"], 0)
    status = _run("status", "--json")
    assert status.exit_code == 1 and json.loads(status.stdout)["running"] is False

    stopped_again = _run("stop")
    assert stopped_again.exit_code == 0
    assert "not running" in stopped_again.stdout


def test_port_in_use_is_a_clear_error(home, tmp_path, monkeypatch):
    _, base = home
    monkeypatch.setenv("TRAINSERVE_HOME", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 1))
        busy.listen()
        result = _run("start")
    assert result.exit_code == 1
    assert f"port {base + 1} (runtime) is already in use" in result.stderr
    assert "TRAINSERVE_PORT_BASE" in result.stderr
    assert not (tmp_path / "local.json").exists()


def test_a_stale_state_file_reads_as_not_running_and_stop_cleans_it(home, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINSERVE_HOME", str(tmp_path))
    # a daemon that was killed: its pid no longer runs (above Linux's largest pid, 2**22), one of its
    # model servers still does
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "serve.py", "--model-dir", str(tmp_path)],
        start_new_session=True,
    )
    try:
        cmdline = Path(f"/proc/{orphan.pid}/cmdline")
        assert wait_until(lambda: b"serve.py" in cmdline.read_bytes(), 10)  # it has exec'd
        stale = {"pid": 2**22 + 1, "aws_endpoint_url": "http://127.0.0.1:1", "region": "us-east-1"}
        (tmp_path / "local.json").write_text(json.dumps(stale))
        servers = {"m": {"pid": orphan.pid, "alive": True}}
        (tmp_path / "status.json").write_text(
            json.dumps({"pid": stale["pid"], "components": {"runtime": {"model_servers": servers}}})
        )
        status = _run("status", "--json")
        assert status.exit_code == 1 and json.loads(status.stdout)["running"] is False
        result = _run("stop")
        assert result.exit_code == 0 and "not running" in result.stdout
        assert not (tmp_path / "local.json").exists() and not (tmp_path / "status.json").exists()
        assert orphan.wait(timeout=10) == -signal.SIGKILL
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_start_that_times_out_stops_the_daemon_and_shows_the_log(home, tmp_path, monkeypatch):
    _, base = home
    monkeypatch.setenv("TRAINSERVE_HOME", str(tmp_path))
    result = _run("start", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "did not come up within 0 s" in result.stderr
    assert "trainserve local start" in result.stderr  # the log's tail
    assert not (tmp_path / "local.json").exists()
    assert all(port_free(p) for p in (base, base + 1, base + 2))


def test_status_of_a_cloud_that_is_not_running_says_so_and_exits_1(tmp_path, monkeypatch):
    """`trainserve local status && ...` runs nothing when no local cloud runs: the same text and JSON as
    before, and exit code 1 (as any command that needs the local cloud when none runs)."""
    monkeypatch.setenv("TRAINSERVE_HOME", str(tmp_path))
    text = _run("status")
    assert text.exit_code == 1
    assert text.stdout == "the local cloud is not running; start it with: trainserve local start\n"
    as_json = _run("status", "--json")
    assert as_json.exit_code == 1
    info = json.loads(as_json.stdout)
    assert info["running"] is False and info["pid"] is None and info["environment"] == {}


def test_status_shows_each_component_and_breached_alarms(tmp_path, monkeypatch):
    """Rendering only: a local.json naming a live pid (this test's) and the daemon's status snapshot."""
    monkeypatch.setenv("TRAINSERVE_HOME", str(tmp_path))
    state = {
        "pid": os.getpid(),
        "region": "us-east-1",
        "aws_endpoint_url": "http://127.0.0.1:4566",
        "runtime_url": "http://127.0.0.1:4567",
        "api_url": "http://127.0.0.1:4568",
        "warehouse_path": str(tmp_path / "warehouse.duckdb"),
        "started_at": "2026-11-24T03:00:00+00:00",
        "log_file": str(tmp_path / "local.log"),
        "previous_warehouse_path": str(tmp_path / "warehouse-20261124T025959Z.duckdb"),
    }
    components = {
        "watcher": {"handled": 3, "failures": 1},
        "monitoring": {"runs": 2, "alarms": ["trainserve-drift-v2 (PSI 0.31 > 0.2)"]},
        "warehouse": {"error": "failed to start: OSError: disk full"},
    }
    (tmp_path / "local.json").write_text(json.dumps(state))
    (tmp_path / "status.json").write_text(json.dumps({"pid": os.getpid(), "components": components}))

    text = _run("status")
    assert text.exit_code == 0
    assert "watcher: handled=3, failures=1" in text.stdout
    assert "ALARM trainserve-drift-v2 (PSI 0.31 > 0.2)" in text.stdout
    assert "failed to start: OSError: disk full" in text.stdout
    # where the start set the previous cloud's warehouse aside, after its message has scrolled away
    assert "previous warehouse (set aside at start)" in text.stdout
    assert "warehouse-20261124T025959Z.duckdb" in text.stdout
    info = json.loads(_run("status", "--json").stdout)
    assert info["components"] == components
    assert info["previous_warehouse_path"] == state["previous_warehouse_path"]
    assert info["environment"]["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == "http://127.0.0.1:4567"


def test_status_summary_shows_small_values_whole_and_times_as_utc():
    from trainserve.commands.local import _summary

    line = _summary(
        {
            "requests": 12,
            "counts": {"requests": 12, "4xx": 1, "5xx": 0},
            "last_load": 1764957600.5,
            "variants": ["v1", "v2"],
            "model_servers": {"v1": {"pid": 1}, "v2": {"pid": 2}},
            "alarms": [{"name": "x"}],
        }
    )
    assert "counts={requests: 12, 4xx: 1, 5xx: 0}" in line
    assert "last_load=2025-12-05T18:00:00+00:00" in line
    assert "variants=\\[v1, v2]" in line  # escaped for the console's markup, printed as [v1, v2]
    assert "model_servers=2 entries (--json lists them)" in line and "alarms" not in line


def test_a_start_while_another_start_is_starting_waits_for_it_then_gives_up_clearly(tmp_path, monkeypatch):
    """Two `local start` at once would both start a daemon (and race to set the warehouse aside): the second
    waits for the first's lock, here held by this test, and says so; nothing is started."""
    import fcntl

    from trainserve.commands.local import START_LOCK

    monkeypatch.setenv("TRAINSERVE_HOME", str(tmp_path))
    monkeypatch.setenv("TRAINSERVE_PORT_BASE", str(_free_base()))
    with open(tmp_path / START_LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = CliRunner().invoke(cli, ["local", "start", "--timeout", "1"])
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert "waiting for another `trainserve local start` to finish" in said
    assert "another `trainserve local start` has been starting the local cloud in" in said
    assert "nothing was started" in said
    assert not (tmp_path / "local.json").exists() and not (tmp_path / "local.log").exists()
