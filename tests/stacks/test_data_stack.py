"""DataStack: the KMS key and the four buckets (encryption, TLS, public access, logging, lifecycle, removal)."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import pytest
from cfn_helpers import as_list, only, resolve_join, resources

from stacks.config import load

pytestmark = pytest.mark.xdist_group("synth")

KMS_BUCKETS = ("Data", "Artifacts", "Staging")


def _buckets(template):
    found = resources(template, "AWS::S3::Bucket")
    by_name = {}
    for prefix in (*KMS_BUCKETS, "AccessLogs"):
        ids = [k for k in found if re.fullmatch(f"{prefix}[0-9A-F]{{8}}", k)]
        assert len(ids) == 1, f"bucket {prefix}: {sorted(found)}"
        by_name[prefix] = (ids[0], found[ids[0]])
    assert len(found) == 4, sorted(found)
    return by_name


@pytest.fixture(scope="module")
def data(cloud_assembly):
    return cloud_assembly.stack("Data")


def test_key_rotates_and_is_the_project_key(data):
    key = only(data, "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    assert only(data, "AWS::KMS::Alias")["Properties"]["AliasName"] == "alias/trainserve"


def _key_statements(data):
    return only(data, "AWS::KMS::Key")["Properties"]["KeyPolicy"]["Statement"]


def _service(statement) -> str:
    """The statement's service principal, pseudo parameters as ``TOKEN`` (``logs.TOKEN.amazonaws.com``)."""
    principal = statement.get("Principal", {})
    return (
        resolve_join(principal["Service"]) if isinstance(principal, dict) and "Service" in principal else ""
    )


# Pseudo parameters of an example deployment, to render the key policy's ARN patterns.
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "111122223333"}


