"""WarehouseStack: Redshift reachable by Firehose only, credentials only in Secrets Manager, Firehose streams that
COPY into the two tables with staging, backup, compression and encryption; a prod destroy keeps the data and
deletes the compute and the network; cdk-nag and cfn-lint clean in dev and prod."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any

import cfnlint.api
import pytest
from aws_cdk import App, Environment, Validations
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks
from cfn_helpers import references

from stacks import common
from stacks.config import Config
from stacks.data_stack import DataStack
from stacks.firehose_ranges import (
    FIREHOSE_REDSHIFT_CIDRS,
    PROJECT_REGIONS,
    WITHOUT_MODEL_REGISTRY,
    UnsupportedRegionError,
    firehose_cidr,
)
from stacks.warehouse_stack import (
    FEEDBACK_COLUMNS,
    PREDICTION_LOG_COLUMNS,
    WarehouseStack,
    schema_hash,
)
from trainserve import PROJECT_ROOT

CONTEXT = json.loads((PROJECT_ROOT / "cdk.json").read_text())["context"]
TEST_PREDICTION_COLUMNS = (
    "request_id,event_time,endpoint_name,variant_name,model_package_arn,model_version,user_id,features,score,"
    "label,threshold,latency_ms,params"
)


def _config(**overrides: Any) -> Config:
    return Config.from_mapping({**CONTEXT["trainserve"], **overrides})


@pytest.fixture(scope="module")
def synthesized() -> dict[str, tuple[Template, dict]]:
    """One app (one synth, checked by cdk-nag: a violation makes synth raise ValidationFailed) holding the data
    stack and both kinds of warehouse."""
    app = App(context=CONTEXT)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    data = DataStack(app, "TestData", config=_config())
    WarehouseStack(app, "TestWarehouse", config=_config(), data=data)
    WarehouseStack(app, "TestWarehouseProvisioned", config=_config(warehouse_type="provisioned"), data=data)
    assembly = app.synth()
    out = {}
    for kind, name in (("serverless", "TestWarehouse"), ("provisioned", "TestWarehouseProvisioned")):
        tpl = assembly.get_stack_by_name(name).template
        out[kind] = (Template.from_json(tpl), tpl)
    return out


PROD_BASE_CAPACITY = 64  # not the default 8: the prod synth also checks that MaxCapacity follows the base


@pytest.fixture(scope="module")
def prod() -> dict[str, Any]:
    """environment=prod: the data stack and both kinds of warehouse, one synth checked by cdk-nag. Returns the
    templates (``data``, ``serverless``, ``provisioned``) and the SMG4 acknowledgment's reason (``smg4``)."""
    app = App(context=CONTEXT)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    config = _config(environment="prod", warehouse_base_capacity=PROD_BASE_CAPACITY)
    data = DataStack(app, "ProdData", config=config)
    warehouse = WarehouseStack(app, "ProdWarehouse", config=config, data=data)
    provisioned_config = _config(environment="prod", warehouse_type="provisioned")
    WarehouseStack(app, "ProdWarehouseProvisioned", config=provisioned_config, data=data)
    assembly = app.synth()
    out: dict[str, Any] = {
        kind: assembly.get_stack_by_name(name).template
        for kind, name in (
            ("data", "ProdData"),
            ("serverless", "ProdWarehouse"),
            ("provisioned", "ProdWarehouseProvisioned"),
        )
    }
    out["smg4"] = [
        reason
        for entry in warehouse.secret.node.metadata
        if entry.type == "aws:cdk:acknowledged-rules"
        for rule, reason in entry.data.items()
        if rule.endswith("AwsSolutions-SMG4")
    ]
    return out


@pytest.fixture(scope="module")
def serverless(synthesized) -> tuple[Template, dict]:
    return synthesized["serverless"]


