"""Data/artifacts stack: the project's KMS key and its S3 buckets (data, artifacts, staging, access logs)."""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.common import acknowledge
from stacks.config import Config

ABORT_MULTIPART_DAYS = 7
STAGING_EXPIRY_DAYS = 30
NONCURRENT_EXPIRY_DAYS = 90
ACCESS_LOG_EXPIRY_DAYS = 365


class DataStack(Stack):
    """The KMS key every encrypted resource of the project uses, and the buckets.

    - ``data_bucket``: training input and endpoint data capture (versioned).
    - ``artifacts_bucket``: pipeline outputs, model artifacts, evaluation reports (versioned).
    - ``staging_bucket``: Firehose staging objects and COPY-failure backups (expire after 30 days).
    - ``logs_bucket``: S3 server access logs of the other three (SSE-S3, as S3 access logging requires).

    ``data_bucket_arn``, ``artifacts_bucket_arn``, ``staging_bucket_arn`` are ``Fn::ImportValue`` tokens of
    exports named ``export_name("DataBucketArn")`` etc.: use them in other stacks' IAM policies, and
    ``export_name(...)`` in the cdk-nag acknowledgment of an object wildcard.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        removal = RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY
        auto_delete = not config.is_prod

        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{config.project_name}",
            description=f"{config.project_name}: buckets, logs, queues, streams and SageMaker volumes",
            enable_key_rotation=True,
            removal_policy=removal,
            pending_window=Duration.days(7) if not config.is_prod else Duration.days(30),
        )
        # CloudWatch Logs encrypts the project's log groups (Lambda, API Gateway access logs, VPC flow logs,
        # Firehose errors, SageMaker endpoints) with the key: allowed for this account's log groups only. This is
        # the only statement for the logs principal: an unconditioned grant (Key.grant_encrypt_decrypt to it)
        # would let any account's log group use the key (confused deputy).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsOfThisAccount",
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=[
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:DescribeKey",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"
                        )
                    }
                },
            )
        )
        # CloudWatch alarms publish to the (key-encrypted) alarm topic of the monitoring stack.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToEncryptedTopics",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )

        # EventBridge sends the events a rule target could not take to its (key-encrypted) dead-letter queue,
        # e.g. the monitoring schedule's: SQS encrypts them under the key with the queue's ARN as encryption
        # context, so the grant is limited to this account's queues. (Which rule may send to a queue is the
        # queue policy's business: CDK allows only the rule itself, by aws:SourceArn.)
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowEventBridgeToEncryptedQueuesOfThisAccount",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:sqs:arn": (
                            f"arn:{Aws.PARTITION}:sqs:{Aws.REGION}:{Aws.ACCOUNT_ID}:*"
                        )
                    }
                },
            )
        )

        self.logs_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=removal,
            auto_delete_objects=auto_delete,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    abort_incomplete_multipart_upload_after=Duration.days(ABORT_MULTIPART_DAYS),
                    expiration=Duration.days(ACCESS_LOG_EXPIRY_DAYS),
                )
            ],
        )
        acknowledge(
            self.logs_bucket,
            "AwsSolutions-S1",
            "This is the server access logs target bucket itself; logging it into itself would loop.",
        )

        self.data_bucket = self._bucket("Data", "data/", versioned=True, removal=removal)
        self.artifacts_bucket = self._bucket("Artifacts", "artifacts/", versioned=True, removal=removal)
        self.staging_bucket = self._bucket(
            "Staging",
            "staging/",
            versioned=False,
            removal=removal,
            expiration=Duration.days(STAGING_EXPIRY_DAYS),
        )

        CfnOutput(self, "DataBucket", value=self.data_bucket.bucket_name, description="Training data bucket")
        CfnOutput(
            self, "ArtifactsBucket", value=self.artifacts_bucket.bucket_name, description="Artifacts bucket"
        )
        CfnOutput(
            self,
            "StagingBucket",
            value=self.staging_bucket.bucket_name,
            description="Firehose staging bucket",
        )
        CfnOutput(self, "KeyArn", value=self.key.key_arn, description="Project KMS key")

        # Bucket ARNs for IAM policies of other stacks, exported under stable names so that the cdk-nag
        # acknowledgments of their object-level wildcards (``<arn>/prefix/*``) name them exactly.
        self.data_bucket_arn = self._export("DataBucketArn", self.data_bucket.bucket_arn)
        self.artifacts_bucket_arn = self._export("ArtifactsBucketArn", self.artifacts_bucket.bucket_arn)
        self.staging_bucket_arn = self._export("StagingBucketArn", self.staging_bucket.bucket_arn)

    def export_name(self, name: str) -> str:
        """The CloudFormation export name of one of this stack's exported values."""
        return f"{self.stack_name}-{name}"

    def _export(self, name: str, value: str) -> str:
        return self.export_value(value, name=self.export_name(name))

    def _bucket(
        self,
        construct_id: str,
        log_prefix: str,
        *,
        versioned: bool,
        removal: RemovalPolicy,
        expiration: Duration | None = None,
    ) -> s3.Bucket:
        """A TLS-only, KMS-encrypted, access-logged, private bucket with the project's lifecycle rules."""
        rules = [
            s3.LifecycleRule(
                id="AbortIncompleteUploads",
                abort_incomplete_multipart_upload_after=Duration.days(ABORT_MULTIPART_DAYS),
            )
        ]
        if versioned:
            rules.append(
                s3.LifecycleRule(
                    id="ExpireNoncurrentVersions",
                    noncurrent_version_expiration=Duration.days(NONCURRENT_EXPIRY_DAYS),
                    expired_object_delete_marker=True,
                )
            )
        if expiration is not None:
            rules.append(s3.LifecycleRule(id="ExpireObjects", expiration=expiration))
        return s3.Bucket(
            self,
            construct_id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            server_access_logs_bucket=self.logs_bucket,
            server_access_logs_prefix=log_prefix,
            lifecycle_rules=rules,
            removal_policy=removal,
            auto_delete_objects=removal == RemovalPolicy.DESTROY,
        )
