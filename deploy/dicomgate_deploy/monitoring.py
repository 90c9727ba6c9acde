"""Alarms (to an encrypted alarm topic) and a dashboard.

The node's own metrics are read with Metrics Insights queries over every node
(:mod:`dicomgate_deploy.metrics`); the platform's come from ECS Container Insights, the NLB and
EventBridge. What each alarm means and what to do about it: deploy/README.md, "Alarms".
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from dicomgate_deploy import metrics as m
from dicomgate_deploy.config import DeployConfig
from dicomgate_deploy.nag import acknowledge
from dicomgate_deploy.service import Service


@dataclass(frozen=True)
class AlarmInfo:
    """One alarm that pages (goes to the alarm topic)."""

    name: str
    alarm: cw.IAlarm


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        key: kms.IKey,
        service: Service,
    ) -> None:
        super().__init__(scope, construct_id)
        c = config
        a = c.alarms
        prefix = c.stack_name
        self.topic = sns.Topic(
            self, "Alarms", display_name="dicomgate alarms", master_key=key, enforce_ssl=True
        )
        for address in a.emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(address))
        action = cw_actions.SnsAction(self.topic)
        self.paging: list[AlarmInfo] = []

        def page(name: str, alarm: cw.IAlarm) -> None:
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
            self.paging.append(AlarmInfo(name, alarm))

        # 1. Instances arrive but no study is delivered. Two child alarms (a Metrics Insights
        #    query is one series per alarm) joined by a composite alarm, which is what pages.
        window = Duration.minutes(a.no_delivery_minutes)
        receiving = cw.Alarm(
            self,
            "Receiving",
            alarm_name=f"{prefix}-receiving",
            alarm_description="C-STORE requests arrived in each of the last two windows "
            "(input of the no-deliveries alarm; does not page by itself).",
            metric=m.query(m.CSTORE, "SUM", window),
            threshold=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        nothing_delivered = cw.Alarm(
            self,
            "NothingDelivered",
            alarm_name=f"{prefix}-nothing-delivered",
            alarm_description="No study was delivered in the last two windows (input of the "
            "no-deliveries alarm; does not page by itself).",
            metric=m.query(m.STUDIES_DELIVERED, "SUM", window),
            threshold=1,
            comparison_operator=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            treat_missing_data=cw.TreatMissingData.BREACHING,
        )
        for child in (receiving, nothing_delivered):
            acknowledge(
                child,
                "HIPAA.Security-CloudWatchAlarmAction",
                "An input of the no-deliveries composite alarm, which has the actions; each "
                "alone is normal (traffic, or a quiet night) and must not page.",
            )
        page(
            "no-deliveries",
            cw.CompositeAlarm(
                self,
                "NoDeliveries",
                composite_alarm_name=f"{prefix}-no-deliveries",
                alarm_description=f"Instances keep arriving but no study was delivered for "
                f"{2 * a.no_delivery_minutes} minutes. See deploy/README.md#alarms.",
                alarm_rule=cw.AlarmRule.all_of(
                    cw.AlarmRule.from_alarm(receiving, cw.AlarmState.ALARM),
                    cw.AlarmRule.from_alarm(nothing_delivered, cw.AlarmState.ALARM),
                ),
            ),
        )

        # 2. The oldest acknowledged, undelivered instance is too old.
        page(
            "backlog-age",
            cw.Alarm(
                self,
                "BacklogAge",
                alarm_name=f"{prefix}-backlog-age",
                alarm_description=f"An acknowledged instance has waited more than "
                f"{a.backlog_age_seconds} s for delivery (15 minutes running). "
                "See deploy/README.md#alarms.",
                metric=m.query(m.OLDEST_UNDELIVERED_AGE, "MAX", Duration.minutes(5)),
                threshold=a.backlog_age_seconds,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=3,
                datapoints_to_alarm=3,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        )

        # 3. Quarantines (every rule together) per hour.
        page(
            "quarantines",
            cw.Alarm(
                self,
                "Quarantines",
                alarm_name=f"{prefix}-quarantines",
                alarm_description=f"More than {a.quarantine_per_hour} instances were "
                "quarantined in an hour. See deploy/README.md#alarms.",
                metric=m.query(m.QUARANTINED, "SUM", Duration.hours(1)),
                threshold=a.quarantine_per_hour,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        )

        # 4. Upload failures: retried uploads (a failure that outlives retry_for becomes a
        #    quarantine, counted above) and notifications that failed.
        page(
            "upload-retries",
            cw.Alarm(
                self,
                "UploadRetries",
                alarm_name=f"{prefix}-upload-retries",
                alarm_description=f"More than {a.upload_retries} uploads to S3 failed and were "
                "retried in 15 minutes. See deploy/README.md#alarms.",
                metric=m.query(m.UPLOAD_RETRIES, "SUM", Duration.minutes(15)),
                threshold=a.upload_retries,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        )
        page(
            "notification-failures",
            cw.Alarm(
                self,
                "NotificationFailures",
                alarm_name=f"{prefix}-notification-failures",
                alarm_description="A study notification (SNS/SQS) failed in the last 15 "
                "minutes. See deploy/README.md#alarms.",
                metric=m.query(m.NOTIFICATION_FAILURES, "SUM", Duration.minutes(15)),
                threshold=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        )

        # 5. Unhealthy NLB targets, per listener port.
        for port, group in service.target_groups.items():
            page(
                f"unhealthy-targets-{port}",
                cw.Alarm(
                    self,
                    f"UnhealthyTargets{port}",
                    alarm_name=f"{prefix}-unhealthy-targets-{port}",
                    alarm_description=f"A task fails the NLB's TCP health check on {port} "
                    "(3 minutes running). See deploy/README.md#alarms.",
                    metric=group.metrics.un_healthy_host_count(
                        period=Duration.minutes(1), statistic="Maximum"
                    ),
                    threshold=1,
                    comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    evaluation_periods=3,
                    datapoints_to_alarm=3,
                    treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                ),
            )

        # 6. Fewer tasks running than desired (Container Insights), and tasks that stopped on
        #    their own (an essential container exited, or a task failed to start).
        dims = {
            "ClusterName": service.cluster.cluster_name,
            "ServiceName": service.service.service_name,
        }

        def insights(name: str) -> cw.Metric:
            return cw.Metric(
                namespace="ECS/ContainerInsights",
                metric_name=name,
                dimensions_map=dims,
                statistic="Average",
                period=Duration.minutes(1),
            )

        page(
            "tasks-below-desired",
            cw.Alarm(
                self,
                "TasksBelowDesired",
                alarm_name=f"{prefix}-tasks-below-desired",
                alarm_description="Fewer tasks running than desired for 5 minutes. "
                "See deploy/README.md#alarms.",
                metric=cw.MathExpression(
                    expression="desired - running",
                    using_metrics={
                        "desired": insights("DesiredTaskCount"),
                        "running": insights("RunningTaskCount"),
                    },
                    label="tasks missing",
                    period=Duration.minutes(1),
                ),
                threshold=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=5,
                datapoints_to_alarm=5,
                treat_missing_data=cw.TreatMissingData.BREACHING,
            ),
        )
        # EventBridge counts the events each rule matches (AWS/Events MatchedEvents), which
        # needs no target: the rule exists to be counted.
        self.stopped_rule = events.Rule(
            self,
            "TaskStopped",
            description="dicomgate: a task stopped on its own (exit, crash, failed start)",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={
                    "clusterArn": [service.cluster.cluster_arn],
                    "lastStatus": ["STOPPED"],
                    "stopCode": ["EssentialContainerExited", "TaskFailedToStart"],
                },
            ),
        )
        page(
            "task-restarts",
            cw.Alarm(
                self,
                "TaskRestarts",
                alarm_name=f"{prefix}-task-restarts",
                alarm_description="A task stopped on its own (its container exited or it failed "
                "to start) and ECS replaced it. See deploy/README.md#alarms.",
                metric=cw.Metric(
                    namespace="AWS/Events",
                    metric_name="MatchedEvents",
                    dimensions_map={"RuleName": self.stopped_rule.rule_name},
                    statistic="Sum",
                    period=Duration.minutes(5),
                ),
                threshold=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        )

        # -- dashboard ------------------------------------------------------------------------
        five = Duration.minutes(5)
        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{prefix}-dicomgate",
            default_interval=Duration.hours(6),
        )
        self.dashboard.add_widgets(
            cw.AlarmStatusWidget(
                title="Alarms", alarms=[i.alarm for i in self.paging], width=24, height=4
            )
        )
        self.dashboard.add_widgets(
            _graph(
                "Associations",
                [
                    m.query(m.ASSOCIATIONS_ACCEPTED, "SUM", five, label="accepted"),
                    m.query(m.ASSOCIATIONS_REJECTED, "SUM", five, label="rejected"),
                ],
            ),
            _graph("C-STORE by status", [m.query(m.CSTORE, "SUM", five, group_by="Status")]),
            _graph("Studies delivered", [m.query(m.STUDIES_DELIVERED, "SUM", five)]),
        )
        self.dashboard.add_widgets(
            _graph(
                "Backlog (instances acknowledged, not yet delivered)",
                # every node reports the whole store's backlog: the maximum is the deployment's
                [m.query(m.BACKLOG, "MAX", Duration.minutes(1), label="backlog")],
            ),
            _graph(
                "Oldest undelivered instance (s)",
                [
                    m.query(m.OLDEST_UNDELIVERED_AGE, "MAX", Duration.minutes(1)),
                ],
            ),
            _graph(
                "Quarantined by rule",
                [
                    m.query(m.QUARANTINED, "SUM", five, group_by="Rule"),
                ],
            ),
        )
        self.dashboard.add_widgets(
            _graph(
                "Upload retries, notification failures",
                [
                    m.query(m.UPLOAD_RETRIES, "SUM", five, label="upload retries"),
                    m.query(m.NOTIFICATION_FAILURES, "SUM", five, label="notification failures"),
                ],
            ),
            _graph("Tasks", [insights("RunningTaskCount"), insights("DesiredTaskCount")]),
            _graph(
                "CPU and memory (%)",
                [
                    service.service.metric_cpu_utilization(period=Duration.minutes(1)),
                    service.service.metric_memory_utilization(period=Duration.minutes(1)),
                ],
            ),
        )
        self.dashboard.add_widgets(
            *[
                _graph(
                    f"NLB targets on {port}",
                    [
                        group.metrics.healthy_host_count(period=Duration.minutes(1)),
                        group.metrics.un_healthy_host_count(period=Duration.minutes(1)),
                    ],
                )
                for port, group in service.target_groups.items()
            ],
            _graph(
                "NLB flows",
                [
                    service.nlb.metrics.active_flow_count(period=Duration.minutes(1)),
                    service.nlb.metrics.new_flow_count(period=Duration.minutes(1)),
                ],
            ),
        )


def _graph(title: str, series: list[cw.IMetric]) -> cw.GraphWidget:
    return cw.GraphWidget(title=title, left=series, width=8, height=6)
