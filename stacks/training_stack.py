"""Training stack: the model registry (Model Package Group) and the SageMaker training pipeline.

The pipeline definition is built by ``training/pipeline_definition.py`` (plain Python, the single source of
truth the local training runner also executes) and embedded here as ``PipelineDefinitionBody``; the scripts
and source directories it runs are shipped as CDK file assets.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from aws_cdk import Aws, CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from stacks.common import PROJECT_ROOT, acknowledge
from stacks.config import Config
from stacks.data_stack import DataStack
from stacks.image_uris import sklearn_image_uri, sklearn_repository_arn
from training.packaging import make_sourcedir_tarball
from training.pipeline_definition import build_pipeline_definition

TRAINING_DIR = PROJECT_ROOT / "training"
INFERENCE_DIR = PROJECT_ROOT / "inference"
INPUT_DATA_PREFIX = "input/"
PIPELINE_OUTPUT_PREFIX = "pipeline"
DATA_CAPTURE_PREFIX = "data-capture/"
SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
# Where the Evaluate step's output "evaluation" lands under an execution's prefix (training/pipeline_definition.py:
# <artifacts_s3_prefix>/<execution id>/<step>/<output>): evaluation.json, baseline.json and features.json.
EVALUATION_OUTPUT = "Evaluate/evaluation"


def evaluation_objects_arn(artifacts_bucket_arn: str, file_name: str) -> str:
    """The ARN pattern of one file of every execution's Evaluate output (``baseline.json``, ``features.json``):
    ``<artifacts bucket>/pipeline/*/Evaluate/evaluation/<file_name>``, the execution id being the ``*``."""
    return f"{artifacts_bucket_arn}/{PIPELINE_OUTPUT_PREFIX}/*/{EVALUATION_OUTPUT}/{file_name}"


def grant_evaluation_file(role: iam.IRole, data: DataStack, file_name: str, what: str) -> None:
    """Let ``role`` read ``file_name`` of every execution's Evaluate output (``evaluation_objects_arn``) and
    decrypt it with the project key through S3 only (statements ``Read<what>`` and ``Decrypt<what>``), with
    the cdk-nag acknowledgment of the wildcard."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid=f"Read{what}",
            actions=["s3:GetObject"],
            resources=[evaluation_objects_arn(data.artifacts_bucket_arn, file_name)],
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid=f"Decrypt{what}",
            actions=["kms:Decrypt"],
            resources=[data.key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{Aws.REGION}.{Aws.URL_SUFFIX}"}},
        )
    )
    acknowledge(
        role,
        # cdk-nag names the imported bucket ARN by its export
        f"AwsSolutions-IAM5[Resource::{evaluation_objects_arn(data.export_name('ArtifactsBucketArn'), file_name)}]",
        f"{file_name} sits under the pipeline execution's prefix (pipeline/<execution id>/Evaluate/evaluation/), "
        "named at run time; read-only GetObject of those objects only.",
    )


def sagemaker_arn(resource: str) -> str:
    """``arn:<partition>:sagemaker:<region>:<account>:<resource>`` for this stack's deployment."""
    return f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


def sagemaker_service_principal() -> iam.ServicePrincipal:
    """SageMaker, only on behalf of this account's SageMaker resources in this region (confused deputy).

    The same source ARN pattern covers each way SageMaker assumes the project's roles: pipeline executions
    (``pipeline/<name>/*``), processing and training jobs (``processing-job/*``, ``training-job/*``) and
    real-time inference, whose template is literally ``arn:...:sagemaker:<region>:<account>:*``."""
    # AWS doc: SageMaker AI Developer Guide, "Cross-service confused deputy prevention" (Inference, Pipelines, ...)
    return iam.ServicePrincipal(
        SAGEMAKER_PRINCIPAL, conditions={"ArnLike": {"aws:SourceArn": sagemaker_arn("*")}}
    )


