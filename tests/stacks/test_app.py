"""The whole app: offline synth, stack names, cdk-nag AwsSolutions and cfn-lint on every stack, config errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cfn_helpers import PROJECT_ROOT, as_list, cdk_context, offline_env, policy_statements
from cfnlint.api import ManualArgs, lint

from stacks.config import ConfigError

pytestmark = pytest.mark.xdist_group("synth")

EXPECTED_SUFFIXES = ["Data", "Training", "Warehouse", "Serving", "Monitoring"]
EXPECTED_OUTPUTS = {
    "Data": {"DataBucket", "ArtifactsBucket", "StagingBucket"},
    "Training": {"PipelineName", "ModelPackageGroup", "ModelExecutionRoleArn"},
    "Serving": {
        "EndpointName",
        "ReleaseFunction",
        "ProxyFunction",
        "ReleaseDlq",
        "PredictionApiUrl",
        "PredictionApiKeyId",
    },
}


def test_python_app_synthesizes_offline_without_validation_errors(cloud_assembly):
    assert cloud_assembly.returncode == 0, cloud_assembly.stderr[-4000:]
    assert "ValidationFailed" not in cloud_assembly.stderr


def test_stacks_are_named_after_the_project_and_environment_agnostic(cloud_assembly):
    assert sorted(cloud_assembly.templates) == sorted(f"Trainserve{s}" for s in EXPECTED_SUFFIXES)
    for name in cloud_assembly.templates:
        artifact = cloud_assembly.manifest["artifacts"][name]
        assert artifact["environment"] == "aws://unknown-account/unknown-region", name


def test_synth_leaves_no_warning_or_error_annotations(cloud_assembly):
    assert cloud_assembly.annotations("aws:cdk:warning", "aws:cdk:error") == []


@pytest.mark.parametrize("suffix", EXPECTED_SUFFIXES)
def test_cdk_nag_aws_solutions_reports_nothing(cloud_assembly, suffix):
    assert cloud_assembly.violations_of(f"Trainserve{suffix}") == []


@pytest.mark.parametrize("suffix", EXPECTED_SUFFIXES)
def test_cfn_lint_reports_no_errors_or_warnings(cloud_assembly, suffix):
    template = cloud_assembly.stack(suffix)
    matches = lint(json.dumps(template), config=ManualArgs(ignore_checks=["W3005"], regions=["us-east-1"]))
    assert [str(m) for m in matches] == []


@pytest.mark.parametrize("suffix", sorted(EXPECTED_OUTPUTS))
def test_outputs_the_cli_reads(cloud_assembly, suffix):
    outputs = set(cloud_assembly.stack(suffix).get("Outputs", {}))
    assert EXPECTED_OUTPUTS[suffix] <= outputs


def test_output_keys_are_unique_across_stacks(cloud_assembly):
    """The CLI merges every stack's outputs into one dict: a key must not appear twice."""
    seen: dict[str, str] = {}
    for name, template in cloud_assembly.templates.items():
        for key in template.get("Outputs", {}):
            if key.startswith("ExportsOutput") or key.startswith("Export"):
                continue
            assert key not in seen, f"output {key} in {seen.get(key)} and {name}"
            seen[key] = name


def _is_key_policy_root_statement(template, logical_id, statement) -> bool:
    """CDK's default key policy statement: the account root gets kms:* so that IAM policies can grant use."""
    if template["Resources"][logical_id]["Type"] != "AWS::KMS::Key":
        return False
    return (
        json.dumps(statement.get("Principal", {})).endswith(':root"]]}}') and statement["Action"] == "kms:*"
    )


def test_no_iam_statement_allows_every_action(cloud_assembly):
    checked = 0
    for name, template in cloud_assembly.templates.items():
        for logical_id, statement in policy_statements(template):
            if statement.get("Effect") != "Allow":
                continue
            for action in as_list(statement.get("Action", [])):
                checked += 1
                assert action != "*", (name, logical_id, statement)
                if not _is_key_policy_root_statement(template, logical_id, statement):
                    assert not str(action).endswith(":*"), (name, logical_id, statement)
    assert checked > 50


# ---------------------------------------------------------------------------------------- configuration


def _build(context):
    from app import build_app

    return build_app(context)


