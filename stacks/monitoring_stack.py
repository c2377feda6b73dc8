"""Monitoring stack: the alarm topic, the dashboard, the alarms and the scheduled prediction-monitoring job.

Variants come and go after deployment (the release controller owns them; each is ``v{version}``), so nothing
here names a variant:

- the dashboard uses metric SEARCH expressions on the ``VariantName`` dimension, so a variant created after
  deploy appears on its own;
- CloudWatch alarms cannot use SEARCH, and SageMaker publishes its endpoint metrics only per
  ``EndpointName`` + ``VariantName`` (there is no endpoint-level series to do metric math on). The endpoint
  alarms are therefore CloudWatch Metrics Insights queries (``SELECT ... FROM SCHEMA(...) WHERE
  EndpointName = '...'``), which alarms do support and which aggregate over every variant present:

  * ``{project}-endpoint-5xx``: ``AVG(Invocation5XXErrors)``. SageMaker emits 1 for each 5XX answer and 0
    otherwise, so the average is the 5XX rate over all variants; threshold ``error_rate_alarm``.
  * ``{project}-endpoint-latency-p99``: Metrics Insights has no percentiles, so the alarm watches
    ``MAX(ModelLatency)`` (microseconds) against ``latency_p99_alarm_ms * 1000``, breaching only when 3 of 3
    five-minute periods exceed it. The maximum is an upper bound of p99: whenever p99 is over the limit the
    alarm fires; it may also fire on sustained outliers below p99. The dashboard shows the real p50/p99.

  The release controller passes these two names to SageMaker deployment guardrails (auto-rollback).
- the drift alarms are Metrics Insights ``MAX(ScorePSI)`` (``{project}-prediction-drift``, threshold
  ``drift_psi_threshold``) and ``MAX(FeaturePSI)`` (``{project}-feature-drift``, threshold
  ``feature_psi_threshold``) over every variant and model version of the endpoint. The job publishes no PSI
  for a variant with fewer than ``drift_min_predictions`` predictions in its window, and missing data does
  not breach. Metrics Insights alarms only see the last 3 hours of data, so their period is the monitoring
  interval capped at 3 hours: with a longer interval, a drift alarm returns to OK 3 hours after the run
  that raised it (the notification has been sent by then).
- a failed job must not look like "no drift": the drift alarms cannot tell a run that published nothing from
  a run that never happened, so the job has alarms of its own. ``{project}-monitor-errors``: the function's
  ``Errors`` (Sum >= 1) in 2 consecutive periods of the monitoring interval, i.e. the job failing run after
  run (Lambda retries a failed run twice, every attempt counts). ``{project}-monitor-dlq-not-empty``: the
  job's failure queue holds an event: EventBridge could not invoke the function (2 retries, then the rule
  target's dead-letter queue) or a run failed all three attempts (the function's on-failure destination, the
  same queue). The queue is KMS-encrypted with the project key and TLS-only, like the release controller's.
- the job's counts (``RequestCount``, ``LabelledCount``) are gauges of its window (each run re-reads the
  last ``monitoring_interval_minutes``, and ``trainserve monitor run`` adds runs): the dashboard plots their
  Maximum, never their Sum, which would count the same predictions once per run.

The local cloud creates the drift and endpoint-5XX alarms with the same names and definitions
(``trainserve.local.resources.local_alarms``; a stack test keeps them equal) and sets their state itself.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.common import acknowledge, python_function
from stacks.config import Config
from stacks.constructs.lambda_access import fail_to_queue, function_role, nag_arn
from stacks.training_stack import grant_evaluation_file, sagemaker_arn

PREDICTIONS_NAMESPACE = "Trainserve/Predictions"
PROXY_NAMESPACE = "Trainserve/Proxy"
PREDICTION_METRICS = (
    "RequestCount",
    "PositiveRate",
    "ScorePSI",
    "FeaturePSI",
    "OnlineAccuracy",
    "LabelledCount",
)
# The job's counts are gauges of its window (see the module docstring): plotted with their Maximum.
PREDICTION_STATS = {"RequestCount": "Maximum", "LabelledCount": "Maximum"}
DASHBOARD_PERIOD = Duration.minutes(5)
ALARM_PERIOD = Duration.minutes(5)
METRICS_INSIGHTS_MAX_MINUTES = 180
QUERY_TIMEOUT_SECONDS = 120
# The monitoring job's delivery: EventBridge retries an invocation it could not make, Lambda a run that failed,
# each twice; an event older than one monitoring interval (at most Lambda's 6 hours) is not run late (the next
# run reads the window again) but goes to the failure queue.
MONITOR_RETRY_ATTEMPTS = 2
MONITOR_MAX_EVENT_AGE_MINUTES = 360
MONITOR_ERROR_PERIODS = 2
FAILURE_RETENTION = Duration.days(14)


def search(
    namespace: str, dimensions: tuple[str, ...], endpoint_name: str, metric_name: str, stat: str
) -> str:
    """A metric SEARCH expression over every series of ``metric_name`` for the endpoint (one per variant)."""
    schema = ",".join((namespace, *dimensions))
    return (
        f'SEARCH(\'{{{schema}}} EndpointName="{endpoint_name}" MetricName="{metric_name}"\', '
        f"'{stat}', {int(DASHBOARD_PERIOD.to_seconds())})"
    )


def insights(
    function: str, metric_name: str, namespace: str, dimensions: tuple[str, ...], endpoint: str
) -> str:
    """A Metrics Insights query aggregating ``metric_name`` over every series of the endpoint."""
    schema = ", ".join((f'"{namespace}"', *dimensions))
    return f"SELECT {function}({metric_name}) FROM SCHEMA({schema}) WHERE EndpointName = '{endpoint}'"


SAGEMAKER_DIMS = ("EndpointName", "VariantName")
PREDICTION_DIMS = ("EndpointName", "ModelVersion", "VariantName")


class MonitoringStack(Stack):
    """SNS alarm topic, CloudWatch dashboard and alarms, and the scheduled prediction-monitoring Lambda.

    Attributes: ``topic``, ``dashboard``, ``monitor_function``, ``schedule`` (events.Rule), ``monitor_dlq``
    (the job's failure queue), ``alarms`` (dict: short name → Alarm), ``endpoint_5xx_alarm``,
    ``endpoint_latency_alarm`` (names ``{project}-endpoint-5xx`` and ``{project}-endpoint-latency-p99``).

    Outputs: ``MonitorFunction``, ``AlarmTopicArn``, ``DashboardName``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Config,
        data: Any,
        serving: Any,
        warehouse: Any,
        **kwargs,
    ) -> None:
        kwargs.setdefault(
            "description", f"{config.project_name}: dashboard, alarms and prediction monitoring"
        )
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.data = data
        self.serving = serving
        self.warehouse = warehouse
        self.endpoint_name = serving.endpoint_name
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        self._topic()
        self._dashboard()
        self._alarms()
        self._monitor_job()
        self._monitor_job_alarms()

        CfnOutput(
            self, "MonitorFunction", value=self.monitor_function.function_name, description="Monitoring job"
        )
        CfnOutput(self, "AlarmTopicArn", value=self.topic.topic_arn, description="Alarm notifications")
        CfnOutput(
            self, "DashboardName", value=self.dashboard.dashboard_name, description="CloudWatch dashboard"
        )

    # -------------------------------------------------------------------------------------------- topic
    def _topic(self) -> None:
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"{self.config.project_name} alarms",
            master_key=self.data.key,
            enforce_ssl=True,
        )
        if self.config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(self.config.alarm_email))

    # ---------------------------------------------------------------------------------------- dashboard
    def _search_graph(
        self,
        title: str,
        namespace: str,
        dimensions: tuple[str, ...],
        metrics: list[tuple[str, str]],
        width: int = 8,
    ) -> cloudwatch.GraphWidget:
        """A graph of SEARCH expressions, one per (metric name, statistic): one line per variant."""
        lines = [
            cloudwatch.MathExpression(
                expression=search(namespace, dimensions, self.endpoint_name, name, stat),
                using_metrics={},
                # One line per variant: a dynamic label naming it when a graph has several statistics.
                label=f"${{PROP('Dim.VariantName')}} {name} {stat}" if len(metrics) > 1 else "",
                period=DASHBOARD_PERIOD,
            )
            for name, stat in metrics
        ]
        return cloudwatch.GraphWidget(title=title, left=lines, width=width, height=6)

    def _firehose_metric(
        self, stream_name: str, metric_name: str, statistic: str, label: str
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/Firehose",
            metric_name=metric_name,
            dimensions_map={"DeliveryStreamName": stream_name},
            statistic=statistic,
            period=DASHBOARD_PERIOD,
            label=label,
        )

    def _dashboard(self) -> None:
        sm, ep = "AWS/SageMaker", "/aws/sagemaker/Endpoints"
        proxy = self.serving.proxy_function
        streams = (
            ("predictions", self.warehouse.predictions_stream_name),
            ("feedback", self.warehouse.feedback_stream_name),
        )
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            default_interval=Duration.hours(3),
            period_override=cloudwatch.PeriodOverride.AUTO,
        )
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown=(
                    f"# {self.config.project_name}: endpoint `{self.endpoint_name}`\n"
                    "One line per production variant (`v<model version>`); variants added after deployment "
                    "appear on their own (metric SEARCH)."
                ),
                width=24,
                height=2,
            )
        )
        self.dashboard.add_widgets(
            self._search_graph("Invocations", sm, SAGEMAKER_DIMS, [("Invocations", "Sum")]),
            self._search_graph("4XX errors", sm, SAGEMAKER_DIMS, [("Invocation4XXErrors", "Sum")]),
            self._search_graph("5XX errors", sm, SAGEMAKER_DIMS, [("Invocation5XXErrors", "Sum")]),
        )
        self.dashboard.add_widgets(
            self._search_graph(
                "ModelLatency (µs)",
                sm,
                SAGEMAKER_DIMS,
                [("ModelLatency", "p50"), ("ModelLatency", "p99")],
                12,
            ),
            self._search_graph(
                "OverheadLatency (µs)",
                sm,
                SAGEMAKER_DIMS,
                [("OverheadLatency", "p50"), ("OverheadLatency", "p99")],
                12,
            ),
        )
        self.dashboard.add_widgets(
            self._search_graph("CPUUtilization (%)", ep, SAGEMAKER_DIMS, [("CPUUtilization", "Average")], 12),
            self._search_graph(
                "MemoryUtilization (%)", ep, SAGEMAKER_DIMS, [("MemoryUtilization", "Average")], 12
            ),
        )
        window = self.config.monitoring_interval_minutes
        titles = {
            "RequestCount": f"RequestCount (predictions in the last {window} min, per run)",
            "LabelledCount": f"LabelledCount (outcomes in the last {window} min, per run)",
            "FeaturePSI": "FeaturePSI (largest per-feature PSI)",
        }
        prediction_graphs = [
            self._search_graph(
                titles.get(name, name),
                PREDICTIONS_NAMESPACE,
                PREDICTION_DIMS,
                [(name, PREDICTION_STATS.get(name, "Average"))],
                6,
            )
            for name in PREDICTION_METRICS
        ]
        self.dashboard.add_widgets(*prediction_graphs[:4])
        self.dashboard.add_widgets(
            *prediction_graphs[4:],
            cloudwatch.GraphWidget(
                title="Proxy: undelivered log records",
                left=[
                    cloudwatch.Metric(
                        namespace=PROXY_NAMESPACE,
                        metric_name="UndeliveredLogRecords",
                        dimensions_map={"DeliveryStream": name},
                        statistic="Sum",
                        period=DASHBOARD_PERIOD,
                        label=label,
                    )
                    for label, name in streams
                ],
                width=8,
                height=6,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Proxy Lambda: errors and throttles",
                left=[
                    proxy.metric_errors(period=DASHBOARD_PERIOD, statistic="Sum", label="Errors"),
                    proxy.metric_throttles(period=DASHBOARD_PERIOD, statistic="Sum", label="Throttles"),
                ],
                width=8,
                height=6,
            ),
            cloudwatch.GraphWidget(
                title="Firehose → Redshift: COPY success",
                left=[
                    self._firehose_metric(n, "DeliveryToRedshift.Success", "Average", f"{label} Redshift")
                    for label, n in streams
                ]
                + [
                    self._firehose_metric(n, "DeliveryToS3.Success", "Average", f"{label} S3")
                    for label, n in streams
                ],
                width=8,
                height=6,
            ),
            cloudwatch.GraphWidget(
                title="Firehose: records and staging freshness (s)",
                left=[
                    self._firehose_metric(n, "DeliveryToRedshift.Records", "Sum", f"{label} records")
                    for label, n in streams
                ],
                right=[
                    self._firehose_metric(n, "DeliveryToS3.DataFreshness", "Maximum", f"{label} freshness")
                    for label, n in streams
                ],
                width=8,
                height=6,
            ),
        )

    # ------------------------------------------------------------------------------------------- alarms
    def _alarm(self, key: str, name: str, description: str, **props: Any) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            f"{key}Alarm",
            alarm_name=name,
            alarm_description=description,
            **props,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        self.alarms[key] = alarm
        return alarm

    def _alarms(self) -> None:
        cfg, project, endpoint = self.config, self.config.project_name, self.endpoint_name
        gt = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        not_breaching = cloudwatch.TreatMissingData.NOT_BREACHING

        self.endpoint_5xx_alarm = self._alarm(
            "Endpoint5xx",
            f"{project}-endpoint-5xx",
            f"5XX rate of {endpoint} over all variants above {cfg.error_rate_alarm} (deployment guardrail)",
            metric=cloudwatch.MathExpression(
                expression=insights("AVG", "Invocation5XXErrors", "AWS/SageMaker", SAGEMAKER_DIMS, endpoint),
                using_metrics={},
                label="5XX rate",
                period=ALARM_PERIOD,
            ),
            threshold=cfg.error_rate_alarm,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            comparison_operator=gt,
            treat_missing_data=not_breaching,
        )
        self.endpoint_latency_alarm = self._alarm(
            "EndpointLatency",
            f"{project}-endpoint-latency-p99",
            f"ModelLatency of {endpoint} above {cfg.latency_p99_alarm_ms} ms in 3 consecutive periods "
            "(slowest request over all variants, an upper bound of p99; deployment guardrail)",
            metric=cloudwatch.MathExpression(
                expression=insights("MAX", "ModelLatency", "AWS/SageMaker", SAGEMAKER_DIMS, endpoint),
                using_metrics={},
                label="ModelLatency max (µs)",
                period=ALARM_PERIOD,
            ),
            threshold=cfg.latency_p99_alarm_ms * 1000,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            comparison_operator=gt,
            treat_missing_data=not_breaching,
        )
        proxy = self.serving.proxy_function
        self._alarm(
            "ProxyErrors",
            f"{project}-proxy-errors",
            f"Prediction proxy Lambda error rate above {cfg.error_rate_alarm}",
            metric=cloudwatch.MathExpression(
                expression="IF(invocations > 0, errors / invocations, 0)",
                using_metrics={
                    "errors": proxy.metric_errors(period=ALARM_PERIOD, statistic="Sum"),
                    "invocations": proxy.metric_invocations(period=ALARM_PERIOD, statistic="Sum"),
                },
                label="proxy error rate",
                period=ALARM_PERIOD,
            ),
            threshold=cfg.error_rate_alarm,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            comparison_operator=gt,
            treat_missing_data=not_breaching,
        )
        for label, stream in (
            ("Predictions", self.warehouse.predictions_stream_name),
            ("Feedback", self.warehouse.feedback_stream_name),
        ):
            self._alarm(
                f"Firehose{label}Redshift",
                f"{project}-firehose-{label.lower()}-redshift",
                f"Firehose {label.lower()} stream: a COPY into Redshift failed (DeliveryToRedshift.Success < 1); "
                "records are retried, then left in the staging bucket's firehose/errors/ prefix",
                metric=cloudwatch.Metric(
                    namespace="AWS/Firehose",
                    metric_name="DeliveryToRedshift.Success",
                    dimensions_map={"DeliveryStreamName": stream},
                    statistic="Minimum",
                    period=ALARM_PERIOD,
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                treat_missing_data=not_breaching,
            )
        self._alarm(
            "UndeliveredLogRecords",
            f"{project}-undelivered-log-records",
            "The proxy could not deliver prediction/feedback records to Firehose; they are in its log (replayable)",
            metric=cloudwatch.MathExpression(
                expression="FILL(predictions, 0) + FILL(feedback, 0)",
                using_metrics={
                    label: cloudwatch.Metric(
                        namespace=PROXY_NAMESPACE,
                        metric_name="UndeliveredLogRecords",
                        dimensions_map={"DeliveryStream": stream},
                        statistic="Sum",
                        period=ALARM_PERIOD,
                    )
                    for label, stream in (
                        ("predictions", self.warehouse.predictions_stream_name),
                        ("feedback", self.warehouse.feedback_stream_name),
                    )
                },
                label="undelivered records",
                period=ALARM_PERIOD,
            ),
            threshold=0,
            evaluation_periods=1,
            comparison_operator=gt,
            treat_missing_data=not_breaching,
        )
        self._alarm(
            "ReleaseDlq",
            f"{project}-release-dlq-not-empty",
            "The release controller's on-failure queue holds an approval/rejection it could not apply",
            metric=self.serving.release_dlq.metric_approximate_number_of_messages_visible(
                period=ALARM_PERIOD, statistic="Maximum"
            ),
            threshold=0,
            evaluation_periods=1,
            comparison_operator=gt,
            treat_missing_data=not_breaching,
        )
        drift_minutes = min(cfg.monitoring_interval_minutes, METRICS_INSIGHTS_MAX_MINUTES)
        at_least = f"(variants with at least {cfg.drift_min_predictions} predictions in the job's window)"
        for key, name, metric, threshold, what in (
            ("Drift", "prediction-drift", "ScorePSI", cfg.drift_psi_threshold, "Score PSI"),
            ("FeatureDrift", "feature-drift", "FeaturePSI", cfg.feature_psi_threshold, "Largest feature PSI"),
        ):
            self._alarm(
                key,
                f"{project}-{name}",
                f"{what} of a live model version against its training baseline above {threshold} {at_least}",
                metric=cloudwatch.MathExpression(
                    expression=insights("MAX", metric, PREDICTIONS_NAMESPACE, PREDICTION_DIMS, endpoint),
                    using_metrics={},
                    label=f"max {metric}",
                    period=Duration.minutes(drift_minutes),
                ),
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=gt,
                treat_missing_data=not_breaching,
            )

    # -------------------------------------------------------------------------------------- monitor job
    def _monitor_job(self) -> None:
        cfg, warehouse = self.config, self.warehouse
        group = cfg.model_package_group_name
        role = function_role(self, "MonitorRole", config=cfg, what="prediction-monitoring")
        self.monitor_function = python_function(
            self,
            "Monitor",
            config=cfg,
            code_dir="monitor",
            handler="monitor_handler.handler",
            description="Per-variant drift (score and feature PSI), positive rate and online accuracy to CloudWatch",
            environment={
                "ENDPOINT_NAME": self.endpoint_name,
                "MODEL_PACKAGE_GROUP": group,
                **warehouse.warehouse_environment(),
                "WINDOW_MINUTES": str(cfg.monitoring_interval_minutes),
                "DRIFT_MIN_PREDICTIONS": str(cfg.drift_min_predictions),
                "METRIC_NAMESPACE": PREDICTIONS_NAMESPACE,
                "QUERY_TIMEOUT_SECONDS": str(QUERY_TIMEOUT_SECONDS),
            },
            timeout=Duration.minutes(5),
            key=self.data.key,
            role=role,
        )
        acknowledge(
            self.monitor_function,
            "AwsSolutions-L1",
            f"The project pins one Lambda runtime ({self.monitor_function.runtime.name}) for all functions in "
            "stacks/common.py, so that the handlers run on the Python version they are tested with.",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnLogGroup",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.monitor_function.log_group.log_group_arn],
            )
        )
        warehouse.grant_data_api(role)
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PublishPredictionMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": PREDICTIONS_NAMESPACE}},
            )
        )
        group_arn = sagemaker_arn(f"model-package-group/{group}")
        packages_arn = sagemaker_arn(f"model-package/{group}/*")
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadRegistry",
                actions=["sagemaker:DescribeModelPackageGroup", "sagemaker:DescribeModelPackage"],
                resources=[group_arn, packages_arn],
            )
        )
        # a registered version's baseline_uri: baseline.json in the Evaluate step's output, under the pipeline
        # execution's own prefix (training/pipeline_definition.py); only those objects
        grant_evaluation_file(role, self.data, "baseline.json", "Baselines")
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:PutMetricData has no resource type (limited here by the cloudwatch:namespace condition); "
            "redshift-data statement calls are limited by AWS to the caller's own statements; X-Ray has none.",
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{nag_arn(packages_arn)}]",
            "Model package versions are numbered by SageMaker at registration; the ARN is scoped to this group.",
        )

        self.monitor_dlq = sqs.Queue(
            self,
            "MonitorFailures",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.data.key,
            enforce_ssl=True,
            retention_period=FAILURE_RETENTION,
        )
        acknowledge(
            self.monitor_dlq,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter queue of the monitoring schedule's target and the on-failure "
            "destination of the monitoring Lambda.",
        )
        max_event_age = Duration.minutes(min(cfg.monitoring_interval_minutes, MONITOR_MAX_EVENT_AGE_MINUTES))
        fail_to_queue(
            self.monitor_function,
            role,
            self.monitor_dlq,
            retry_attempts=MONITOR_RETRY_ATTEMPTS,
            max_event_age=max_event_age,
            sends="failed runs to the KMS-encrypted failure queue",
        )
        self.schedule = events.Rule(
            self,
            "MonitorSchedule",
            description=f"Runs the prediction-monitoring job every {cfg.monitoring_interval_minutes} minutes",
            schedule=events.Schedule.rate(Duration.minutes(cfg.monitoring_interval_minutes)),
            targets=[
                targets.LambdaFunction(
                    self.monitor_function,
                    retry_attempts=MONITOR_RETRY_ATTEMPTS,
                    max_event_age=max_event_age,
                    dead_letter_queue=self.monitor_dlq,
                )
            ],
        )

    def _monitor_job_alarms(self) -> None:
        """The job's own failures (see the module docstring): the drift alarms treat missing data as not
        breaching, so without these a broken job would simply stop drift alerting."""
        cfg, project = self.config, self.config.project_name
        interval = cfg.monitoring_interval_minutes
        self._alarm(
            "MonitorErrors",
            f"{project}-monitor-errors",
            f"The prediction-monitoring Lambda failed in {MONITOR_ERROR_PERIODS} consecutive {interval}-minute "
            "periods (one run each): no drift, positive-rate or accuracy metrics, and the drift alarms stay quiet",
            metric=self.monitor_function.metric_errors(period=Duration.minutes(interval), statistic="Sum"),
            threshold=1,
            evaluation_periods=MONITOR_ERROR_PERIODS,
            datapoints_to_alarm=MONITOR_ERROR_PERIODS,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            # no invocation, no datapoint: a run that never happened is the failure queue's alarm
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._alarm(
            "MonitorDlq",
            f"{project}-monitor-dlq-not-empty",
            "The prediction-monitoring job's failure queue holds a run that EventBridge could not invoke or that "
            "failed all its attempts",
            metric=self.monitor_dlq.metric_approximate_number_of_messages_visible(
                period=ALARM_PERIOD, statistic="Maximum"
            ),
            threshold=0,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
