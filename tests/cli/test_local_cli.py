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


def _lines(output: str) -> dict[str, str]:
    """``local stop``'s report: what (warehouse, model registry, endpoint, proxy parameters, the rest of moto)
    -> what it says, each whole on one line; and ``kept``/``lost``: the headings' text."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith(("kept", "lost")):
            out[line.split(":")[0].split(" (")[0]] = line
        elif line.startswith("  ") and line.strip() and not line.startswith("   "):
            what, _, said = line.strip().partition("   ")
            out[what] = said.strip()
    return out


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


def test_start_status_start_again_stop_stop_again(home, config):
    path, base = home
    started = _run("start", "--json")
    assert started.exit_code == 0, started.output + (started.stderr or "")
    state = json.loads((path / "local.json").read_text())
    assert state["aws_endpoint_url"] == f"http://127.0.0.1:{base}"
    said = json.loads(started.stdout)  # `local status --json`'s document, and whether it already ran
    assert said["already_running"] is False and said["running"] is True and said["pid"] == state["pid"]
    assert said["runtime_url"] == f"http://127.0.0.1:{base + 1}"
    assert said["api_url"] == f"http://127.0.0.1:{base + 2}"

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
    again = _run("start", "--json")
    assert again.exit_code == 0
    said = json.loads(again.stdout)
    assert said["already_running"] is True and said["pid"] == state["pid"]

    changed = CliRunner().invoke(cli, ["params", "set", "DECISION_THRESHOLD=0.6"])
    assert changed.exit_code == 0, changed.output
    stopped = _run("stop")
    assert stopped.exit_code == 0, stopped.output
    # what the stop kept and what it lost (moto's state), asked of the cloud before it stopped
    said = _lines(stopped.stdout)
    assert said["warehouse"] == str(path / "warehouse.duckdb")
    assert said["model registry"] == f"0 model versions in {config.model_package_group_name}"
    assert said["endpoint"] == "none"
    assert said["proxy parameters"] == (
        "DECISION_THRESHOLD=0.6 (default 0.5): the next start has the defaults again"
    )
    assert not (path / "local.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(state["pid"], 0)
    status = _run("status", "--json")
    assert status.exit_code == 1 and json.loads(status.stdout)["running"] is False

    stopped_again = _run("stop")
    assert stopped_again.exit_code == 0
    assert "not running" in stopped_again.stdout
    stopped_again = _run("stop", "--json")
    assert stopped_again.exit_code == 0
    assert json.loads(stopped_again.stdout) == {
        "stopped": False,
        "pid": None,
        "killed": False,
        "kept": None,
        "lost": None,
    }


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


@pytest.fixture
def fake_daemon(tmp_path, monkeypatch):
    """A local.json naming a process of this test as the daemon (SIGTERM ends it), with ``aws_endpoint_url``
    set by the test: yields (the state, a function writing it)."""
    monkeypatch.setenv("TRAINSERVE_HOME", str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    state = {
        "pid": proc.pid,
        "region": "us-east-1",
        "warehouse_path": str(tmp_path / "warehouse.duckdb"),
    }

    def write(aws_endpoint_url: str) -> None:
        (tmp_path / "local.json").write_text(json.dumps({**state, "aws_endpoint_url": aws_endpoint_url}))

    try:
        yield state, write
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_stop_says_what_is_kept_and_what_is_lost(fake_daemon, moto_url, config):
    """moto keeps the registry, the endpoint and the proxy's parameters in memory: the stop counts the model
    versions, names the endpoint and the parameters that differ from the defaults a start sets (asked of the
    running cloud before it stops), and says where the warehouse it keeps is."""
    import boto3
    from registry_fixture import create_live_endpoint

    from trainserve.local.api import ensure_proxy_function
    from trainserve.target import Names

    state, write = fake_daemon
    names = Names.local(config)
    clients = {
        service: boto3.client(
            service,
            region_name="us-east-1",
            endpoint_url=moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for service in ("sagemaker", "lambda", "iam")
    }
    create_live_endpoint(
        clients["sagemaker"], names.model_package_group, names.endpoint_name, ["f0"], {"v1": 0.9, "v2": 0.1}
    )
    env = ensure_proxy_function(clients["lambda"], clients["iam"], config, names)
    clients["lambda"].update_function_configuration(
        FunctionName=names.proxy_function,
        Environment={"Variables": {**env, "DECISION_THRESHOLD": "0.6", "TARGET_VARIANT": "v2"}},
    )
    write(moto_url)

    result = _run("stop")
    assert result.exit_code == 0, result.output
    with pytest.raises(ProcessLookupError):
        os.kill(state["pid"], 0)
    said = _lines(result.stdout)
    assert said["kept"] == "kept:"
    assert said["warehouse"] == state["warehouse_path"]
    assert "sets it aside as warehouse-<UTC time>.duckdb" in " ".join(result.stdout.split())
    assert said["lost"].startswith("lost (moto, the local AWS control plane, keeps them in memory)")
    assert said["model registry"] == (
        f"2 model versions in {names.model_package_group} "
        "(the next start begins again at version 1: train and approve again)"
    )
    assert said["endpoint"] == f"{names.endpoint_name} (variants: v1, v2)"
    default = config.decision_threshold
    assert said["proxy parameters"] == (
        f"TARGET_VARIANT=v2 (default unset), DECISION_THRESHOLD=0.6 (default {default}): "
        "the next start has the defaults again"
    )
    assert said["the rest of moto"].startswith("S3 objects (uploaded data, model artifacts)")


def test_stop_json_says_what_is_kept_and_what_is_lost(fake_daemon, moto_url, config):
    import boto3
    import requests
    from registry_fixture import create_live_endpoint

    from trainserve.target import Names

    state, write = fake_daemon
    names = Names.local(config)
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()  # the module shares moto
    sm = boto3.client(
        "sagemaker",
        region_name="us-east-1",
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    create_live_endpoint(sm, names.model_package_group, names.endpoint_name, ["f0"], {"v1": 1.0})
    write(moto_url)

    result = _run("stop", "--json")
    assert result.exit_code == 0, result.output
    with pytest.raises(ProcessLookupError):
        os.kill(state["pid"], 0)
    said = json.loads(result.stdout)
    assert said["stopped"] is True and said["pid"] == state["pid"] and said["killed"] is False
    assert said["kept"] == {"warehouse_path": state["warehouse_path"]}
    lost = said["lost"]
    assert lost["model_versions"] == 1 and lost["model_package_group"] == names.model_package_group
    assert lost["endpoint"] == {"name": names.endpoint_name, "variants": ["v1"]}
    assert set(lost) == {"model_versions", "model_package_group", "endpoint", "params_changed", "error"}


def test_stop_of_a_cloud_whose_moto_does_not_answer_is_not_held_up(fake_daemon):
    """What the stop loses cannot be asked of a moto that does not answer (here a port that accepts and never
    replies): the stop still happens, at most about SURVEY_TIMEOUT later, and says it does not know."""
    from trainserve.commands.local import SURVEY_TIMEOUT

    state, write = fake_daemon
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        write(f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        result = _run("stop")
        took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert took < SURVEY_TIMEOUT + 3, took
    said = _lines(result.stdout)
    assert said["warehouse"] == state["warehouse_path"]
    for what in ("model registry", "endpoint", "proxy parameters"):
        assert said[what].startswith("unknown (") and "timeout" in said[what].lower(), said[what]


def test_stop_json_of_a_cloud_whose_moto_does_not_answer_has_nulls_and_the_error(fake_daemon):
    state, write = fake_daemon
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        write(f"http://127.0.0.1:{silent.getsockname()[1]}")
        result = _run("stop", "--json")
    assert result.exit_code == 0, result.output
    lost = json.loads(result.stdout)["lost"]
    assert lost["model_versions"] is None and lost["endpoint"] is None and lost["params_changed"] is None
    assert "timeout" in lost["error"].lower()


def test_stop_help_says_what_is_kept_and_what_is_lost():
    said = " ".join(_run("stop", "--help").stdout.split())
    assert "Kept: the warehouse (warehouse.duckdb in the state folder" in said
    assert "sets it aside as warehouse-<UTC time>.duckdb" in said
    for lost in (
        "the model registry",
        "the endpoint",
        "the proxy parameters changed with `trainserve params set`",
    ):
        assert lost in said
    listed = " ".join(_run("--help").stdout.split())
    assert "keeps the warehouse, loses registry, endpoint, params" in listed


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
    assert info["warehouse_path"] is None  # no warehouse was ever made here
    (tmp_path / "warehouse.duckdb").write_bytes(b"")  # the one a stop kept: still queryable, so named
    assert json.loads(_run("status", "--json").stdout)["warehouse_path"] == str(tmp_path / "warehouse.duckdb")


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