@pytest.fixture(scope="module")
def provisioned(synthesized) -> tuple[Template, dict]:
    return synthesized["provisioned"]


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}/{key}", key, value
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def _resources(tpl: dict, type_: str) -> dict[str, dict]:
    return {k: r for k, r in tpl["Resources"].items() if r["Type"] == type_}


def _one(tpl: dict, type_: str) -> tuple[str, dict]:
    found = _resources(tpl, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.items()))


def _is_secret_reference(value: Any) -> bool:
    """A ``{{resolve:secretsmanager:...}}`` dynamic reference (plain string or Fn::Join of one)."""
    text = json.dumps(value)
    return "{{resolve:secretsmanager:" in text


def _lint_errors(tpl: dict) -> list[str]:
    """cfn-lint errors and warnings (W3005 is CDK's own redundant DependsOn on Lambda roles: ignored)."""
    return [
        str(m) for m in cfnlint.api.lint_all(json.dumps(tpl)) if m.rule.id[0] in "EW" and m.rule.id != "W3005"
    ]


KEPT = ("Retain", "RetainExceptOnCreate")  # DeletionPolicy values that leave the resource behind


def _not_kept(node: Any, tpl: dict, exporter: dict) -> list[str]:
    """What ``node`` refers to that a stack deletion deletes: resources of ``tpl`` without a keeping
    DeletionPolicy, and through ``Fn::ImportValue`` such resources of ``exporter`` (the data stack)."""
    exports = {o["Export"]["Name"]: o["Value"] for o in exporter.get("Outputs", {}).values() if "Export" in o}
    ids, imports = references(node)
    found = [
        f"{i} ({tpl['Resources'][i]['Type']})"
        for i in ids
        if tpl["Resources"][i].get("DeletionPolicy") not in KEPT
    ]
    for name in imports:
        assert name in exports, f"import {name} is not an export of the data stack"
        sources, _ = references(exports[name])
        found += [
            f"{name} -> {i} ({exporter['Resources'][i]['Type']})"
            for i in sources
            if exporter["Resources"][i].get("DeletionPolicy") not in KEPT
        ]
    return sorted(found)


def _statements(tpl: dict, role_prefix: str) -> list[dict]:
    out = []
    for policy in _resources(tpl, "AWS::IAM::Policy").values():
        roles = json.dumps(policy["Properties"]["Roles"])
        if f'"{role_prefix}' in roles:
            out.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    assert out, f"no policy attached to a role named {role_prefix}*"
    return out


# ------------------------------------------------------------------------------------------- region table
def test_firehose_cidrs_are_slash_27_ipv4_blocks_and_include_the_documented_regions():
    for region, cidr in FIREHOSE_REDSHIFT_CIDRS.items():
        net = ipaddress.ip_network(cidr)
        assert net.version == 4 and net.prefixlen == 27, region
    assert firehose_cidr("us-east-1") == "52.70.63.192/27"
    assert firehose_cidr("us-west-2") == "52.89.255.224/27"
    assert firehose_cidr("eu-west-1") == "52.19.239.192/27"


def test_unknown_region_in_the_table_lookup_names_region_and_supported_ones():
    with pytest.raises(UnsupportedRegionError, match=r"'xx-nowhere-1'.*supported regions: .*us-east-1"):
        firehose_cidr("xx-nowhere-1")


def test_regions_without_the_model_registry_in_cloudformation_are_not_offered():
    """cfn-lint E3006: no AWS::SageMaker::ModelPackageGroup in these regions, so the training stack cannot be
    created there, although Firehose has a CIDR block for them: refused, with the reason."""
    assert WITHOUT_MODEL_REGISTRY.issubset(FIREHOSE_REDSHIFT_CIDRS)
    assert set(PROJECT_REGIONS) == set(FIREHOSE_REDSHIFT_CIDRS) - WITHOUT_MODEL_REGISTRY
    for region in WITHOUT_MODEL_REGISTRY:
        with pytest.raises(UnsupportedRegionError, match=r"no SageMaker model registry in CloudFormation"):
            firehose_cidr(region)


