"""The configuration object: defaults, -c style overrides, and clear errors naming the bad key."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stacks import config as config_module
from stacks.config import FIELDS, Config, ConfigError, guardrail_deployment_seconds, load, read_context


def test_cdk_json_configuration_is_valid(project_root):
    cfg = load(project_root)
    assert cfg.project_name == "trainserve"
    assert cfg.model_package_group_name == "trainserve-models"
    assert cfg.endpoint_name == "trainserve-endpoint"


def test_defaults_fill_missing_keys():
    cfg = Config.from_mapping({})
    assert cfg.as_dict() == {
        f.name: (float(f.default) if f.kind == (int, float) else f.default) for f in FIELDS
    }


def test_config_is_frozen():
    cfg = Config.from_mapping({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.quality_threshold = 0.1  # type: ignore[misc]


def test_every_field_is_documented_and_its_default_valid():
    names = [f.name for f in FIELDS]
    assert len(names) == len(set(names))
    assert set(names) == {f.name for f in dataclasses.fields(Config)}
    for f in FIELDS:
        assert f.doc and f.allowed, f.name
        Config.from_mapping({f.name: f.default})


@pytest.mark.parametrize(
    ("values", "key", "allowed"),
    [
        ({"quality_threshold": 1.5}, "quality_threshold", "0..1"),
        ({"quality_threshold": -0.1}, "quality_threshold", "0..1"),
        ({"quality_threshold": "high"}, "quality_threshold", "0..1"),
        ({"training_instance_type": "ml.p99.huge"}, "training_instance_type", "ml.m5.large"),
        ({"serving_instance_type": "m5.large"}, "serving_instance_type", "ml.m5.large"),
        ({"max_live_variants": 11}, "max_live_variants", "1..10"),
        ({"max_live_variants": 2.5}, "max_live_variants", "integer"),
        ({"challenger_weight": 1}, "challenger_weight", "strictly between 0 and 1"),
        ({"data_capture_enabled": "yes"}, "data_capture_enabled", "true | false"),
        ({"sticky_assignment": 1}, "sticky_assignment", "true | false"),
        ({"environment": "staging"}, "environment", "dev | prod"),
        ({"project_name": "Bad_Name"}, "project_name", "lowercase"),
        ({"alarm_email": "nobody"}, "alarm_email", "e-mail"),
        ({"training_schedule": "every day"}, "training_schedule", "rate("),
        ({"training_schedule": "rate(0 minutes)"}, "training_schedule", "N >= 1"),
        ({"training_schedule": "cron(garbage)"}, "training_schedule", "6 fields"),
        ({"training_schedule": "cron(0 3 * * ?)"}, "training_schedule", "6 fields"),
        ({"warehouse_base_capacity": 12}, "warehouse_base_capacity", "multiple of 8"),
        ({"log_retention_days": 10}, "log_retention_days", "30"),
        ({"max_live_variants": True}, "max_live_variants", "1..10"),
        ({"drift_min_predictions": 0}, "drift_min_predictions", "an integer in 1..1000000"),
        ({"drift_min_predictions": 1_000_001}, "drift_min_predictions", "an integer in 1..1000000"),
        ({"drift_min_predictions": 150.5}, "drift_min_predictions", "integer"),
        ({"drift_min_predictions": "many"}, "drift_min_predictions", "1..1000000"),
        ({"feature_psi_threshold": -0.1}, "feature_psi_threshold", "a number in 0..10"),
        ({"feature_psi_threshold": 11}, "feature_psi_threshold", "a number in 0..10"),
    ],
)
def test_bad_values_name_the_key_and_allowed_values(values, key, allowed):
    with pytest.raises(ConfigError) as err:
        Config.from_mapping(values)
    assert f"'{key}'" in str(err.value)
    assert allowed in str(err.value)


def test_unknown_key_is_rejected_with_the_list_of_keys():
    with pytest.raises(ConfigError) as err:
        Config.from_mapping({"quality_treshold": 0.5})
    assert "quality_treshold" in str(err.value)
    assert "quality_threshold" in str(err.value)  # the allowed keys are listed


def test_string_overrides_from_the_cdk_command_line_are_parsed():
    cfg = Config.from_mapping(
        {
            "quality_threshold": "0.8",
            "max_live_variants": "3",
            "data_capture_enabled": "true",
            "alarm_email": "null",
        }
    )
    assert cfg.quality_threshold == 0.8
    assert cfg.max_live_variants == 3
    assert cfg.data_capture_enabled is True
    assert cfg.alarm_email is None


def test_burst_below_rate_is_rejected():
    with pytest.raises(ConfigError, match="api_throttle_burst"):
        Config.from_mapping({"api_throttle_rate": 500, "api_throttle_burst": 100})


def test_overrides_apply_on_top_of_cdk_json(tmp_path):
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(
        json.dumps({"context": {"trainserve": {"quality_threshold": 0.7, "estimator": "random_forest"}}})
    )
    block = read_context(cdk_json, {"quality_threshold": 0.95})
    cfg = Config.from_mapping(block)
    assert cfg.quality_threshold == 0.95
    assert cfg.estimator == "random_forest"


def test_every_routing_and_guardrail_wait_fits_sagemakers_deployment_limit():
    for routing in ("ALL_AT_ONCE", "CANARY", "LINEAR"):
        cfg = Config.from_mapping({"traffic_routing": routing, "guardrail_wait_seconds": 3600})
        assert guardrail_deployment_seconds(cfg.traffic_routing, cfg.guardrail_wait_seconds) <= 28800


def test_a_routing_and_wait_over_sagemakers_deployment_limit_fail_naming_both_keys(monkeypatch):
    """With 10% linear steps (SageMaker allows 10..50%) an hour's wait would not fit in 28800 s."""
    monkeypatch.setitem(config_module.GUARDRAIL_TRAFFIC_SHIFTS, "LINEAR", 10)
    with pytest.raises(ConfigError) as err:
        Config.from_mapping({"traffic_routing": "LINEAR", "guardrail_wait_seconds": "3600"})
    message = str(err.value)
    assert "'traffic_routing' (LINEAR) and 'guardrail_wait_seconds' (3600) do not fit together" in message
    assert "would wait 39600 s" in message and "28800 s" in message
    assert "guardrail_wait_seconds at most 2454 with traffic_routing LINEAR" in message
    Config.from_mapping({"traffic_routing": "LINEAR", "guardrail_wait_seconds": 2454})
    Config.from_mapping({"traffic_routing": "CANARY", "guardrail_wait_seconds": 3600})


def test_the_synth_check_uses_the_release_controllers_numbers():
    """stacks/ cannot import lambdas/: the config repeats the controller's blue/green numbers."""
    import release_planner

    assert config_module.GUARDRAIL_TRAFFIC_SHIFTS == release_planner.TRAFFIC_SHIFTS
    assert config_module.GUARDRAIL_NEW_FLEET_SECONDS == release_planner.DEPLOYMENT_MARGIN_SECONDS
    assert config_module.SAGEMAKER_MAX_DEPLOYMENT_SECONDS == release_planner.DEPLOYMENT_TIMEOUT_MAX_SECONDS
    for routing in release_planner.TRAFFIC_SHIFTS:
        for wait in (0, 1, 300, 3600):
            expected = release_planner.deployment_timeout_seconds(routing, wait)
            assert guardrail_deployment_seconds(routing, wait) == expected


def test_drift_settings_default_and_parse_from_the_command_line():
    cfg = Config.from_mapping({})
    assert cfg.drift_min_predictions == 200 and cfg.feature_psi_threshold == 1.0
    cfg = Config.from_mapping({"drift_min_predictions": "50", "feature_psi_threshold": "0.5"})
    assert cfg.drift_min_predictions == 50 and cfg.feature_psi_threshold == 0.5