class TrainingStack(Stack):
    """Model Package Group ``{project}-models``, pipeline ``{project}-training`` and their IAM roles.

    Attributes: ``model_package_group`` (L1), ``model_package_group_name``, ``model_package_group_arn``,
    ``pipeline`` (L1), ``pipeline_name``, ``pipeline_arn``, ``pipeline_role`` (runs the pipeline and its jobs),
    ``model_execution_role`` (the role the endpoint's models run as), ``inference_image_uri``,
    ``inference_code`` (the inference source-dir asset the registered models point at), ``schedule``
    (``CfnSchedule`` or ``None``).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: Config, data: DataStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.data = data
        group_name = config.model_package_group_name
        self.model_package_group_name = group_name
        self.model_package_group_arn = sagemaker_arn(f"model-package-group/{group_name}")
        self.pipeline_name = f"{config.project_name}-training"
        self.pipeline_arn = sagemaker_arn(f"pipeline/{self.pipeline_name}")
        self.training_image_uri = sklearn_image_uri(self, config.sklearn_framework_version)
        self.inference_image_uri = self.training_image_uri
        self._repository_arn = sklearn_repository_arn(self, config.sklearn_framework_version)

        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self,
            "Registry",
            model_package_group_name=group_name,
            model_package_group_description=(
                f"{config.project_name}: models registered by the training pipeline (PendingManualApproval)"
            ),
        )
        # The registry is the audit trail of what was trained and approved, and costs nothing: it outlives
        # the stack (SageMaker would refuse to delete a group that still holds versions anyway).
        self.model_package_group.apply_removal_policy(RemovalPolicy.RETAIN)

        # Code assets: single-file scripts and deterministic source-dir tarballs (built at synth time).
        build_dir = Path(tempfile.mkdtemp(prefix="trainserve-sourcedir-"))
        atexit.register(
            shutil.rmtree, build_dir, ignore_errors=True
        )  # assets are staged into cdk.out by then
        self.preprocess_code = s3_assets.Asset(
            self, "PreprocessScript", path=str(TRAINING_DIR / "preprocess.py")
        )
        self.evaluate_code = s3_assets.Asset(self, "EvaluateScript", path=str(TRAINING_DIR / "evaluate.py"))
        self.train_code = s3_assets.Asset(
            self,
            "TrainSourceDir",
            path=str(make_sourcedir_tarball(TRAINING_DIR, build_dir / "train_sourcedir.tar.gz")),
        )
        self.inference_code = s3_assets.Asset(
            self,
            "InferenceSourceDir",
            path=str(make_sourcedir_tarball(INFERENCE_DIR, build_dir / "inference_sourcedir.tar.gz")),
        )
        code_assets = [self.preprocess_code, self.evaluate_code, self.train_code, self.inference_code]

        self.pipeline_role = iam.Role(
            self,
            "PipelineRole",
            assumed_by=sagemaker_service_principal(),
            description=f"{config.project_name}: runs the training pipeline and its processing/training jobs",
        )
        self.model_execution_role = iam.Role(
            self,
            "ModelExecutionRole",
            assumed_by=sagemaker_service_principal(),
            description=f"{config.project_name}: the role the endpoint's models run as",
        )
        self._grant_pipeline_role(code_assets)
        self._grant_model_execution_role()

        definition = build_pipeline_definition(
            role_arn=self.pipeline_role.role_arn,
            model_package_group_name=group_name,
            training_image_uri=self.training_image_uri,
            inference_image_uri=self.inference_image_uri,
            code={
                "preprocess": self.preprocess_code.s3_object_url,
                "evaluate": self.evaluate_code.s3_object_url,
                "train_sourcedir": self.train_code.s3_object_url,
                "inference_sourcedir": self.inference_code.s3_object_url,
            },
            artifacts_s3_prefix=f"s3://{data.artifacts_bucket.bucket_name}/{PIPELINE_OUTPUT_PREFIX}",
            kms_key_id=data.key.key_arn,
            defaults={
                "input_data_uri": f"s3://{data.data_bucket.bucket_name}/{INPUT_DATA_PREFIX}",
                "training_instance_type": config.training_instance_type,
                "processing_instance_type": config.processing_instance_type,
                "estimator": config.estimator,
                "quality_metric": config.quality_metric,
                "quality_threshold": config.quality_threshold,
                "decision_threshold": config.decision_threshold,
            },
        )
        self.pipeline = sagemaker.CfnPipeline(
            self,
            "Pipeline",
            pipeline_name=self.pipeline_name,
            pipeline_display_name=self.pipeline_name,
            pipeline_description=f"{config.project_name}: preprocess, train, evaluate, quality gate, register",
            role_arn=self.pipeline_role.role_arn,
            pipeline_definition={"PipelineDefinitionBody": Stack.of(self).to_json_string(definition)},
        )
        self.pipeline.add_resource_dependency(self.model_package_group)
        self.pipeline.node.add_dependency(self.pipeline_role)

        self.schedule = self._schedule() if config.training_schedule else None

        CfnOutput(self, "PipelineName", value=self.pipeline_name, description="SageMaker training pipeline")
        CfnOutput(self, "ModelPackageGroup", value=group_name, description="Model registry group")
        CfnOutput(
            self,
            "ModelExecutionRoleArn",
            value=self.model_execution_role.role_arn,
            description="Role the endpoint's models run as",
        )
        CfnOutput(self, "PipelineRoleArn", value=self.pipeline_role.role_arn, description="Pipeline role")

    # ---------------------------------------------------------------------------------------------- IAM
    def _grant_pipeline_role(self, code_assets: list[s3_assets.Asset]) -> None:
        role = self.pipeline_role
        data = self.data
        group = self.model_package_group_name
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PipelineJobs",
                actions=[
                    "sagemaker:CreateProcessingJob",
                    "sagemaker:DescribeProcessingJob",
                    "sagemaker:StopProcessingJob",
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:AddTags",
                ],
                resources=[
                    sagemaker_arn("processing-job/pipelines-*"),
                    sagemaker_arn("training-job/pipelines-*"),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="RegisterModel",
                actions=[
                    "sagemaker:CreateModelPackage",
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:DescribeModelPackageGroup",
                    "sagemaker:AddTags",
                ],
                resources=[self.model_package_group_arn, sagemaker_arn(f"model-package/{group}/*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PassOwnRoleToJobs",
                actions=["iam:PassRole"],
                resources=[role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER_PRINCIPAL}},
            )
        )
        # The steps read: the training input (InputData: any key of the data bucket), the code (CDK file assets,
        # ReadCodeAssets below) and each other's outputs, which every step writes under
        # pipeline/<execution id>/<step>/ of the artifacts bucket: nothing else of the artifacts bucket.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListBuckets",
                actions=["s3:ListBucket", "s3:GetBucketLocation"],
                resources=[data.data_bucket_arn, data.artifacts_bucket_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadInputData", actions=["s3:GetObject"], resources=[f"{data.data_bucket_arn}/*"]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadStepOutputs",
                actions=["s3:GetObject"],
                resources=[f"{data.artifacts_bucket_arn}/{PIPELINE_OUTPUT_PREFIX}/*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WritePipelineArtifacts",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[f"{data.artifacts_bucket_arn}/{PIPELINE_OUTPUT_PREFIX}/*"],
            )
        )
        self._acknowledge_objects(
            role,
            "DataBucketArn",
            "*",
            "The pipeline reads its training input (any key the InputData parameter names) from the data bucket.",
        )
        self._acknowledge_objects(
            role,
            "ArtifactsBucketArn",
            f"{PIPELINE_OUTPUT_PREFIX}/*",
            "Each step writes its outputs under pipeline/<execution id>/<step>/ (keys SageMaker generates per run) "
            "and reads the earlier steps' outputs there (the Preprocess splits, Train's model.tar.gz, Evaluate's "
            "evaluation.json); nothing else of the artifacts bucket.",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadCodeAssets",
                actions=["s3:GetObject"],
                resources=[a.bucket.arn_for_objects(a.s3_object_key) for a in code_assets],
            )
        )
        self._grant_common(role, log_group_prefix="/aws/sagemaker/")
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:processing-job/pipelines-*]",
            "SageMaker Pipelines names the jobs it starts pipelines-<execution>-<step>-<random>; the prefix is the "
            "narrowest ARN pattern that matches them.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:training-job/pipelines-*]",
            "SageMaker Pipelines names the jobs it starts pipelines-<execution>-<step>-<random>; the prefix is the "
            "narrowest ARN pattern that matches them.",
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/{group}/*]",
            "Model package versions are numbered by SageMaker at registration; the ARN is scoped to this group.",
        )

    def _grant_model_execution_role(self) -> None:
        role = self.model_execution_role
        data = self.data
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadModelArtifacts",
                actions=["s3:GetObject"],
                resources=[
                    f"{data.artifacts_bucket_arn}/{PIPELINE_OUTPUT_PREFIX}/*",
                    self.inference_code.bucket.arn_for_objects(self.inference_code.s3_object_key),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteDataCapture",
                actions=["s3:PutObject"],
                resources=[f"{data.data_bucket_arn}/{DATA_CAPTURE_PREFIX}*"],
            )
        )
        self._acknowledge_objects(
            role,
            "ArtifactsBucketArn",
            f"{PIPELINE_OUTPUT_PREFIX}/*",
            "Models load the model.tar.gz of whichever registered version they serve, written by the pipeline "
            "under pipeline/<execution id>/.",
        )
        self._acknowledge_objects(
            role,
            "DataBucketArn",
            f"{DATA_CAPTURE_PREFIX}*",
            "Endpoint data capture writes objects whose keys SageMaker generates under the data-capture/ prefix.",
        )
        self._grant_common(role, log_group_prefix="/aws/sagemaker/Endpoints/")

    def _acknowledge_objects(self, role: iam.Role, export: str, suffix: str, reason: str) -> None:
        """Acknowledge the cdk-nag wildcard finding of ``<imported bucket ARN>/<suffix>``."""
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{self.data.export_name(export)}/{suffix}]", reason)

    def _grant_common(self, role: iam.Role, *, log_group_prefix: str) -> None:
        """KMS on the project key, pulls of the scikit-learn image, logs and metrics of SageMaker."""
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ProjectKey",
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[self.data.key.key_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ProjectKeyGrantsForVolumes",
                actions=["kms:CreateGrant"],
                resources=[self.data.key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PullSklearnImage",
                actions=[
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                resources=[self._repository_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(sid="EcrAuthToken", actions=["ecr:GetAuthorizationToken"], resources=["*"])
        )
        logs_base = f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:{log_group_prefix}"
        role.add_to_policy(
            iam.PolicyStatement(
                sid="SageMakerLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[f"{logs_base}*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="SageMakerMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}},
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no resource-level permissions; "
            "PutMetricData is limited to SageMaker namespaces by a condition.",
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:{log_group_prefix}*]",
            "SageMaker writes to log groups and streams it names per job/endpoint under this prefix.",
        )

    # ------------------------------------------------------------------------------------------ schedule
    def _schedule(self) -> scheduler.CfnSchedule:
        role = iam.Role(
            self,
            "ScheduleRole",
            # AWS doc: "Confused deputy prevention in EventBridge Scheduler", EventBridge Scheduler User Guide
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
            description=f"{self.config.project_name}: lets EventBridge Scheduler start the training pipeline",
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["sagemaker:StartPipelineExecution"], resources=[self.pipeline_arn])
        )
        schedule = scheduler.CfnSchedule(
            self,
            "TrainingSchedule",
            description=f"{self.config.project_name}: starts the training pipeline",
            schedule_expression=self.config.training_schedule,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=self.pipeline_arn,
                role_arn=role.role_arn,
                sage_maker_pipeline_parameters=scheduler.CfnSchedule.SageMakerPipelineParametersProperty(),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_event_age_in_seconds=3600, maximum_retry_attempts=3
                ),
            ),
        )
        schedule.add_resource_dependency(self.pipeline)
        return schedule
