"""``trainserve local start|stop|status``: the local cloud (emulated AWS + SageMaker runtime + warehouse).

``start`` spawns ``python -m trainserve.local.daemon`` detached (output in ``.trainserve/local.log``) and
waits until it has written ``local.json``; ``stop`` sends SIGTERM (SIGKILL after a timeout) and says what the
stop keeps (the warehouse file) and what it loses: moto keeps the control plane in memory, so the model
registry, the endpoint and the proxy's parameters end with it (``what_stop_loses`` asks the running cloud
first, with short timeouts); ``status`` says what runs where, the environment to point other tools at it, and
each component's state (exit code 1 when nothing runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from trainserve import PROJECT_ROOT
from trainserve.console import UserError, aws_error, console, err_console, print_json, step, table
from trainserve.local.daemon import (
    EXIT_PORT_IN_USE,
    LOG_FILE,
    STATUS_FILE,
    PortInUse,
    default_ports,
    port_free,
)
from trainserve.target import (
    LOCAL_ACCESS_KEY,
    LOCAL_REGION,
    LOCAL_SECRET_KEY,
    local_state_file,
    pid_alive,
    read_local_state,
    state_dir,
)

START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0  # the API drains (at most 10 s), then the warehouse loads what it answered (at most 30 s)
# each question `stop` asks the running cloud's moto before it stops (what the stop loses); after one that
# fails, the others are not asked, so a cloud that does not answer delays its stop by at most this
SURVEY_TIMEOUT = 1.0
START_LOCK = ".start.lock"  # in the state folder: held by the `local start` that is starting the cloud
# `local status` when no local cloud runs (after printing that): 1, as every command that needs the local
# cloud exits when none runs (TargetError), so `trainserve local status && ...` runs nothing then
EXIT_NOT_RUNNING = 1


@click.group("local")
def local() -> None:
    """The local cloud: moto as AWS, a SageMaker runtime, the approval watcher, the API and the warehouse."""


@local.command("start")
@click.option(
    "--timeout", type=float, default=START_TIMEOUT, show_default=True, help="Seconds to wait for it."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print `local status --json`'s document (and already_running)."
)
def start(timeout: float, as_json: bool) -> None:
    """Start the local cloud in the background (ports 4566-4568, or TRAINSERVE_PORT_BASE..+2)."""
    home = state_dir()
    home.mkdir(parents=True, exist_ok=True)
    with _start_lock(home, timeout):
        state, already = _start(home, timeout, quiet=as_json)
    if as_json:
        print_json({**status_info(state), "already_running": already})


@contextlib.contextmanager
def _start_lock(home: Path, timeout: float) -> Any:
    """One ``local start`` at a time per state folder: a second one waits for the first to finish (then finds
    the cloud running), instead of racing it to start a second daemon."""
    from trainserve.local.component import exclusive

    def waiting() -> None:
        err_console.print("waiting for another `trainserve local start` to finish ...")

    with exclusive(home / START_LOCK, time.monotonic() + timeout, poll=0.2, on_wait=waiting) as held:
        if not held:
            raise UserError(
                f"another `trainserve local start` has been starting the local cloud in {home} for "
                f"{timeout:.0f} s; nothing was started"
            )
        yield


def _start(home: Path, timeout: float, quiet: bool = False) -> tuple[dict[str, Any], bool]:
    """Start the daemon and wait for its ``local.json``: (that state, whether it was already running). It
    prints where everything runs unless ``quiet`` (``--json``)."""
    state = read_local_state()
    if state is not None:
        if not quiet:
            console.print(
                f"the local cloud is already running at {state['aws_endpoint_url']} (pid {state['pid']})"
            )
        return state, True
    _remove_stale_state()
    try:
        ports = default_ports()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for role, port in ports.items():
        if not port_free(port):
            raise UserError(str(PortInUse(role, port)))

    log_file = home / LOG_FILE
    with open(log_file, "ab") as log:
        log.write(f"\n--- trainserve local start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainserve.local.daemon"],
            cwd=str(PROJECT_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the terminal; `local stop` ends it
            env={**os.environ, "TRAINSERVE_HOME": str(home), "PYTHONUNBUFFERED": "1"},
        )
    state = None
    with step(f"starting the local cloud (log: {log_file})"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                tail = _tail(log_file)
                if code == EXIT_PORT_IN_USE:
                    raise UserError(_port_message(tail) or f"a port is in use; see {log_file}")
                raise UserError(
                    f"the local cloud exited with code {code} while starting; last lines of {log_file}:\n{tail}"
                )
            state = read_local_state()
            if state is not None and state.get("pid") == proc.pid:
                break
            time.sleep(0.2)
        else:
            _terminate(proc.pid, STOP_TIMEOUT)
            raise UserError(
                f"the local cloud did not come up within {timeout:.0f} s; last lines of {log_file}:\n{_tail(log_file)}"
            )
    assert state is not None  # the loop ended with it (a timeout raised above)
    if not quiet:
        _print_where(state)
    return state, False


@local.command(
    "stop", short_help="Stop the local cloud: keeps the warehouse, loses registry, endpoint, params."
)
@click.option(
    "--timeout", type=float, default=STOP_TIMEOUT, show_default=True, help="Seconds before SIGKILL."
)
@click.option("--json", "as_json", is_flag=True, help="Print what was kept and lost as JSON.")
def stop(timeout: float, as_json: bool) -> None:
    """Stop the local cloud (its model servers too), and say what is kept and what is lost.

    Kept: the warehouse (warehouse.duckdb in the state folder, .trainserve or TRAINSERVE_HOME), with what the
    prediction API answered up to the stop. The next `trainserve local start` sets it aside as
    warehouse-<UTC time>.duckdb beside it (still queryable, never deleted) if it holds any prediction or
    outcome, and starts an empty one.

    Lost: moto, the local AWS control plane, keeps its state in memory, so the model registry (the next start
    begins again at model version 1: train and approve again), the endpoint, the proxy parameters changed
    with `trainserve params set` (the next start has the configured defaults, cdk.json, again), S3 objects (uploaded
    data, model artifacts) and CloudWatch metrics and alarm states end with the local cloud. The output
    counts the model versions, names the endpoint and the parameters that differ from the defaults.

    --json: {"stopped", "pid", "killed", "kept": {"warehouse_path"}, "lost": {"model_versions",
    "model_package_group", "endpoint": {"name", "variants"} or null, "params_changed": {NAME: {"value",
    "default"}}, "error"}}; a value the stop could not ask the cloud for is null, and "error" says why.
    """
    raw = _raw_state()
    pid = raw.get("pid") if raw else None
    if not isinstance(pid, int) or not _alive(pid):
        _remove_stale_state()
        if as_json:
            print_json({"stopped": False, "pid": None, "killed": False, "kept": None, "lost": None})
        else:
            console.print("the local cloud is not running")
        return
    state: dict[str, Any] = raw or {}
    with step(f"stopping the local cloud (pid {pid})"):
        lost = what_stop_loses(state)
        killed = _terminate(pid, timeout)
        if killed:
            _kill_model_servers()
        _remove_stale_state(force=True)
    if killed:
        err_console.print(f"[yellow]the local cloud did not stop within {timeout:.0f} s and was killed[/]")
    if as_json:
        print_json(
            {
                "stopped": True,
                "pid": pid,
                "killed": killed,
                "kept": {"warehouse_path": _kept_warehouse(state)},
                "lost": {
                    "model_versions": lost.get("model_versions"),
                    "model_package_group": lost.get("model_package_group"),
                    "endpoint": lost.get("endpoint"),
                    "params_changed": lost.get("params_changed"),
                    "error": lost.get("error"),
                },
            }
        )
        return
    _print_kept_and_lost(state, lost)


@local.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status(as_json: bool) -> None:
    """What runs where: URLs, the environment to use, each component's state (and breached alarms).

    Exits 1 when the local cloud is not running (after saying so, or printing ``"running": false``)."""
    state = read_local_state()
    info = status_info(state)
    if as_json:
        print_json(info)
        if not info["running"]:
            sys.exit(EXIT_NOT_RUNNING)
        return
    if not info["running"]:
        console.print("the local cloud is not running; start it with: trainserve local start")
        sys.exit(EXIT_NOT_RUNNING)
    table(
        f"local cloud (pid {info['pid']}, since {info['started_at']})",
        ["what", "where"],
        [
            ["AWS (moto)", info["aws_endpoint_url"]],
            ["SageMaker runtime", info["runtime_url"]],
            ["prediction API", info["api_url"]],
            ["warehouse (DuckDB)", info["warehouse_path"]],
            *(
                [["previous warehouse (set aside at start)", info["previous_warehouse_path"]]]
                if info["previous_warehouse_path"]
                else []
            ),
            ["region", info["region"]],
            ["log", info["log_file"]],
        ],
    )
    console.print("point AWS tools at it with:")
    for key, value in info["environment"].items():
        console.print(f"  export {key}={value}")
    for name, comp in info["components"].items():
        console.print(f"[bold]{name}[/]: {_summary(comp)}")
        for alarm in comp.get("alarms") or []:
            label = alarm if isinstance(alarm, str) else json.dumps(alarm, default=str)
            console.print(f"  [bold red]ALARM[/] {label}")


def status_info(state: dict[str, Any] | None) -> dict[str, Any]:
    """The ``status --json`` document."""
    credentials = {"aws_access_key_id": LOCAL_ACCESS_KEY, "aws_secret_access_key": LOCAL_SECRET_KEY}
    if state is None:
        kept = state_dir() / "warehouse.duckdb"  # what the last stop kept, if any: still queryable
        return {
            "running": False,
            "pid": None,
            "aws_endpoint_url": None,
            "runtime_url": None,
            "api_url": None,
            "warehouse_path": str(kept) if kept.is_file() else None,
            "previous_warehouse_path": None,
            "region": LOCAL_REGION,
            "credentials": credentials,
            "environment": {},
            "components": {},
        }
    components: dict[str, Any] = {}
    snapshot = _read_json(state_dir() / STATUS_FILE)
    if snapshot and snapshot.get("pid") == state.get("pid"):
        components = snapshot.get("components", {})
    region = state.get("region", LOCAL_REGION)
    return {
        "running": True,
        "pid": state.get("pid"),
        "aws_endpoint_url": state.get("aws_endpoint_url"),
        "runtime_url": state.get("runtime_url"),
        "api_url": state.get("api_url"),
        "warehouse_path": state.get("warehouse_path"),
        "previous_warehouse_path": state.get("previous_warehouse_path"),
        "region": region,
        "started_at": state.get("started_at"),
        "log_file": state.get("log_file"),
        "credentials": credentials,
        "environment": {
            "AWS_ENDPOINT_URL": state.get("aws_endpoint_url"),
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": state.get("runtime_url"),
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_DEFAULT_REGION": region,
        },
        "status_updated_at": snapshot.get("updated_at") if snapshot else None,
        "components": components,
    }


def what_stop_loses(state: dict[str, Any]) -> dict[str, Any]:
    """What the running local cloud (``state``: its ``local.json``) holds in moto, which its stop loses,
    asked of its moto: ``model_versions`` (the registry's versions in ``model_package_group``),
    ``endpoint`` (``{"name", "variants"}``, None when there is none) and ``params_changed`` (the proxy's
    parameters whose value differs from the defaults a start sets: ``{NAME: {"value", "default"}}``).
    A value that could not be asked is missing, and ``error`` says why: each question waits at most
    ``SURVEY_TIMEOUT`` s, and after one that fails the others are not asked (the stop goes on)."""
    from botocore.exceptions import BotoCoreError, ClientError

    out: dict[str, Any] = {}
    url = state.get("aws_endpoint_url")
    if not url:
        return {"error": "local.json names no AWS endpoint"}
    try:
        import boto3
        import proxy_logic
        from botocore.config import Config as BotoConfig

        from stacks.config import load as load_config
        from trainserve.local.api import proxy_environment
        from trainserve.registry import list_model_packages
        from trainserve.target import Names

        cfg = load_config(PROJECT_ROOT)
        names = Names.local(cfg)
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
            region_name=state.get("region", LOCAL_REGION),
        )
        quick = BotoConfig(
            connect_timeout=SURVEY_TIMEOUT, read_timeout=SURVEY_TIMEOUT, retries={"total_max_attempts": 1}
        )
        sm = session.client("sagemaker", endpoint_url=url, config=quick)

        out["model_versions"] = len(list_model_packages(sm, names.model_package_group))
        out["model_package_group"] = names.model_package_group

        try:
            desc = sm.describe_endpoint(EndpointName=names.endpoint_name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("ValidationException", "ResourceNotFound"):
                raise
            out["endpoint"] = None
        else:
            variants = sorted(v["VariantName"] for v in desc.get("ProductionVariants", []))
            out["endpoint"] = {"name": names.endpoint_name, "variants": variants}

        lam = session.client("lambda", endpoint_url=url, config=quick)
        conf = lam.get_function_configuration(FunctionName=names.proxy_function)
        now = proxy_logic.parse_params(conf.get("Environment", {}).get("Variables", {}))[0].as_dict()
        default = proxy_logic.parse_params(proxy_environment(cfg, names))[0].as_dict()
        out["params_changed"] = {
            name: {"value": now[field], "default": default[field]}
            for name, (field, _) in proxy_logic.PARAMS.items()
            if now[field] != default[field]
        }
    except (BotoCoreError, ClientError) as exc:
        out["error"] = aws_error(exc)
    except Exception as exc:  # noqa: BLE001 - never in the way of the stop: say it could not be asked
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _kept_warehouse(state: dict[str, Any]) -> str:
    """The warehouse file a stop keeps."""
    return str(state.get("warehouse_path") or state_dir() / "warehouse.duckdb")


def _print_kept_and_lost(state: dict[str, Any], lost: dict[str, Any]) -> None:
    from rich.markup import escape

    warehouse = _kept_warehouse(state)
    unknown = f"unknown ({lost.get('error') or 'not asked'})"
    versions = lost.get("model_versions")
    if versions is None:
        registry = unknown
    else:
        registry = (
            f"{versions} model version{'' if versions == 1 else 's'} in {lost['model_package_group']}"
            + (" (the next start begins again at version 1: train and approve again)" if versions else "")
        )
    if "endpoint" not in lost:
        endpoint = unknown
    elif lost["endpoint"] is None:
        endpoint = "none"
    else:
        endpoint = (
            f"{lost['endpoint']['name']} (variants: {', '.join(lost['endpoint']['variants']) or 'none'})"
        )
    changed = lost.get("params_changed")
    if changed is None:
        params = unknown
    elif not changed:
        params = "the defaults (nothing changed)"
    else:
        shown = ", ".join(
            f"{name}={_param(c['value'])} (default {_param(c['default'])})" for name, c in changed.items()
        )
        params = f"{shown}: the next start has the defaults again"
    lines = [
        "stopped the local cloud.",
        "kept:",
        f"  warehouse          {warehouse}",
        "                     (the next `trainserve local start` sets it aside as warehouse-<UTC time>.duckdb",
        "                     beside it if it holds any prediction or outcome, and starts an empty one)",
        "lost (moto, the local AWS control plane, keeps them in memory):",
        f"  model registry     {registry}",
        f"  endpoint           {endpoint}",
        f"  proxy parameters   {params}",
        "  the rest of moto   S3 objects (uploaded data, model artifacts), CloudWatch metrics and alarm states",
    ]
    for line in lines:
        console.print(escape(line), soft_wrap=True)


def _param(value: Any) -> str:
    """A proxy parameter's value as ``params set`` takes it (true/false, a number, a name; unset: no pin)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "unset" if value is None else str(value)


# --- helpers ----------------------------------------------------------------------------------------------


def _print_where(state: dict[str, Any]) -> None:
    console.print(f"local cloud running (pid {state['pid']})")
    console.print(f"  AWS (moto)         {state['aws_endpoint_url']}")
    console.print(f"  SageMaker runtime  {state['runtime_url']}")
    console.print(f"  prediction API     {state['api_url']}")
    console.print(f"  warehouse          {state['warehouse_path']}")
    if state.get("previous_warehouse_path"):
        console.print(
            f"  (the previous local cloud's warehouse is kept as {state['previous_warehouse_path']}: moto's "
            "registry starts empty again, and its predictions name the old model versions)"
        )
    console.print("`trainserve local status` shows the environment to use and each component's state")


def _shown(key: str, value: Any) -> Any:
    """A status value for the one-line summary: times as UTC, small flat mappings and lists whole, larger
    ones counted (``--json`` has everything)."""
    if isinstance(value, float) and value > 1e9 and (key.startswith("last") or key.endswith("_at")):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")  # a time.time() value
    if isinstance(value, dict):
        if len(value) <= 8 and not any(isinstance(v, dict | list) for v in value.values()):
            return "{" + ", ".join(f"{k}: {_shown(str(k), v)}" for k, v in value.items()) + "}"
        return f"{len(value)} entries (--json lists them)"
    if isinstance(value, list):
        if len(value) <= 5 and not any(isinstance(v, dict | list) for v in value):
            return "[" + ", ".join(str(v) for v in value) + "]"
        return f"{len(value)} entries (--json lists them)"
    return value


def _summary(component: dict[str, Any]) -> str:
    if "error" in component:
        return f"[red]{component['error']}[/]"
    from rich.markup import escape

    parts = [f"{key}={_shown(key, value)}" for key, value in component.items() if key != "alarms"]
    return escape(", ".join(parts)) or "running"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _raw_state() -> dict[str, Any] | None:
    return _read_json(local_state_file())


def _remove_stale_state(force: bool = False) -> None:
    """Remove local.json / status.json left by a daemon that no longer runs."""
    raw = _raw_state()
    pid = raw.get("pid") if raw else None
    if force or not (isinstance(pid, int) and _alive(pid)):
        if not force:
            _kill_model_servers()  # a daemon that died without stopping left its model servers behind
        for path in (local_state_file(), state_dir() / STATUS_FILE):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it when this process started it
        if done == pid:
            return False
    return pid_alive(pid)


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns True when it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return False
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)
    return True


def _kill_model_servers() -> None:
    """After a SIGKILL the daemon could not stop its model servers: stop those its last status lists."""
    snapshot = _read_json(state_dir() / STATUS_FILE) or {}
    servers = snapshot.get("components", {}).get("runtime", {}).get("model_servers", {})
    for server in servers.values():
        pid = server.get("pid")
        if isinstance(pid, int) and _is_model_server(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _is_model_server(pid: int) -> bool:
    """Only a process that still is a model server (pids get reused) is killed."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"serve.py") for arg in cmdline) and b"--model-dir" in cmdline


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_message(tail: str) -> str | None:
    for line in reversed(tail.splitlines()):
        if line.startswith("error: port"):
            return line.removeprefix("error: ")
    return None