def test_stack_in_an_unsupported_concrete_region_fails_synth_with_a_clear_error():
    app = App(context=CONTEXT)
    env = Environment(region="ap-south-2")
    data = DataStack(app, "Data", config=_config(), env=env)
    with pytest.raises(UnsupportedRegionError, match=r"'ap-south-2'.*supported regions: .*eu-west-1"):
        WarehouseStack(app, "Warehouse", config=_config(), data=data, env=env)


def test_stack_in_a_concrete_supported_region_uses_that_regions_cidr_literally():
    app = App(context=CONTEXT)
    env = Environment(region="us-west-2")
    config = _config()
    data = DataStack(app, "Data", config=config, env=env)
    tpl = Template.from_stack(WarehouseStack(app, "Warehouse", config=config, data=data, env=env)).to_json()
    _, sg = _one(tpl, "AWS::EC2::SecurityGroup")
    assert [r["CidrIp"] for r in sg["Properties"]["SecurityGroupIngress"]] == ["52.89.255.224/27"]
    assert "Mappings" not in tpl and "SupportedRegion" not in tpl.get("Rules", {})


# ---------------------------------------------------------------------------------------------- checks
def test_serverless_stack_is_cdk_nag_and_cfn_lint_clean(serverless):
    _, tpl = serverless  # synthesized under AwsSolutionsChecks: an unacknowledged finding raises
    assert _lint_errors(tpl) == []


def test_provisioned_stack_is_cdk_nag_and_cfn_lint_clean(provisioned):
    _, tpl = provisioned
    assert _lint_errors(tpl) == []


def test_prod_stacks_are_cdk_nag_and_cfn_lint_clean(prod):
    for kind in ("serverless", "provisioned"):  # synthesized under AwsSolutionsChecks: a finding raises
        assert _lint_errors(prod[kind]) == [], kind


# --------------------------------------------------------------------------------------------- removal
@pytest.mark.parametrize("kind", ["serverless", "provisioned"])
def test_prod_nothing_kept_by_a_destroy_refers_to_something_the_destroy_deletes(prod, kind):
    """A retained resource that refers to a deleted one makes the referee's deletion fail (a VPC, subnet or
    security group still in use: DELETE_FAILED) and keeps whatever bills running."""
    tpl = prod[kind]
    kept = {k: r for k, r in tpl["Resources"].items() if r.get("DeletionPolicy") in KEPT}
    assert kept, "prod retains something (the secret, the log groups, the serverless namespace)"
    problems = {}
    for logical_id, res in kept.items():
        depends_on = res.get("DependsOn", [])
        depends_on = depends_on if isinstance(depends_on, list) else [depends_on]
        refers_to = [res.get("Properties", {}), *({"Ref": d} for d in depends_on)]
        problems[f"{logical_id} ({res['Type']})"] = _not_kept(refers_to, tpl, prod["data"])
    assert {k: v for k, v in problems.items() if v} == {}


