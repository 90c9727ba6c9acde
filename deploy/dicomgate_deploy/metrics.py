"""The node's CloudWatch metrics, as the stack reads them.

The node writes them in Embedded Metric Format (``DICOMGATE_METRICS_EMF=true``): JSON log lines
on stdout, which the awslogs driver ships and CloudWatch turns into metrics with no agent. Each
node reports under its own ``NodeId`` dimension (a task is a node), plus ``Status`` on C-STORE
and ``Rule`` on quarantines.

Node ids come and go with tasks, so alarms and scaling cannot name the series. They use
CloudWatch Metrics Insights queries instead (``SELECT SUM(X) FROM SCHEMA(dicomgate, NodeId)``),
which aggregate every node's series whatever their ids, and need no extra dimension set from
the node. A query reads the last three hours at most, which every window here stays within.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw

NAMESPACE = "dicomgate"
NODE = "NodeId"

ASSOCIATIONS_ACCEPTED = "AssociationsAccepted"
ASSOCIATIONS_REJECTED = "AssociationsRejected"
CSTORE = "CStore"  # dimension Status
QUARANTINED = "Quarantined"  # dimension Rule
BACKLOG = "Backlog"
OLDEST_UNDELIVERED_AGE = "OldestUndeliveredAge"
UPLOAD_RETRIES = "UploadRetries"
STUDIES_DELIVERED = "StudiesDelivered"
NOTIFICATION_FAILURES = "NotificationFailures"

ALL = (
    ASSOCIATIONS_ACCEPTED,
    ASSOCIATIONS_REJECTED,
    CSTORE,
    QUARANTINED,
    BACKLOG,
    OLDEST_UNDELIVERED_AGE,
    UPLOAD_RETRIES,
    STUDIES_DELIVERED,
    NOTIFICATION_FAILURES,
)

#: the extra dimension each metric carries beside NodeId
EXTRA_DIMENSION = {CSTORE: "Status", QUARANTINED: "Rule"}


def query(
    metric: str,
    function: str,
    period: Duration,
    *,
    label: str | None = None,
    group_by: str | None = None,
) -> cw.MathExpression:
    """A Metrics Insights query over every node: ``SELECT FUNCTION(metric) FROM SCHEMA(...)``.

    ``group_by`` (dashboards only; an alarm needs one series) splits by that dimension.
    """
    dims = [NODE]
    extra = EXTRA_DIMENSION.get(metric)
    if extra:
        dims.append(extra)
    # a CloudWatch query built from this module's constants, not SQL
    expression = f"SELECT {function}({metric}) FROM SCHEMA({NAMESPACE}, {', '.join(dims)})"  # noqa: S608
    if group_by:
        expression += f" GROUP BY {group_by}"
    return cw.MathExpression(
        expression=expression,
        using_metrics={},
        period=period,
        label=label or f"{metric} ({function.lower()}, all nodes)",
    )