def _render(value) -> str:
    """A CloudFormation string with ``Ref`` of pseudo parameters replaced by the example deployment's."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return PSEUDO[value["Ref"]]
    sep, parts = value["Fn::Join"]
    return sep.join(_render(p) for p in parts)


def test_key_policy_lets_cloudwatch_logs_of_this_account_only(data):
    statements = _key_statements(data)
    logs = [s for s in statements if s.get("Sid") == "AllowCloudWatchLogsOfThisAccount"]
    assert len(logs) == 1
    assert "kms:EncryptionContext:aws:logs:arn" in logs[0]["Condition"]["ArnLike"]


def test_no_key_policy_statement_lets_cloudwatch_logs_use_the_key_without_the_log_group_condition(data):
    """An unconditioned grant to the logs principal (Key.grant_encrypt_decrypt) would cancel the
    confused-deputy guard of the conditioned statement: every statement naming it carries the condition."""
    logs = [s for s in _key_statements(data) if _service(s).startswith("logs.")]
    assert [s.get("Sid") for s in logs] == ["AllowCloudWatchLogsOfThisAccount"]
    for statement in logs:
        assert statement["Effect"] == "Allow"
        assert set(statement["Condition"]) == {"ArnLike"}
        (condition,) = statement["Condition"]["ArnLike"].items()
        assert condition[0] == "kms:EncryptionContext:aws:logs:arn"
        assert _render(condition[1]) == "arn:aws:logs:eu-west-1:111122223333:log-group:*"


def test_the_logs_condition_covers_every_log_group_of_the_app(cloud_assembly, data, project_root):
    """Every log group the stacks create (named by CloudFormation when the template names none), and the
    endpoint's ``/aws/sagemaker/Endpoints/<endpoint>``, is a log group the conditioned statement allows."""
    (statement,) = [s for s in _key_statements(data) if _service(s).startswith("logs.")]
    pattern = _render(statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"])
    names = []
    for stack, template in cloud_assembly.templates.items():
        for logical_id, group in resources(template, "AWS::Logs::LogGroup").items():
            name = group["Properties"].get("LogGroupName")
            names.append(_render(name) if name is not None else f"{stack}-{logical_id}-AbCdEf123456")
    assert len(names) >= 5, names
    names.append(f"/aws/sagemaker/Endpoints/{load(project_root).endpoint_name}")
    for name in names:
        arn = f"arn:aws:logs:eu-west-1:111122223333:log-group:{name}"
        assert fnmatchcase(arn, pattern), (arn, pattern)
    # and only this account's, in this region
    assert not fnmatchcase("arn:aws:logs:eu-west-1:444455556666:log-group:/aws/lambda/x", pattern)
    assert not fnmatchcase("arn:aws:logs:us-east-1:111122223333:log-group:/aws/lambda/x", pattern)


def test_key_policy_lets_eventbridge_encrypt_for_this_accounts_queues_only(data):
    """A rule target's dead-letter queue is KMS-encrypted with the project key (the monitoring schedule's):
    EventBridge needs GenerateDataKey and Decrypt on it, for this account's SQS queues only."""
    (statement,) = [s for s in _key_statements(data) if _service(s) == "events.amazonaws.com"]
    assert statement["Effect"] == "Allow"
    assert sorted(as_list(statement["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
    (condition,) = statement["Condition"]["ArnLike"].items()
    assert condition[0] == "kms:EncryptionContext:aws:sqs:arn"
    assert _render(condition[1]) == "arn:aws:sqs:eu-west-1:111122223333:*"
    assert set(statement["Condition"]) == {"ArnLike"}


def test_project_buckets_use_the_project_key(data):
    key_id = next(iter(resources(data, "AWS::KMS::Key")))
    for name in KMS_BUCKETS:
        _, bucket = _buckets(data)[name]
        (rule,) = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        default = rule["ServerSideEncryptionByDefault"]
        assert default["SSEAlgorithm"] == "aws:kms", name
        assert default["KMSMasterKeyID"] == {"Fn::GetAtt": [key_id, "Arn"]}, name
        assert rule["BucketKeyEnabled"] is True


def test_access_logs_bucket_uses_s3_managed_encryption(data):
    _, bucket = _buckets(data)["AccessLogs"]
    (rule,) = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_every_bucket_blocks_public_access_and_denies_plain_http(data):
    policies = resources(data, "AWS::S3::BucketPolicy").values()
    for name, (logical_id, bucket) in _buckets(data).items():
        assert bucket["Properties"]["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        (policy,) = [p for p in policies if p["Properties"]["Bucket"] == {"Ref": logical_id}]
        deny_http = [
            s
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert len(deny_http) == 1, name
        assert deny_http[0]["Principal"] == {"AWS": "*"}
        assert "s3:*" in as_list(deny_http[0]["Action"])


def test_project_buckets_log_to_the_access_logs_bucket(data):
    buckets = _buckets(data)
    logs_id = buckets["AccessLogs"][0]
    for name in KMS_BUCKETS:
        logging = buckets[name][1]["Properties"]["LoggingConfiguration"]
        assert logging["DestinationBucketName"] == {"Ref": logs_id}, name
        assert logging["LogFilePrefix"] == f"{name.lower()}/"


def test_lifecycle_rules(data):
    buckets = _buckets(data)
    for name, (_, bucket) in buckets.items():
        rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
        aborts = [
            r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            for r in rules
            if "AbortIncompleteMultipartUpload" in r
        ]
        assert aborts == [7], name
    staging_rules = buckets["Staging"][1]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert [r["ExpirationInDays"] for r in staging_rules if "ExpirationInDays" in r] == [30]
    for name in ("Data", "Artifacts"):
        props = buckets[name][1]["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert any("NoncurrentVersionExpiration" in r for r in props["LifecycleConfiguration"]["Rules"]), name
        assert not any("ExpirationInDays" in r for r in props["LifecycleConfiguration"]["Rules"]), name


def test_dev_buckets_are_destroyed_with_the_stack(data):
    for name, (_, bucket) in _buckets(data).items():
        assert bucket["DeletionPolicy"] == "Delete", name
    auto_delete = resources(data, "Custom::S3AutoDeleteObjects")
    assert len(auto_delete) == 4


def test_prod_buckets_and_key_are_retained(variant_assembly):
    data = variant_assembly.stack("Data")
    for name, (_, bucket) in _buckets(data).items():
        assert bucket["DeletionPolicy"] == "Retain", name
    assert only(data, "AWS::KMS::Key")["DeletionPolicy"] == "Retain"
    assert resources(data, "Custom::S3AutoDeleteObjects") == {}


def test_bucket_outputs_and_exports(data):
    outputs = data["Outputs"]
    buckets = _buckets(data)
    for name in KMS_BUCKETS:
        assert outputs[f"{name}Bucket"]["Value"] == {"Ref": buckets[name][0]}
    exports = {o["Export"]["Name"] for o in outputs.values() if "Export" in o}
    assert {"TrainserveData-DataBucketArn", "TrainserveData-ArtifactsBucketArn"} <= exports