def test_prod_serverless_keeps_the_namespace_and_its_secret_and_deletes_the_workgroup(prod):
    tpl = prod["serverless"]
    _, namespace = _one(tpl, "AWS::RedshiftServerless::Namespace")
    _, workgroup = _one(tpl, "AWS::RedshiftServerless::Workgroup")
    _, secret = _one(tpl, "AWS::SecretsManager::Secret")
    assert (namespace["DeletionPolicy"], namespace["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert (secret["DeletionPolicy"], secret["UpdateReplacePolicy"]) == ("Retain", "Retain")
    # the compute (RPUs, public endpoint, network interfaces in this stack's subnets) never outlives the stack
    assert (workgroup["DeletionPolicy"], workgroup["UpdateReplacePolicy"]) == ("Delete", "Delete")
    for network in ("AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::SecurityGroup"):
        for logical_id in _resources(tpl, network):
            assert logical_id not in json.dumps(namespace["Properties"]), (logical_id, "namespace")


def test_prod_provisioned_cluster_is_deleted_after_a_final_snapshot_of_kept_key_and_secret(prod):
    tpl = prod["provisioned"]
    _, cluster = _one(tpl, "AWS::Redshift::Cluster")
    assert (cluster["DeletionPolicy"], cluster["UpdateReplacePolicy"]) == ("Snapshot", "Snapshot")
    # The snapshot outlives the stack: the key it is encrypted with and the secret holding the admin password
    # it restores with must outlive it too (the data stack's key is retained in prod).
    props = cluster["Properties"]
    assert _not_kept(props["KmsKeyId"], tpl, prod["data"]) == []
    assert _not_kept(props["MasterUserPassword"], tpl, prod["data"]) == []
    assert "Fn::ImportValue" in json.dumps(props["KmsKeyId"])
    # ... and what the cluster itself used can go once it is deleted
    for group in ("AWS::Redshift::ClusterSubnetGroup", "AWS::Redshift::ClusterParameterGroup"):
        _, res = _one(tpl, group)
        assert res.get("DeletionPolicy", "Delete") == "Delete", group


@pytest.mark.parametrize("which", ["serverless", "provisioned"])
def test_dev_destroys_the_whole_warehouse(which, serverless, provisioned):
    _, tpl = serverless if which == "serverless" else provisioned
    for cfn_type in (
        "AWS::RedshiftServerless::Namespace",
        "AWS::RedshiftServerless::Workgroup",
        "AWS::Redshift::Cluster",
        "AWS::SecretsManager::Secret",
    ):
        for logical_id, res in _resources(tpl, cfn_type).items():
            assert res.get("DeletionPolicy", "Delete") == "Delete", logical_id


# --------------------------------------------------------------------------------------------- network
def test_only_ingress_is_port_5439_from_the_regions_firehose_cidr(serverless):
    _, tpl = serverless
    _, sg = _one(tpl, "AWS::EC2::SecurityGroup")
    ingress = sg["Properties"]["SecurityGroupIngress"]
    assert len(ingress) == 1
    assert {k: v for k, v in ingress[0].items() if k != "Description"} == {
        "CidrIp": {"Fn::FindInMap": ["FirehoseCidr", {"Ref": "AWS::Region"}, "Cidr"]},
        "FromPort": 5439,
        "ToPort": 5439,
        "IpProtocol": "tcp",
    }
    assert _resources(tpl, "AWS::EC2::SecurityGroupIngress") == {}
    mapping = tpl["Mappings"]["FirehoseCidr"]
    assert mapping == {region: {"Cidr": cidr} for region, cidr in PROJECT_REGIONS.items()}
    assert "0.0.0.0/0" not in json.dumps(ingress)


def test_deploying_to_an_unsupported_region_is_refused_by_a_template_rule(serverless):
    _, tpl = serverless
    assertion = tpl["Rules"]["SupportedRegion"]["Assertions"][0]
    regions, region_ref = assertion["Assert"]["Fn::Contains"]
    assert sorted(regions) == sorted(PROJECT_REGIONS) and region_ref == {"Ref": "AWS::Region"}
    assert "us-east-1" in assertion["AssertDescription"]


def test_vpc_has_public_subnets_in_three_azs_without_lookups(serverless):
    _, tpl = serverless
    subnets = _resources(tpl, "AWS::EC2::Subnet").values()
    azs = sorted(json.dumps(s["Properties"]["AvailabilityZone"]) for s in subnets)
    assert azs == [json.dumps({"Fn::Select": [i, {"Fn::GetAZs": ""}]}) for i in range(3)]
    assert all(s["Properties"]["MapPublicIpOnLaunch"] for s in subnets)
    template, _ = serverless
    template.resource_count_is("AWS::EC2::FlowLog", 1)
    template.has_resource_properties("AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})


def test_flow_log_role_trusts_only_this_accounts_flow_logs(serverless):
    _, tpl = serverless
    _, flow_log = _one(tpl, "AWS::EC2::FlowLog")
    role_id, _ = flow_log["Properties"]["DeliverLogsPermissionArn"]["Fn::GetAtt"]
    (trust,) = tpl["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    account = {"Ref": "AWS::AccountId"}
    flow_logs = [
        "arn:",
        {"Ref": "AWS::Partition"},
        ":ec2:",
        {"Ref": "AWS::Region"},
        ":",
        account,
        ":vpc-flow-log/*",
    ]
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": account},
        "ArnLike": {"aws:SourceArn": {"Fn::Join": ["", flow_logs]}},
    }
    assert "ManagedPolicyArns" not in tpl["Resources"][role_id]["Properties"]


# ------------------------------------------------------------------------------------------- warehouse
def test_serverless_workgroup_is_public_ssl_only_enhanced_routing_in_three_subnets(serverless):
    _, tpl = serverless
    _, wg = _one(tpl, "AWS::RedshiftServerless::Workgroup")
    props = wg["Properties"]
    assert props["PubliclyAccessible"] is True and props["EnhancedVpcRouting"] is True
    assert props["Port"] == 5439 and props["BaseCapacity"] == 8
    assert {"ParameterKey": "require_ssl", "ParameterValue": "true"} in props["ConfigParameters"]
    assert len(props["SubnetIds"]) == 3
    sg_id, _ = _one(tpl, "AWS::EC2::SecurityGroup")
    assert props["SecurityGroupIds"] == [{"Fn::GetAtt": [sg_id, "GroupId"]}]


def test_serverless_compute_is_capped_at_four_times_the_configured_base(serverless, prod):
    """MaxCapacity bounds the RPUs (and the bill) a burst can reach: 4x warehouse_base_capacity."""
    for tpl, base in ((serverless[1], 8), (prod["serverless"], PROD_BASE_CAPACITY)):
        _, wg = _one(tpl, "AWS::RedshiftServerless::Workgroup")
        props = wg["Properties"]
        assert (props["BaseCapacity"], props["MaxCapacity"]) == (base, 4 * base)


def test_namespace_is_encrypted_with_the_project_key_and_takes_the_password_from_the_secret(serverless):
    _, tpl = serverless
    _, ns = _one(tpl, "AWS::RedshiftServerless::Namespace")
    secret_id, secret = _one(tpl, "AWS::SecretsManager::Secret")
    assert "Fn::ImportValue" in json.dumps(ns["Properties"]["KmsKeyId"])
    assert "Key" in json.dumps(ns["Properties"]["KmsKeyId"])
    assert _is_secret_reference(ns["Properties"]["AdminUserPassword"])
    assert {"Ref": secret_id} in ns["Properties"]["AdminUserPassword"]["Fn::Join"][1]
    assert "Fn::ImportValue" in json.dumps(secret["Properties"]["KmsKeyId"])
    generate = secret["Properties"]["GenerateSecretString"]
    assert json.loads(generate["SecretStringTemplate"]) == {"username": "admin"}
    assert generate["GenerateStringKey"] == "password"


@pytest.mark.parametrize("which", ["serverless", "provisioned"])
def test_no_plaintext_password_anywhere_in_the_template(which, serverless, provisioned):
    _, tpl = serverless if which == "serverless" else provisioned
    found = [(path, value) for path, key, value in _walk(tpl) if "password" in key.lower()]
    assert found, "expected the admin password property"
    for path, value in found:
        if path.endswith("/PasswordLength"):
            continue
        assert _is_secret_reference(value), f"{path} is not a Secrets Manager dynamic reference: {value!r}"
    for stream in _resources(tpl, "AWS::KinesisFirehose::DeliveryStream").values():
        redshift = stream["Properties"]["RedshiftDestinationConfiguration"]
        assert "Password" not in redshift and "Username" not in redshift


@pytest.mark.parametrize("which", ["serverless", "provisioned"])
def test_only_the_warehouse_takes_the_password_at_deploy_time_the_rest_read_the_secret_by_arn(
    which, serverless, provisioned
):
    """What the SMG4 acknowledgment relies on: rotating the secret would change no value CloudFormation
    resolved into Firehose, a function or the custom resource; they all get the secret's ARN."""
    _, tpl = serverless if which == "serverless" else provisioned
    secret_id, _ = _one(tpl, "AWS::SecretsManager::Secret")
    resolved = sorted(
        f"{logical_id}/{name}"
        for logical_id, res in tpl["Resources"].items()
        for name, value in res.get("Properties", {}).items()
        if _is_secret_reference(value)
    )
    owner = "Namespace/AdminUserPassword" if which == "serverless" else "Cluster/MasterUserPassword"
    assert resolved == [owner]
    for stream in _resources(tpl, "AWS::KinesisFirehose::DeliveryStream").values():
        config = stream["Properties"]["RedshiftDestinationConfiguration"]["SecretsManagerConfiguration"]
        assert config == {"Enabled": True, "SecretARN": {"Ref": secret_id}, "RoleARN": config["RoleARN"]}


def test_secret_rotation_acknowledgment_tells_the_truth(prod):
    (reason,) = prod["smg4"]
    # not "readable only by Firehose, setup and monitor": the key policy delegates to IAM (account root)
    assert "only by" not in reason and "any principal of the account" in reason
    assert "ManageAdminPassword" in reason and "by ARN" in reason and "10 minutes" in reason
    key = next(iter(_resources(prod["data"], "AWS::KMS::Key").values()))
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    assert any(s["Action"] == "kms:*" and ":root" in json.dumps(s["Principal"]) for s in statements)


def test_provisioned_cluster_is_encrypted_public_ssl_only_with_enhanced_routing(provisioned):
    template, tpl = provisioned
    _, cluster = _one(tpl, "AWS::Redshift::Cluster")
    props = cluster["Properties"]
    assert props["Encrypted"] is True and "Fn::ImportValue" in json.dumps(props["KmsKeyId"])
    assert props["PubliclyAccessible"] is True and props["EnhancedVpcRouting"] is True
    assert _is_secret_reference(props["MasterUserPassword"])
    template.has_resource_properties(
        "AWS::Redshift::ClusterParameterGroup",
        {"Parameters": Match.array_with([{"ParameterName": "require_ssl", "ParameterValue": "true"}])},
    )
    _, subnet_group = _one(tpl, "AWS::Redshift::ClusterSubnetGroup")
    assert len(subnet_group["Properties"]["SubnetIds"]) == 3
    assert _resources(tpl, "AWS::RedshiftServerless::Workgroup") == {}


# ------------------------------------------------------------------------------------------------ schema
def test_schema_custom_resource_gets_the_warehouse_and_a_hash_of_schema_sql(serverless):
    _, tpl = serverless
    _, schema = _one(tpl, "Custom::WarehouseSchema")
    props = schema["Properties"]
    secret_id, _ = _one(tpl, "AWS::SecretsManager::Secret")
    wg_id, _ = _one(tpl, "AWS::RedshiftServerless::Workgroup")
    assert props["WorkgroupName"] == {"Ref": wg_id}
    assert props["Database"] == "trainserve"
    assert props["SecretArn"] == {"Ref": secret_id}
    expected = hashlib.sha256((PROJECT_ROOT / "lambdas/warehouse_setup/schema.sql").read_bytes()).hexdigest()
    assert props["SchemaHash"] == expected
    assert "ClusterIdentifier" not in props


def test_provisioned_schema_resource_names_the_cluster(provisioned):
    _, tpl = provisioned
    _, schema = _one(tpl, "Custom::WarehouseSchema")
    cluster_id, _ = _one(tpl, "AWS::Redshift::Cluster")
    assert schema["Properties"]["ClusterIdentifier"] == {"Ref": cluster_id}
    assert "WorkgroupName" not in schema["Properties"]


def test_schema_hash_follows_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "warehouse_setup"
    folder.mkdir()
    (folder / "schema.sql").write_text("CREATE TABLE a (x INT);")
    monkeypatch.setattr(common, "LAMBDAS_DIR", tmp_path)
    first = schema_hash()
    (folder / "schema.sql").write_text("CREATE TABLE a (x BIGINT);")
    assert schema_hash() != first
    (folder / "schema.sql").unlink()
    with pytest.raises(FileNotFoundError, match="schema.sql"):
        schema_hash()


def test_setup_function_runs_the_handler_with_warehouse_environment(serverless):
    template, tpl = serverless
    wg_id, _ = _one(tpl, "AWS::RedshiftServerless::Workgroup")
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "warehouse_setup_handler.handler",
            "Environment": {
                "Variables": Match.object_like(
                    {"WAREHOUSE_WORKGROUP": {"Ref": wg_id}, "WAREHOUSE_DATABASE": "trainserve"}
                )
            },
        },
    )


def test_setup_role_may_run_sql_only_on_this_workgroup_and_read_only_this_secret(serverless):
    _, tpl = serverless
    statements = _statements(tpl, "SetupRole")
    wg_id, _ = _one(tpl, "AWS::RedshiftServerless::Workgroup")
    secret_id, _ = _one(tpl, "AWS::SecretsManager::Secret")
    execute = [s for s in statements if "redshift-data:ExecuteStatement" in json.dumps(s["Action"])]
    assert len(execute) == 1
    assert execute[0]["Resource"] == {"Fn::GetAtt": [wg_id, "Workgroup.WorkgroupArn"]}
    secret = [s for s in statements if "secretsmanager:GetSecretValue" in json.dumps(s["Action"])]
    assert [s["Resource"] for s in secret] == [{"Ref": secret_id}]
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        assert not any(a.endswith(":*") or a == "*" for a in actions), s


# ---------------------------------------------------------------------------------------------- firehose
@pytest.mark.parametrize(
    ("logical_prefix", "table", "columns", "name"),
    [
        ("PredictionsDeliveryStream", "prediction_log", TEST_PREDICTION_COLUMNS, "predictions"),
        ("FeedbackDeliveryStream", "prediction_feedback", "request_id,event_time,outcome", "feedback"),
    ],
)
def test_delivery_stream_copies_gzip_json_into_its_table_with_backup_and_kms(
    serverless, logical_prefix, table, columns, name
):
    _, tpl = serverless
    streams = _resources(tpl, "AWS::KinesisFirehose::DeliveryStream")
    props = streams[logical_prefix]["Properties"]
    secret_id, _ = _one(tpl, "AWS::SecretsManager::Secret")
    wg_id, _ = _one(tpl, "AWS::RedshiftServerless::Workgroup")
    assert props["DeliveryStreamType"] == "DirectPut"
    assert props["DeliveryStreamEncryptionConfigurationInput"]["KeyType"] == "CUSTOMER_MANAGED_CMK"
    rs = props["RedshiftDestinationConfiguration"]
    assert rs["CopyCommand"] == {
        "DataTableName": table,
        "DataTableColumns": columns,
        "CopyOptions": "FORMAT AS JSON 'auto' GZIP TIMEFORMAT 'auto'",
    }
    assert rs["SecretsManagerConfiguration"]["Enabled"] is True
    assert rs["SecretsManagerConfiguration"]["SecretARN"] == {"Ref": secret_id}
    assert rs["RetryOptions"] == {"DurationInSeconds": 3600}
    assert rs["CloudWatchLoggingOptions"]["Enabled"] is True
    jdbc = json.dumps(rs["ClusterJDBCURL"])
    assert "jdbc:redshift://" in jdbc and wg_id in jdbc and ":5439/trainserve" in jdbc
    assert rs["S3BackupMode"] == "Enabled"
    for key, prefix in (
        ("S3Configuration", f"firehose/{name}/"),
        ("S3BackupConfiguration", f"firehose/backup/{name}/"),
    ):
        s3 = rs[key]
        assert s3["Prefix"] == prefix
        assert s3["CompressionFormat"] == "GZIP"
        assert "Fn::ImportValue" in json.dumps(
            s3["EncryptionConfiguration"]["KMSEncryptionConfig"]["AWSKMSKeyARN"]
        )
        assert s3["BucketARN"] == {"Fn::ImportValue": "TestData-StagingBucketArn"}
        assert s3["CloudWatchLoggingOptions"]["Enabled"] is True
    depends_on = streams[logical_prefix]["DependsOn"]
    assert "Schema" in depends_on  # the tables exist before the first COPY
    assert any(d.startswith("FirehoseRoleDefaultPolicy") for d in depends_on)


def test_stream_columns_follow_the_architecture_records():
    assert ",".join(PREDICTION_LOG_COLUMNS) == TEST_PREDICTION_COLUMNS
    assert FEEDBACK_COLUMNS == ("request_id", "event_time", "outcome")


def test_firehose_role_is_limited_to_the_staging_prefix_key_logs_and_secret(serverless):
    _, tpl = serverless
    statements = _statements(tpl, "FirehoseRole")
    secret_id, _ = _one(tpl, "AWS::SecretsManager::Secret")
    object_statements = [s for s in statements if "s3:PutObject" in json.dumps(s["Action"])]
    assert len(object_statements) == 1
    assert object_statements[0]["Resource"] == {
        "Fn::Join": ["", [{"Fn::ImportValue": "TestData-StagingBucketArn"}, "/firehose/*"]]
    }
    resources = json.dumps([s["Resource"] for s in statements])
    assert '"*"' not in resources
    secret = [s for s in statements if "secretsmanager:GetSecretValue" in json.dumps(s["Action"])]
    assert [s["Resource"] for s in secret] == [{"Ref": secret_id}]
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        assert not any(a.endswith(":*") or a == "*" for a in actions), s
    _, role = next(
        (k, r) for k, r in _resources(tpl, "AWS::IAM::Role").items() if k.startswith("FirehoseRole")
    )
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "firehose.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "AWS::AccountId"}}}


# ---------------------------------------------------------------------------------------------- outputs
def test_outputs_the_cli_reads_serverless(serverless):
    _, tpl = serverless
    outputs = tpl["Outputs"]
    for key in (
        "PredictionsStream",
        "FeedbackStream",
        "WarehouseWorkgroup",
        "WarehouseDatabase",
        "WarehouseSecretArn",
    ):
        assert key in outputs, key
    assert "WarehouseCluster" not in outputs
    assert outputs["PredictionsStream"]["Value"] == {"Ref": "PredictionsDeliveryStream"}
    assert outputs["WarehouseDatabase"]["Value"] == "trainserve"
    assert tpl["Description"] == "trainserve: Redshift warehouse and Firehose prediction logging"


def test_outputs_the_cli_reads_provisioned(provisioned):
    _, tpl = provisioned
    outputs = tpl["Outputs"]
    cluster_id, _ = _one(tpl, "AWS::Redshift::Cluster")
    assert outputs["WarehouseCluster"]["Value"] == {"Ref": cluster_id}
    assert "WarehouseWorkgroup" not in outputs


def test_copy_columns_are_the_columns_of_schema_sql():
    """The stack's COPY column lists and the DDL both local and Redshift run cannot drift apart."""
    from stacks import warehouse_stack
    from trainserve.local.warehouse import _statements, table_columns

    ddl = {table: tuple(c.name for c in cols) for table, cols in table_columns(_statements()).items()}
    assert ddl[warehouse_stack.PREDICTION_LOG_TABLE] == warehouse_stack.PREDICTION_LOG_COLUMNS
    assert ddl[warehouse_stack.FEEDBACK_TABLE] == warehouse_stack.FEEDBACK_COLUMNS