def _context(**block):
    context = cdk_context()
    context["trainserve"] = {**context["trainserve"], **block}
    return context


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"no_such_key": 1}, "no_such_key"),
        ({"quality_threshold": 1.5}, "quality_threshold"),
        ({"quality_threshold": "high"}, "quality_threshold"),
        ({"max_live_variants": "two"}, "max_live_variants"),
        ({"training_instance_type": "ml.p3.2xlarge"}, "training_instance_type"),
        ({"serving_instance_type": "ml.m5.huge"}, "serving_instance_type"),
        ({"sticky_assignment": "sometimes"}, "sticky_assignment"),
    ],
)
def test_bad_configuration_fails_build_app_naming_the_key(block, key):
    with pytest.raises(ConfigError, match=key):
        _build(_context(**block))


def test_flat_override_is_validated_too():
    context = cdk_context()
    context["quality_threshold"] = "1.5"  # what `cdk synth -c quality_threshold=1.5` passes
    with pytest.raises(ConfigError, match="quality_threshold"):
        _build(context)


def test_flat_override_wins_over_the_context_block():
    from aws_cdk import App

    from app import read_config

    context = cdk_context()
    context["quality_threshold"] = "0.95"
    context["training_schedule"] = "rate(1 day)"
    config = read_config(App(context=context))
    assert config.quality_threshold == 0.95
    assert config.training_schedule == "rate(1 day)"
    assert config.project_name == context["trainserve"]["project_name"]


def test_a_misspelt_flat_override_is_an_error_naming_the_key_meant():
    """`cdk synth -c qualty_threshold=0.95` synthesized with the threshold unchanged, without a word."""
    from app import check_flat_keys

    context = cdk_context()
    context["qualty_threshold"] = "0.95"
    with pytest.raises(ConfigError, match="unknown key 'qualty_threshold': did you mean 'quality_threshold'"):
        _build(context)
    # CDK's own keys and unrelated ones are left alone
    assert (
        check_flat_keys({"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:x": 1, "my-team": "a"}) == []
    )


def test_a_flat_override_only_the_cli_reads_is_warned_about_in_cdk_synth():
    """`cdk synth -c ab_alpha=0.01` changes no stack: report ab reads cdk.json. main() prints this warning."""
    from app import check_flat_keys

    context = cdk_context()
    context["ab_alpha"] = "0.01"
    [warning] = check_flat_keys(context)
    assert warning.startswith(
        "-c ab_alpha: read by the trainserve CLI (report ab) from cdk.json, not by any stack"
    )
    _build(context)  # a valid value: synth goes on


def test_context_block_must_be_an_object():
    context = cdk_context()
    context["trainserve"] = ["not", "an", "object"]
    with pytest.raises(ConfigError, match="trainserve"):
        _build(context)


def test_cdk_synth_with_bad_configuration_exits_with_the_message():
    """What `cdk synth -c quality_threshold=1.5` runs: app.py with the context in CDK_CONTEXT_JSON."""
    context = cdk_context()
    context["quality_threshold"] = "1.5"
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "app.py")],
        cwd=PROJECT_ROOT,
        env=offline_env(CDK_CONTEXT_JSON=json.dumps(context)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "configuration error" in proc.stderr
    assert "quality_threshold" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------- the checks can fail


def test_harness_sees_a_cdk_nag_violation(tmp_path):
    """The nag assertions above are not vacuous: an unencrypted, unlogged bucket fails synth and shows up
    in the validation report the way ``Assembly`` reads it."""
    from aws_cdk import App, Stack, Validations
    from aws_cdk import aws_s3 as s3
    from cdk_nag import AwsSolutionsChecks
    from cfn_helpers import Assembly

    app = App(outdir=str(tmp_path))
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    stack = Stack(app, "Bad")
    s3.Bucket(stack, "Plain")
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    rules = {rule for rule, path in Assembly.load(tmp_path, 1, "").violations_of("Bad")}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules


def test_harness_sees_a_cfn_lint_error():
    template = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"NoSuchProperty": 1}}}}
    matches = lint(json.dumps(template), config=ManualArgs(ignore_checks=["W3005"], regions=["us-east-1"]))
    assert any(m.rule.id.startswith("E") for m in matches)
