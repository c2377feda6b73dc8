"""Warehouse/logging stack: Redshift (Serverless by default, or a provisioned cluster), its tables, and the two
Firehose delivery streams that load every prediction and every feedback record into it.

Network. Firehose cannot deliver into a VPC: it connects to Redshift over the internet from one published
/27 per region (``stacks.firehose_ranges``). The warehouse is therefore publicly accessible, in public
subnets, behind a security group that admits port 5439 from that block only; SSL is required and enhanced
VPC routing keeps the warehouse's own COPY traffic to S3 inside the VPC (S3 gateway endpoint).

Availability zones. Redshift Serverless wants subnets in three AZs. The stack stays environment-agnostic
(like every stack of the app, so ``cdk synth`` needs no account, no lookups and no ``cdk.context.json``):
instead of ``max_azs=3`` (which an agnostic stack silently caps at 2) the VPC gets the AZs as
``Fn::Select(i, Fn::GetAZs(''))``, resolved by CloudFormation in whatever region the stack is deployed to.
Known limit: Redshift Serverless is not offered in a few AZ IDs (e.g. ``use1-az3``); if an account's first
three AZ names map to one of them, the workgroup creation fails and the AZs must be chosen by hand (give the
stack an ``env`` and ``availability_zones``).

Firehose CIDR. With a concrete region (``env=Environment(region=...)``) the block is looked up at synth
time and an unknown region fails synth with ``UnsupportedRegionError``. An agnostic stack carries the table
as a ``CfnMapping`` read with ``Fn::FindInMap(AWS::Region)``, plus a template ``Rules`` assertion on
``AWS::Region`` so that deploying to an unsupported region fails before any resource is created, with a
message naming the supported regions (instead of FindInMap's generic error).

Removal (``cdk destroy``). prod keeps the data and stops the billing: the Serverless namespace (tables,
encrypted with the data stack's key, which prod retains, like the admin secret) is retained, while the
workgroup (the compute, publicly reachable, attached to this stack's subnets and security group) is always
deleted; a provisioned cluster is deleted after a final snapshot (``RemovalPolicy.SNAPSHOT``). Nothing
retained references the VPC, subnets, security group, subnet group or parameter group, so they can be
deleted after it. dev destroys everything.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aws_cdk import (
    Aws,
    CfnMapping,
    CfnOutput,
    CfnRule,
    CfnRuleAssertion,
    CustomResource,
    Duration,
    Fn,
    RemovalPolicy,
    Stack,
    Token,
)
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_redshift as redshift
from aws_cdk import aws_redshiftserverless as redshiftserverless
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks import common
from stacks.common import acknowledge, python_function
from stacks.config import Config
from stacks.constructs.lambda_access import function_role
from stacks.firehose_ranges import PROJECT_REGIONS, firehose_cidr

REDSHIFT_PORT = 5439
ADMIN_USERNAME = "admin"
VPC_CIDR = "10.60.0.0/16"
AZ_COUNT = 3
PROVISIONED_NODE_TYPE = "ra3.xlplus"
# Serverless compute ceiling: MaxCapacity = this many times warehouse_base_capacity (no configuration key of its
# own). The load is Firehose micro-batch COPYs (60 s / 5 MB buffers), the monitor's query every
# monitoring_interval_minutes and ad-hoc `report` queries: the base handles them, 4x leaves headroom for bursts
# while bounding the worst case at 4x the base's RPU-hours (8 RPUs base -> at most 32 RPUs). A multiple of the
# base is a multiple of 8 and >= the base, as Redshift Serverless requires.
MAX_CAPACITY_FACTOR = 4
FIREHOSE_RETRY_SECONDS = 3600
FIREHOSE_BUFFER_SECONDS = 60
FIREHOSE_BUFFER_MB = 5
COPY_OPTIONS = "FORMAT AS JSON 'auto' GZIP TIMEFORMAT 'auto'"
STAGING_PREFIX = "firehose/"

# The warehouse schema (ARCHITECTURE.md "Records"); the DDL itself is lambdas/warehouse_setup/schema.sql.
PREDICTION_LOG_TABLE = "prediction_log"
PREDICTION_LOG_COLUMNS = (
    "request_id",
    "event_time",
    "endpoint_name",
    "variant_name",
    "model_package_arn",
    "model_version",
    "user_id",
    "features",
    "score",
    "label",
    "threshold",
    "latency_ms",
    "params",
)
FEEDBACK_TABLE = "prediction_feedback"
FEEDBACK_COLUMNS = ("request_id", "event_time", "outcome")

SETUP_CODE_DIR = "warehouse_setup"
SCHEMA_FILE = "schema.sql"


def schema_hash() -> str:
    """SHA-256 of ``lambdas/warehouse_setup/schema.sql``: a property of the setup custom resource, so that an
    edited schema makes CloudFormation run the setup again."""
    path = common.LAMBDAS_DIR / SETUP_CODE_DIR / SCHEMA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"warehouse schema {path} does not exist")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def database_name(config: Config) -> str:
    """Redshift database names are lowercase letters, digits and '_': the project name with '-' → '_'."""
    return config.project_name.replace("-", "_")


class WarehouseStack(Stack):
    """Redshift warehouse + the prediction and feedback delivery streams.

    Attributes: ``vpc``, ``security_group``, ``secret`` (admin credentials, ``username``/``password``),
    ``database_name``, ``workgroup_name`` (serverless, else ``None``), ``cluster_id`` (provisioned, else
    ``None``), ``warehouse_arn`` (workgroup or cluster ARN: what redshift-data permissions are scoped to),
    ``firehose_cidr`` (string or token), ``setup_function``, ``setup_resource``, ``predictions_stream`` /
    ``feedback_stream`` (L1), ``predictions_stream_name`` / ``_arn``, ``feedback_stream_name`` / ``_arn``.

    Outputs: ``PredictionsStream``, ``FeedbackStream``, ``WarehouseWorkgroup`` or ``WarehouseCluster``,
    ``WarehouseDatabase``, ``WarehouseSecretArn``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, data: Any, **kwargs) -> None:
        kwargs.setdefault(
            "description", f"{config.project_name}: Redshift warehouse and Firehose prediction logging"
        )
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.data = data
        self.serverless = config.warehouse_type == "serverless"
        self.database_name = database_name(config)
        self._removal = RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY

        self.firehose_cidr = self._firehose_cidr()
        self._network()
        self._admin_secret()
        if self.serverless:
            self._serverless_warehouse()
        else:
            self._provisioned_warehouse()
        self._schema()
        self._delivery_streams()
        self._outputs()

    # ------------------------------------------------------------------------------------------ network
    def _firehose_cidr(self) -> str:
        region = self.region
        if not Token.is_unresolved(region):
            return firehose_cidr(region)  # raises UnsupportedRegionError naming the supported regions
        regions = sorted(PROJECT_REGIONS)
        mapping = CfnMapping(
            self,
            "FirehoseCidr",
            mapping={r: {"Cidr": PROJECT_REGIONS[r]} for r in regions},
        )
        CfnRule(
            self,
            "SupportedRegion",
            assertions=[
                CfnRuleAssertion(
                    assert_=Fn.condition_contains(regions, Aws.REGION),
                    assert_description=(
                        "The warehouse must be reachable by Amazon Data Firehose, whose Redshift CIDR block is "
                        f"known only for these regions: {', '.join(regions)}"
                    ),
                )
            ],
        )
        return mapping.find_in_map(Aws.REGION, "Cidr")

    def _network(self) -> None:
        flow_log_group = logs.LogGroup(
            self,
            "VpcFlowLogs",
            retention=common._retention(self.config.log_retention_days),
            encryption_key=self.data.key,
            removal_policy=self._removal,
        )
        # Instead of the role the flow log would create, one whose trust is limited to this account's flow logs.
        # AWS doc: Amazon VPC User Guide, "IAM role for publishing flow logs to CloudWatch Logs" (the flow log ID is
        # not known before the flow log exists: the documented wildcard)
        flow_log_role = iam.Role(
            self,
            "VpcFlowLogRole",
            assumed_by=iam.ServicePrincipal(
                "vpc-flow-logs.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:vpc-flow-log/*"
                    },
                },
            ),
            description=f"{self.config.project_name}: VPC flow logs to their CloudWatch log group",
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            availability_zones=[Fn.select(i, Fn.get_azs()) for i in range(AZ_COUNT)],
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
            ],
            flow_logs={
                "All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group, flow_log_role),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        # Enhanced VPC routing sends the warehouse's COPY/UNLOAD traffic through the VPC: keep S3 private.
        self.vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.security_group = ec2.SecurityGroup(
            self,
            "WarehouseSecurityGroup",
            vpc=self.vpc,
            description=f"{self.config.project_name} warehouse: Redshift port from Amazon Data Firehose only",
            allow_all_outbound=True,
        )
        if Token.is_unresolved(self.firehose_cidr):
            acknowledge(
                self.security_group,
                "AwsSolutions::AwsSolutions-EC23",
                "The only ingress CIDR is the region's Firehose /27 from the FirehoseCidr mapping (Fn::FindInMap, "
                "which cdk-nag cannot resolve); never 0.0.0.0/0.",
            )
        self.security_group.add_ingress_rule(
            ec2.Peer.ipv4(self.firehose_cidr),
            ec2.Port.tcp(REDSHIFT_PORT),
            "Amazon Data Firehose (Redshift destination) of this region",
        )

    # ------------------------------------------------------------------------------------------- secret
    def _admin_secret(self) -> None:
        self.secret = secretsmanager.Secret(
            self,
            "AdminSecret",
            description=f"{self.config.project_name} warehouse admin credentials (Firehose COPY, setup, monitor)",
            encryption_key=self.data.key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"username": ADMIN_USERNAME}),
                generate_string_key="password",
                # Redshift refuses / @ " ' \ and space; letters and digits of all three kinds are required.
                exclude_punctuation=True,
                require_each_included_type=True,
                password_length=32,
            ),
            removal_policy=self._removal,
        )
        acknowledge(
            self.secret,
            "AwsSolutions-SMG4",
            "Rotation is not set up. Lambda rotation of this generated secret must log in to the warehouse, whose "
            "port 5439 admits the Firehose /27 only, from a VPC without NAT or Secrets Manager endpoint: it needs a "
            "VPC Lambda, an ingress rule and an interface endpoint. Redshift-managed rotation (ManageAdminPassword "
            "/ ManageMasterPassword) is not used: CloudFormation returns no ARN of a Serverless namespace's "
            "managed secret (no GetAtt), and Firehose, the schema custom resource, the monitor and the CLI "
            "(WarehouseSecretArn) need that ARN at deploy time. All of them read this secret by ARN when they "
            "connect (Firehose refreshes it every 10 minutes, within its 3600 s retry window), so rotation would "
            "not break them. No resource policy: readable by any principal of the account whose IAM policy allows "
            "GetSecretValue on it and kms:Decrypt of the project key via Secrets Manager (here the Firehose, setup "
            "and monitor roles, and operators running the CLI reports).",
        )

    def _password(self) -> str:
        """A ``{{resolve:secretsmanager:...}}`` dynamic reference: the password never appears in the template."""
        return self.secret.secret_value_from_json("password").unsafe_unwrap()

    # ------------------------------------------------------------------------------------------ warehouse
    def _serverless_warehouse(self) -> None:
        project = self.config.project_name
        self.namespace = redshiftserverless.CfnNamespace(
            self,
            "Namespace",
            namespace_name=f"{project}-ns",
            db_name=self.database_name,
            admin_username=ADMIN_USERNAME,
            admin_user_password=self._password(),
            kms_key_id=self.data.key.key_arn,
            log_exports=["userlog", "connectionlog", "useractivitylog"],
        )
        self.namespace.apply_removal_policy(self._removal)
        self.workgroup = redshiftserverless.CfnWorkgroup(
            self,
            "Workgroup",
            workgroup_name=f"{project}-wg",
            namespace_name=self.namespace.namespace_name,
            base_capacity=self.config.warehouse_base_capacity,
            max_capacity=self.config.warehouse_base_capacity * MAX_CAPACITY_FACTOR,
            enhanced_vpc_routing=True,
            publicly_accessible=True,
            port=REDSHIFT_PORT,
            subnet_ids=[s.subnet_id for s in self.vpc.public_subnets],
            security_group_ids=[self.security_group.security_group_id],
            config_parameters=[
                redshiftserverless.CfnWorkgroup.ConfigParameterProperty(
                    parameter_key="require_ssl", parameter_value="true"
                ),
                redshiftserverless.CfnWorkgroup.ConfigParameterProperty(
                    parameter_key="enable_user_activity_logging", parameter_value="true"
                ),
            ],
        )
        self.workgroup.add_resource_dependency(self.namespace)
        # Deleted in every environment: the workgroup holds no data (the namespace does) but bills RPUs, is
        # publicly reachable and uses this stack's subnets and security group; retaining it would keep the VPC
        # from being deleted (DELETE_FAILED) and keep it billing after `cdk destroy`.
        self.workgroup.apply_removal_policy(RemovalPolicy.DESTROY)
        self.workgroup_name = self.workgroup.ref
        self.cluster_id = None
        self.warehouse_arn = self.workgroup.attr_workgroup_workgroup_arn
        self.endpoint_address = self.workgroup.attr_workgroup_endpoint_address

    def _provisioned_warehouse(self) -> None:
        parameter_group = redshift.CfnClusterParameterGroup(
            self,
            "ParameterGroup",
            description=f"{self.config.project_name} warehouse: SSL required, user activity logged",
            parameter_group_family="redshift-1.0",
            parameters=[
                redshift.CfnClusterParameterGroup.ParameterProperty(
                    parameter_name="require_ssl", parameter_value="true"
                ),
                redshift.CfnClusterParameterGroup.ParameterProperty(
                    parameter_name="enable_user_activity_logging", parameter_value="true"
                ),
            ],
        )
        subnet_group = redshift.CfnClusterSubnetGroup(
            self,
            "SubnetGroup",
            description=f"{self.config.project_name} warehouse public subnets (Firehose cannot reach a VPC)",
            subnet_ids=[s.subnet_id for s in self.vpc.public_subnets],
        )
        self.cluster = redshift.CfnCluster(
            self,
            "Cluster",
            cluster_type="single-node",
            node_type=PROVISIONED_NODE_TYPE,
            db_name=self.database_name,
            master_username=ADMIN_USERNAME,
            master_user_password=self._password(),
            encrypted=True,
            kms_key_id=self.data.key.key_arn,
            publicly_accessible=True,
            enhanced_vpc_routing=True,
            port=REDSHIFT_PORT,
            cluster_parameter_group_name=parameter_group.ref,
            cluster_subnet_group_name=subnet_group.ref,
            vpc_security_group_ids=[self.security_group.security_group_id],
            allow_version_upgrade=True,
            automated_snapshot_retention_period=7,
            logging_properties=redshift.CfnCluster.LoggingPropertiesProperty(
                log_destination_type="cloudwatch",
                log_exports=["connectionlog", "useractivitylog", "userlog"],
            ),
        )
        # prod: a final snapshot (encrypted with the retained project key) keeps the data, the cluster itself is
        # deleted, so it stops billing and its subnet group, parameter group, security group and VPC can go too.
        self.cluster.apply_removal_policy(
            RemovalPolicy.SNAPSHOT if self.config.is_prod else RemovalPolicy.DESTROY
        )
        self.cluster_id = self.cluster.ref
        self.workgroup_name = None
        self.warehouse_arn = (
            f"arn:{Aws.PARTITION}:redshift:{Aws.REGION}:{Aws.ACCOUNT_ID}:cluster:{self.cluster.ref}"
        )
        self.endpoint_address = self.cluster.attr_endpoint_address
        acknowledge(
            self.cluster,
            "AwsSolutions-RS4",
            "The default port is kept on purpose: ingress is limited to Firehose's /27 of the region, so a "
            "non-default port would add no protection, and Firehose's JDBC URL, the Data API and docs use 5439.",
        )
        acknowledge(
            self.cluster,
            "AwsSolutions-RS8",
            "Firehose has no VPC delivery to Redshift: it connects over the internet from its regional /27, the "
            "only CIDR the security group admits (port 5439); SSL is required by the parameter group.",
        )

    def warehouse_environment(self) -> dict[str, str]:
        """The Lambda environment naming the warehouse (the same keys for the setup and monitor functions)."""
        env = {"WAREHOUSE_DATABASE": self.database_name, "WAREHOUSE_SECRET_ARN": self.secret.secret_arn}
        if self.serverless:
            env["WAREHOUSE_WORKGROUP"] = self.workgroup_name
        else:
            env["WAREHOUSE_CLUSTER"] = self.cluster_id
        return env

    def grant_data_api(self, role: iam.IRole) -> None:
        """Redshift Data API on this warehouse only, as the admin user of the secret (read by ``role``).

        ExecuteStatement/BatchExecuteStatement are scoped to the workgroup/cluster; the statement-level calls
        (Describe/GetStatementResult/Cancel) have no resource type and are limited by AWS to the caller's own
        statements."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="RedshiftDataOnWarehouse",
                actions=["redshift-data:ExecuteStatement", "redshift-data:BatchExecuteStatement"],
                resources=[self.warehouse_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="RedshiftDataOwnStatements",
                actions=[
                    "redshift-data:DescribeStatement",
                    "redshift-data:GetStatementResult",
                    "redshift-data:CancelStatement",
                ],
                resources=["*"],
            )
        )
        self.grant_secret_read(role)

    def grant_secret_read(self, role: iam.IRole) -> None:
        """Read the admin secret and decrypt it through Secrets Manager only.

        Written out instead of ``secret.grant_read``: that would add the role to the key policy of the data
        stack, and a data stack naming a role of this stack is a cyclic cross-stack reference."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadWarehouseSecret",
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                resources=[self.secret.secret_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="DecryptWarehouseSecret",
                actions=["kms:Decrypt"],
                resources=[self.data.key.key_arn],
                conditions={
                    "StringEquals": {"kms:ViaService": f"secretsmanager.{Aws.REGION}.{Aws.URL_SUFFIX}"}
                },
            )
        )

    # ------------------------------------------------------------------------------------------- schema
    def _schema(self) -> None:
        """Tables and dedup views: ``schema.sql`` run through the Data API by a custom resource; it waits for
        the statements and fails the deployment if any fails."""
        role = function_role(self, "SetupRole", config=self.config, what="warehouse schema setup")
        self.setup_function = python_function(
            self,
            "SetupFunction",
            config=self.config,
            code_dir=SETUP_CODE_DIR,
            handler="warehouse_setup_handler.handler",
            description="Creates the warehouse tables and views (schema.sql) through the Redshift Data API",
            environment=self.warehouse_environment(),
            timeout=Duration.minutes(14),
            key=self.data.key,
            role=role,
        )
        _allow_own_logs(role, self.setup_function)
        self.grant_data_api(role)
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "redshift-data Describe/GetStatementResult/CancelStatement have no resource type (AWS limits them to "
            "the caller's own statements); X-Ray trace upload has no resource type either.",
        )

        provider_role = iam.Role(
            self,
            "SetupProviderRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{self.config.project_name}: custom resource framework of the warehouse setup",
        )
        provider_logs = logs.LogGroup(
            self,
            "SetupProviderLogs",
            retention=common._retention(self.config.log_retention_days),
            encryption_key=self.data.key,
            removal_policy=self._removal,
        )
        provider = cr.Provider(
            self,
            "SetupProvider",
            on_event_handler=self.setup_function,
            framework_on_event_role=provider_role,
            log_group=provider_logs,
            provider_function_env_encryption=self.data.key,
        )
        provider_role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnLogGroup",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[provider_logs.log_group_arn],
            )
        )
        properties = {
            "Database": self.database_name,
            "SecretArn": self.secret.secret_arn,
            "SchemaHash": schema_hash(),
        }
        if self.serverless:
            properties["WorkgroupName"] = self.workgroup_name
        else:
            properties["ClusterIdentifier"] = self.cluster_id
        self.setup_resource = CustomResource(
            self,
            "Schema",
            service_token=provider.service_token,
            resource_type="Custom::WarehouseSchema",
            properties=properties,
        )
        acknowledge(
            provider_role,
            f"AwsSolutions-IAM5[Resource::<{self.get_logical_id(self.setup_function.node.default_child)}.Arn>:*]",
            "The custom resource framework invokes the setup function by ARN including its versions/aliases.",
        )
        acknowledge(
            provider,
            "AwsSolutions-L1",
            "The custom resource framework's Node.js runtime is chosen and updated by aws-cdk-lib itself.",
        )

    # ---------------------------------------------------------------------------------- delivery streams
    def _delivery_streams(self) -> None:
        self.firehose_log_group = logs.LogGroup(
            self,
            "FirehoseLogs",
            retention=common._retention(self.config.log_retention_days),
            encryption_key=self.data.key,
            removal_policy=self._removal,
        )
        self.firehose_role = iam.Role(
            self,
            "FirehoseRole",
            # AWS doc: Amazon Data Firehose Developer Guide, "Controlling access" (trust policy with sts:ExternalId)
            assumed_by=iam.ServicePrincipal(
                "firehose.amazonaws.com", conditions={"StringEquals": {"sts:ExternalId": Aws.ACCOUNT_ID}}
            ),
            description=f"{self.config.project_name}: Firehose delivery to the warehouse",
        )
        bucket_arn = self.data.staging_bucket_arn
        self.firehose_role.add_to_policy(
            iam.PolicyStatement(
                sid="StagingBucket",
                actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                resources=[bucket_arn],
            )
        )
        self.firehose_role.add_to_policy(
            iam.PolicyStatement(
                sid="StagingObjects",
                actions=["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                resources=[f"{bucket_arn}/{STAGING_PREFIX}*"],
            )
        )
        self.firehose_role.add_to_policy(
            iam.PolicyStatement(
                sid="ProjectKey",  # staging/backup objects (S3 SSE-KMS) and the delivery streams' own SSE
                actions=["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
                resources=[self.data.key.key_arn],
            )
        )
        self.firehose_role.add_to_policy(
            iam.PolicyStatement(
                sid="ErrorLogs",
                actions=["logs:PutLogEvents"],
                resources=[self.firehose_log_group.log_group_arn],
            )
        )
        self.grant_secret_read(self.firehose_role)

        self.predictions_stream = self._delivery_stream(
            "PredictionsDeliveryStream", "predictions", PREDICTION_LOG_TABLE, PREDICTION_LOG_COLUMNS
        )
        self.feedback_stream = self._delivery_stream(
            "FeedbackDeliveryStream", "feedback", FEEDBACK_TABLE, FEEDBACK_COLUMNS
        )
        self.predictions_stream_name = self.predictions_stream.ref
        self.predictions_stream_arn = self.predictions_stream.attr_arn
        self.feedback_stream_name = self.feedback_stream.ref
        self.feedback_stream_arn = self.feedback_stream.attr_arn

        acknowledge(
            self.firehose_role,
            f"AwsSolutions-IAM5[Resource::{self.data.export_name('StagingBucketArn')}/{STAGING_PREFIX}*]",
            "Firehose names its staging, error and backup objects itself; access is limited to the firehose/ prefix.",
        )

    def _delivery_stream(
        self, construct_id: str, name: str, table: str, columns: tuple[str, ...]
    ) -> firehose.CfnDeliveryStream:
        """A Direct PUT stream: S3 staging (GZIP, KMS) → COPY into ``table``; every source record also backed up."""
        F = firehose.CfnDeliveryStream
        key_arn = self.data.key.key_arn
        bucket_arn = self.data.staging_bucket_arn
        delivery_log = logs.LogStream(
            self,
            f"{construct_id}RedshiftLog",
            log_group=self.firehose_log_group,
            removal_policy=self._removal,
        )
        backup_log = logs.LogStream(
            self, f"{construct_id}BackupLog", log_group=self.firehose_log_group, removal_policy=self._removal
        )

        def s3_config(prefix: str, log_stream: logs.LogStream) -> F.S3DestinationConfigurationProperty:
            return F.S3DestinationConfigurationProperty(
                bucket_arn=bucket_arn,
                role_arn=self.firehose_role.role_arn,
                prefix=prefix,
                error_output_prefix=f"{STAGING_PREFIX}errors/{name}/",
                compression_format="GZIP",
                buffering_hints=F.BufferingHintsProperty(
                    interval_in_seconds=FIREHOSE_BUFFER_SECONDS, size_in_m_bs=FIREHOSE_BUFFER_MB
                ),
                encryption_configuration=F.EncryptionConfigurationProperty(
                    kms_encryption_config=F.KMSEncryptionConfigProperty(awskms_key_arn=key_arn)
                ),
                cloud_watch_logging_options=F.CloudWatchLoggingOptionsProperty(
                    enabled=True,
                    log_group_name=self.firehose_log_group.log_group_name,
                    log_stream_name=log_stream.log_stream_name,
                ),
            )

        stream = F(
            self,
            construct_id,
            delivery_stream_type="DirectPut",
            delivery_stream_encryption_configuration_input=F.DeliveryStreamEncryptionConfigurationInputProperty(
                key_type="CUSTOMER_MANAGED_CMK", key_arn=key_arn
            ),
            redshift_destination_configuration=F.RedshiftDestinationConfigurationProperty(
                cluster_jdbcurl=f"jdbc:redshift://{self.endpoint_address}:{REDSHIFT_PORT}/{self.database_name}",
                role_arn=self.firehose_role.role_arn,
                copy_command=F.CopyCommandProperty(
                    data_table_name=table, data_table_columns=",".join(columns), copy_options=COPY_OPTIONS
                ),
                secrets_manager_configuration=F.SecretsManagerConfigurationProperty(
                    enabled=True, secret_arn=self.secret.secret_arn, role_arn=self.firehose_role.role_arn
                ),
                retry_options=F.RedshiftRetryOptionsProperty(duration_in_seconds=FIREHOSE_RETRY_SECONDS),
                s3_configuration=s3_config(f"{STAGING_PREFIX}{name}/", delivery_log),
                s3_backup_mode="Enabled",
                s3_backup_configuration=s3_config(f"{STAGING_PREFIX}backup/{name}/", backup_log),
                cloud_watch_logging_options=F.CloudWatchLoggingOptionsProperty(
                    enabled=True,
                    log_group_name=self.firehose_log_group.log_group_name,
                    log_stream_name=delivery_log.log_stream_name,
                ),
            ),
        )
        # The role's policy must exist before Firehose checks its access, and COPY needs the tables.
        stream.node.add_dependency(self.firehose_role.node.find_child("DefaultPolicy"))
        stream.node.add_dependency(self.setup_resource)
        return stream

    # ------------------------------------------------------------------------------------------ outputs
    def _outputs(self) -> None:
        CfnOutput(
            self, "PredictionsStream", value=self.predictions_stream_name, description="Prediction log stream"
        )
        CfnOutput(self, "FeedbackStream", value=self.feedback_stream_name, description="Feedback stream")
        if self.serverless:
            CfnOutput(
                self,
                "WarehouseWorkgroup",
                value=self.workgroup_name,
                description="Redshift Serverless workgroup",
            )
        else:
            CfnOutput(
                self, "WarehouseCluster", value=self.cluster_id, description="Redshift cluster identifier"
            )
        CfnOutput(self, "WarehouseDatabase", value=self.database_name, description="Warehouse database")
        CfnOutput(
            self, "WarehouseSecretArn", value=self.secret.secret_arn, description="Warehouse admin secret"
        )


def _allow_own_logs(role: iam.Role, fn: lambda_.Function) -> None:
    """Write access to the function's own log group only (instead of AWSLambdaBasicExecutionRole); also
    acknowledges cdk-nag's "latest runtime" rule (one runtime for the whole project, stacks/common.py)."""
    acknowledge(
        fn,
        "AwsSolutions-L1",
        f"The project pins one Lambda runtime ({fn.runtime.name}) for all functions in stacks/common.py, "
        "so that the handlers run on the Python version they are tested with.",
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="OwnLogGroup",
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[fn.log_group.log_group_arn],
        )
    )
