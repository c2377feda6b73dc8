"""``trainserve params get|set`` and a pinned ``TARGET_VARIANT`` that stops being live.

The proxy ignores a pin that is not live (it routes by the endpoint's weights: tests/lambdas/
test_proxy_handler.py), so ``params get`` must say so instead of showing the pin as fine. Runs against a moto
server with the proxy's Lambda function record and a live endpoint, as the local cloud has them; the
endpoint loses the pinned variant the way the release controller removes one (``UpdateEndpoint`` to a
config without it, after ``traffic rollback``, a rejection or a promote).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from registry_fixture import create_endpoint_config, create_live_endpoint

from trainserve.cli import cli
from trainserve.commands import options
from trainserve.local.api import ensure_proxy_function
from trainserve.target import Names, Target


@pytest.fixture
def target(monkeypatch, config, moto_url):
    """The local target on the module's moto server, with the proxy's function record and an endpoint whose
    variants v1 and v2 are live. ``params set`` waits for the local API to take a change: there is none
    here, so its request is answered at once (the handshake is tested with the real API in
    tests/local/test_api.py)."""
    from trainserve.local import api

    t = Target(
        mode="local",
        region="us-east-1",
        config=config,
        names=Names.local(config),
        aws_endpoint_url=moto_url,
        api_url="http://127.0.0.1:9",
    )
    monkeypatch.setattr(options, "resolve_target", lambda local: t)
    monkeypatch.setattr(api, "request_refresh", lambda state_dir, timeout: True)
    ensure_proxy_function(t.client("lambda"), t.client("iam"), config, t.names)
    create_live_endpoint(
        t.client("sagemaker"),
        t.names.model_package_group,
        t.names.endpoint_name,
        ["f0", "f1"],
        {"v1": 0.8, "v2": 0.2},
    )
    create_endpoint_config(t.client("sagemaker"), "ec-v1-only", {"v1": 1.0})
    return t


def _run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _said(output: str) -> str:
    return " ".join(output.split())


def _row(output: str, name: str) -> list[str]:
    """The cells of ``params get``'s table row for ``name`` (set to, in force, note)."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells and cells[0] == name:
            return cells[1:]
    raise AssertionError(f"no row {name} in:\n{output}")


def test_a_pin_that_stops_being_live_is_shown_as_a_problem(target):
    endpoint = target.names.endpoint_name
    code, out = _run("params", "set", "TARGET_VARIANT=v2", "--json")
    assert code == 0, out
    assert json.loads(out)["problems"] == []
    code, out = _run("params", "get", "--json")
    assert code == 0 and json.loads(out)["problems"] == []  # live: fine
    assert json.loads(out)["effective"]["target_variant"] == "v2"  # and in force
    code, out = _run("params", "get")
    assert code == 0 and _row(out, "TARGET_VARIANT")[:2] == ["'v2'", "v2"]

    target.client("sagemaker").update_endpoint(EndpointName=endpoint, EndpointConfigName="ec-v1-only")
    message = f"TARGET_VARIANT=v2 is not live on {endpoint} (live: v1): the proxy routes by the weights"
    code, out = _run("params", "get", "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["parameters"]["TARGET_VARIANT"] == "v2"  # as configured
    assert info["effective"]["target_variant"] is None  # what the proxy does: no pin, routed by the weights
    assert info["problems"] == [
        {
            "name": "TARGET_VARIANT",
            "value": "v2",
            "default": None,
            "reason": f"not live on {endpoint} (live: v1)",
            "message": message,
        }
    ]
    code, out = _run("params", "get")
    assert code == 0 and message in _said(out)
    assert _row(out, "TARGET_VARIANT")[:2] == ["'v2'", "(none)"]  # set to v2, no pin in force

    # another change shows it too; the pin itself can still only be set to a live variant
    code, out = _run("params", "set", "LOG_SAMPLE_RATE=0.5", "--json")
    assert code == 0 and [p["message"] for p in json.loads(out)["problems"]] == [message]
    assert json.loads(out)["effective"]["target_variant"] is None
    assert json.loads(out)["parameters"]["TARGET_VARIANT"] == "v2"
    code, out = _run("params", "set", "TARGET_VARIANT=v2")
    assert code == 1 and "TARGET_VARIANT=v2 is not a live variant" in _said(out)
    assert "nothing was changed" in _said(out)
    code, out = _run("params", "set", "TARGET_VARIANT=v1", "--json")
    assert code == 0 and json.loads(out)["problems"] == []
    assert json.loads(out)["effective"]["target_variant"] == "v1"

    # unpinned: nothing to check, and no endpoint call needed
    target.client("sagemaker").delete_endpoint(EndpointName=endpoint)
    code, out = _run("params", "set", "TARGET_VARIANT=", "--json")
    assert code == 0 and json.loads(out)["problems"] == []


def test_a_pin_on_an_endpoint_that_is_gone_is_shown_as_a_problem(target):
    endpoint = target.names.endpoint_name
    assert _run("params", "set", "TARGET_VARIANT=v1")[0] == 0
    target.client("sagemaker").delete_endpoint(EndpointName=endpoint)
    code, out = _run("params", "get", "--json")
    assert code == 0, out
    (problem,) = json.loads(out)["problems"]
    assert problem["name"] == "TARGET_VARIANT" and problem["value"] == "v1"
    assert problem["message"] == (
        f"TARGET_VARIANT=v1 is not live on {endpoint} (it does not exist yet): no model is served until it does"
    )
    assert json.loads(out)["effective"]["target_variant"] is None
    assert json.loads(out)["parameters"]["TARGET_VARIANT"] == "v1"


def test_a_pin_that_cannot_be_checked_stays_in_force_as_configured(target, monkeypatch):
    """When DescribeEndpoint fails (not a missing endpoint), whether the proxy honours the pin is unknown: the
    problem says so, and the effective value stays the configured one (the proxy honours a live pin)."""
    from botocore.exceptions import ClientError

    from trainserve.commands import params

    assert _run("params", "set", "TARGET_VARIANT=v2")[0] == 0

    def refused(target):
        raise ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "DescribeEndpoint"
        )

    monkeypatch.setattr(params, "live_variants", refused)
    code, out = _run("params", "get", "--json")
    assert code == 0, out
    info = json.loads(out)
    (problem,) = info["problems"]
    assert problem["message"].startswith("TARGET_VARIANT=v2: cannot check whether it is live on")
    assert info["effective"]["target_variant"] == "v2"


def test_an_invalid_value_is_shown_with_the_default_used(target):
    lam = target.client("lambda")
    function = target.names.proxy_function
    env = lam.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    lam.update_function_configuration(
        FunctionName=function, Environment={"Variables": {**env, "DECISION_THRESHOLD": "abc"}}
    )
    code, out = _run("params", "get", "--json")
    (problem,) = json.loads(out)["problems"]
    assert (problem["name"], problem["value"], problem["default"]) == ("DECISION_THRESHOLD", "abc", 0.5)
    assert (
        problem["message"]
        == "DECISION_THRESHOLD='abc' is invalid (expected a number between 0 and 1): the default 0.5 is used"
    )
    code, out = _run("params", "get")
    assert code == 0 and problem["message"] in _said(out)
