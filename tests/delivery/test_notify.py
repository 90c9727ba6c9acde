"""Notifiers: log line, signed webhook (real HTTP on loopback), SNS and SQS (moto)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws
from structlog.testing import capture_logs

from dicomgate.config import Settings
from dicomgate.delivery import (
    FileDestination,
    LogNotifier,
    Notification,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SNSNotifier,
    SQSNotifier,
    WebhookNotifier,
    build_notifiers,
    make_link_set,
    notify_all,
    sign_body,
)
from tests.delivery.helpers import STUDY, make_instance, make_manifest
from tests.seaweed import free_port

SECRET = "webhook-secret-0123456789"


def _notification(tmp_path: Any, instances: int = 3) -> Notification:
    manifest = make_manifest([make_instance(0, n, b"x" * n) for n in range(instances)])
    dest = FileDestination(tmp_path)
    links = asyncio.run(make_link_set(dest, manifest, 3600, now=datetime(2026, 1, 2, tzinfo=UTC)))
    asyncio.run(dest.aclose())
    return Notification.for_manifest(
        manifest, "s3://bucket/deliveries", links, now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )


class _Receiver:
    """A tiny webhook receiver on 127.0.0.1 that records requests and answers `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    """A webhook receiver, stopped after the test."""
    rec = _Receiver()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()
    rec.thread.join(5)


def test_webhook_is_signed_with_hmac_sha256(receiver: _Receiver, tmp_path: Any) -> None:
    """The POST body is the notification JSON and the signature header is its HMAC-SHA256."""
    notification = _notification(tmp_path)
    asyncio.run(WebhookNotifier(receiver.url, SECRET).notify(notification))
    [(headers, body)] = receiver.requests
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Dicomgate-Signature"] == f"sha256={expected}"
    assert hmac.compare_digest(headers["X-Dicomgate-Signature"], sign_body(SECRET.encode(), body))
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Dicomgate-Timestamp"] == str(int(notification.sent_at.timestamp()))
    assert headers["X-Dicomgate-Delivery"] == f"{STUDY}/v1"
    doc = json.loads(body)
    assert doc["event"] == "study.delivered" and doc["study_instance_uid"] == STUDY
    assert len(doc["links"]["instances"]) == 3 and doc["sent_at"] == "2026-01-02T03:04:05Z"
    # A receiver with a different secret (or a changed body) would not verify.
    assert sign_body(b"wrong", body) != headers["X-Dicomgate-Signature"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, RetryableDeliveryError),
        (503, RetryableDeliveryError),
        (429, RetryableDeliveryError),
        (400, PermanentDeliveryError),
        (404, PermanentDeliveryError),
        (302, PermanentDeliveryError),
    ],
)
def test_webhook_failures_are_classified(
    receiver: _Receiver, tmp_path: Any, status: int, error: type[Exception]
) -> None:
    """5xx and 429 are retryable; other 4xx and redirects are permanent."""
    receiver.status = status
    with pytest.raises(error, match=f"HTTP {status}"):
        asyncio.run(WebhookNotifier(receiver.url, SECRET).notify(_notification(tmp_path)))


def test_webhook_unreachable_is_retryable(tmp_path: Any) -> None:
    """Nobody listening on the port: retryable (ECONNREFUSED)."""
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(RetryableDeliveryError, match="ECONNREFUSED"):
        asyncio.run(WebhookNotifier(url, SECRET, timeout=2).notify(_notification(tmp_path)))


def test_webhook_url_must_be_http() -> None:
    """file:, ftp: and the like are refused when the notifier is built."""
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier("file:///etc/passwd", SECRET)


def test_log_notifier_logs_pseudonymized_study(tmp_path: Any) -> None:
    """The log line names the study under `study` (pseudonymized) with counts."""
    with capture_logs() as logs:
        asyncio.run(LogNotifier().notify(_notification(tmp_path)))
    [entry] = logs
    assert entry["event"] == "study_delivered" and entry["study"] == STUDY
    assert entry["manifest_version"] == 1 and entry["instances"] == 3


def test_oversized_messages_drop_instance_links(tmp_path: Any) -> None:
    """Above the size limit the instance links are left out and the message says so."""
    notification = _notification(tmp_path, instances=50)
    full = notification.to_json()
    slim = json.loads(notification.to_json(max_bytes=len(full) - 1))
    assert slim["links_truncated"] is True and slim["links"]["instances"] == []
    assert slim["links"]["manifest"]["url"].startswith("file://")
    assert json.loads(notification.to_json(max_bytes=len(full)))["links_truncated"] is False


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's mock AWS with fake credentials."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def _receive(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return messages


def test_sqs_notifier_sends_the_notification(aws: None, tmp_path: Any) -> None:
    """SQS gets the notification JSON with event and version attributes."""
    sqs = boto3.client("sqs", region_name="eu-west-1")
    url = sqs.create_queue(QueueName="dg-notify")["QueueUrl"]
    notification = _notification(tmp_path)
    asyncio.run(SQSNotifier(url, sqs).notify(notification))
    [message] = _receive(sqs, url)
    assert Notification.model_validate_json(message["Body"]) == notification
    assert message["MessageAttributes"]["event"]["StringValue"] == "study.delivered"
    assert message["MessageAttributes"]["manifest_version"]["StringValue"] == "1"


def test_sqs_fifo_deduplicates_retries(aws: None, tmp_path: Any) -> None:
    """On a FIFO queue a retried notification (same id) is delivered once."""
    sqs = boto3.client("sqs", region_name="eu-west-1")
    url = sqs.create_queue(QueueName="dg-notify.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    notifier = SQSNotifier(url, sqs)
    notification = _notification(tmp_path)
    asyncio.run(notifier.notify(notification))
    asyncio.run(notifier.notify(notification))
    assert len(_receive(sqs, url)) == 1


def test_sns_notifier_publishes_to_the_topic(aws: None, tmp_path: Any) -> None:
    """SNS publishes the notification; a subscribed queue receives it."""
    sns = boto3.client("sns", region_name="eu-west-1")
    sqs = boto3.client("sqs", region_name="eu-west-1")
    topic = sns.create_topic(Name="dg-delivered")["TopicArn"]
    url = sqs.create_queue(QueueName="dg-sub")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    notification = _notification(tmp_path)
    asyncio.run(SNSNotifier(topic, sns).notify(notification))
    [message] = _receive(sqs, url)
    envelope = json.loads(message["Body"])
    assert envelope["TopicArn"] == topic
    assert Notification.model_validate_json(envelope["Message"]) == notification


def test_sns_missing_topic_is_permanent(aws: None, tmp_path: Any) -> None:
    """Publishing to a topic that does not exist is a permanent failure."""
    sns = boto3.client("sns", region_name="eu-west-1")
    arn = "arn:aws:sns:eu-west-1:123456789012:nope"
    with pytest.raises(PermanentDeliveryError, match="NotFound"):
        asyncio.run(SNSNotifier(arn, sns).notify(_notification(tmp_path)))


def test_build_notifiers_and_notify_all(aws: None, receiver: _Receiver, tmp_path: Any) -> None:
    """Settings select the notifiers; notify_all reports each one's result separately."""
    sqs = boto3.client("sqs", region_name="eu-west-1")
    url = sqs.create_queue(QueueName="dg-all")["QueueUrl"]
    settings = Settings(
        data_dir=tmp_path,
        notify_webhook_url=receiver.url,
        notify_webhook_secret=SECRET,
        notify_sqs_queue_url=url,
        notify_sns_topic_arn="arn:aws:sns:eu-west-1:123456789012:missing",
    )
    notifiers = build_notifiers(settings)
    assert [n.name for n in notifiers] == ["log", "webhook", "sns", "sqs"]
    results = asyncio.run(notify_all(notifiers, _notification(tmp_path)))
    assert results["log"] is None and results["webhook"] is None and results["sqs"] is None
    assert isinstance(results["sns"], PermanentDeliveryError)
    assert len(receiver.requests) == 1 and len(_receive(sqs, url)) == 1


def test_only_the_log_notifier_by_default(tmp_path: Any) -> None:
    """With nothing configured, the structured log line is the only notification."""
    assert [n.name for n in build_notifiers(Settings(data_dir=tmp_path))] == ["log"]
