"""Alarms on the node's EMF metrics and the platform's, the alarm topic and the dashboard."""

from __future__ import annotations

import json
import re
from typing import Any

from dicomgate_deploy import metrics
from dicomgate_deploy.config import REPO_ROOT
from tests.conftest import Synth

PAGING = {
    "no-deliveries",
    "backlog-age",
    "quarantines",
    "upload-retries",
    "notification-failures",
    "unhealthy-targets-11112",
    "tasks-below-desired",
    "task-restarts",
}


def _alarms(s: Synth) -> dict[str, dict[str, Any]]:
    """Alarms by name (without the stack prefix), composite included."""
    prefix = s.stack.config.stack_name + "-"
    out = {}
    for res in s.data["Resources"].values():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::CloudWatch::Alarm" and "AlarmName" in props:
            out[props["AlarmName"].removeprefix(prefix)] = props
        if res["Type"] == "AWS::CloudWatch::CompositeAlarm":
            out[props["AlarmName"].removeprefix(prefix)] = props
    return out


def _expression(alarm: dict[str, Any]) -> str:
    (query,) = alarm["Metrics"]
    return query["Expression"]


def test_alarms_page_the_encrypted_alarm_topic(variant: Synth) -> None:
    alarms = _alarms(variant)
    topic = {"Ref": variant.logical_id(variant.stack.monitoring.topic)}
    expected = set(PAGING)
    if not variant.stack.config.tls.plaintext:
        expected.remove("unhealthy-targets-11112")  # TLS only: no 11112 target group
    if variant.stack.config.tls.enabled:
        expected.add("unhealthy-targets-2762")
    paging = {name for name, a in alarms.items() if a.get("AlarmActions")}
    assert paging == expected
    for name in paging:
        assert alarms[name]["AlarmActions"] == [topic], name
        assert alarms[name]["OKActions"] == [topic], name
        assert "deploy/README.md#alarms" in alarms[name]["AlarmDescription"]
    _, topic_res = next(
        (k, v) for k, v in variant.resources("AWS::SNS::Topic").items() if {"Ref": k} == topic
    )
    assert topic_res["Properties"]["KmsMasterKeyId"] == {
        "Fn::GetAtt": [variant.logical_id(variant.stack.encryption.key), "Arn"]
    }


def test_no_deliveries_while_receiving(default: Synth) -> None:
    alarms = _alarms(default)
    receiving = alarms["receiving"]
    nothing = alarms["nothing-delivered"]
    assert _expression(receiving) == "SELECT SUM(CStore) FROM SCHEMA(dicomgate, NodeId, Status)"
    assert receiving["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert _expression(nothing) == "SELECT SUM(StudiesDelivered) FROM SCHEMA(dicomgate, NodeId)"
    assert nothing["ComparisonOperator"] == "LessThanThreshold"
    assert nothing["TreatMissingData"] == "breaching"  # no data: nothing was delivered
    for child in (receiving, nothing):
        assert child["Metrics"][0]["Period"] == 1800
        assert child["EvaluationPeriods"] == child["DatapointsToAlarm"] == 2
        assert "AlarmActions" not in child
    rule = json.dumps(alarms["no-deliveries"]["AlarmRule"])
    assert rule.count("ALARM(") == 2 and " AND " in rule


def test_node_metric_alarms(default: Synth) -> None:
    alarms = _alarms(default)
    age = alarms["backlog-age"]
    assert _expression(age) == ("SELECT MAX(OldestUndeliveredAge) FROM SCHEMA(dicomgate, NodeId)")
    assert age["Threshold"] == 3600
    quarantines = alarms["quarantines"]
    assert _expression(quarantines) == (
        "SELECT SUM(Quarantined) FROM SCHEMA(dicomgate, NodeId, Rule)"
    )
    assert quarantines["Metrics"][0]["Period"] == 3600
    assert quarantines["Threshold"] == 10
    retries = alarms["upload-retries"]
    assert _expression(retries) == "SELECT SUM(UploadRetries) FROM SCHEMA(dicomgate, NodeId)"
    assert retries["Threshold"] == 50
    assert _expression(alarms["notification-failures"]) == (
        "SELECT SUM(NotificationFailures) FROM SCHEMA(dicomgate, NodeId)"
    )
    # a Metrics Insights alarm reads at most the last three hours
    for name in (
        "receiving",
        "nothing-delivered",
        "backlog-age",
        "quarantines",
        "upload-retries",
        "notification-failures",
    ):
        alarm = alarms[name]
        window = alarm["Metrics"][0]["Period"] * alarm["EvaluationPeriods"]
        assert window <= 3 * 3600, name


def test_platform_alarms(default: Synth) -> None:
    alarms = _alarms(default)
    unhealthy = alarms["unhealthy-targets-11112"]
    assert unhealthy["Namespace"] == "AWS/NetworkELB"
    assert unhealthy["MetricName"] == "UnHealthyHostCount"
    assert unhealthy["Statistic"] == "Maximum"
    dims = {d["Name"] for d in unhealthy["Dimensions"]}
    assert dims == {"LoadBalancer", "TargetGroup"}
    tasks = alarms["tasks-below-desired"]
    expressions = {m["Id"]: m for m in tasks["Metrics"]}
    assert [m["Expression"] for m in expressions.values() if "Expression" in m] == [
        "desired - running"
    ]
    names = {
        m["MetricStat"]["Metric"]["MetricName"] for m in expressions.values() if "MetricStat" in m
    }
    assert names == {"DesiredTaskCount", "RunningTaskCount"}
    restarts = alarms["task-restarts"]
    assert (restarts["Namespace"], restarts["MetricName"]) == ("AWS/Events", "MatchedEvents")
    (rule,) = default.resources("AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["ECS Task State Change"]
    assert pattern["detail"]["lastStatus"] == ["STOPPED"]
    assert pattern["detail"]["stopCode"] == ["EssentialContainerExited", "TaskFailedToStart"]


def test_dashboard(default: Synth) -> None:
    (dashboard,) = default.resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for name in metrics.ALL:
        assert name in body, name
    assert "GROUP BY Rule" in body and "GROUP BY Status" in body
    assert "RunningTaskCount" in body and "HealthyHostCount" in body


def test_metric_names_match_the_node() -> None:
    """The names the alarms read are the names the node emits (dicomgate/ops/, EMF)."""
    sources = [
        p.read_text(encoding="utf-8") for p in (REPO_ROOT / "dicomgate" / "ops").glob("*.py")
    ]
    emf = [s for s in sources if re.search(r"CloudWatchMetrics|\"Namespace\"", s)]
    assert emf, "the node's EMF module (dicomgate/ops/) is missing"
    text = "\n".join(emf)
    assert re.search(rf"[\"']{metrics.NAMESPACE}[\"']", text)
    for name in (*metrics.ALL, metrics.NODE, *metrics.EXTRA_DIMENSION.values()):
        assert re.search(rf"[\"']{name}[\"']", text), f"{name} is not emitted by the node"
