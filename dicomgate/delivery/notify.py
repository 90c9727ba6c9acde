"""Telling the recipient a study is ready: a log line always; a webhook, SNS or SQS if configured.

All notifiers take the same :class:`Notification` and share one small interface
(:class:`Notifier`). :func:`notify_all` sends to all of them at once and reports per notifier,
so the pipeline can retry only the ones that failed and record which succeeded — one message
per manifest version per channel. Every message carries ``id`` = ``<study>/v<N>``, stable across
retries, which receivers can use to drop duplicates (FIFO SNS/SQS use it for deduplication).

Webhook signing: ``X-Dicomgate-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` over the
exact bytes of the body; ``X-Dicomgate-Timestamp`` (Unix seconds) is also inside the body as
``sent_at``, so it is covered by the signature and a receiver can refuse stale replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import boto3
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dicomgate import __version__
from dicomgate._logging import get_logger
from dicomgate.delivery.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    classify_aws_error,
    classify_os_error,
)
from dicomgate.delivery.layout import manifest_key
from dicomgate.delivery.links import LinkSet
from dicomgate.delivery.manifest import Counts, Manifest, Uid

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

    from dicomgate.config import Settings

__all__ = [
    "EVENT_STUDY_DELIVERED",
    "LogNotifier",
    "Notification",
    "Notifier",
    "SNSNotifier",
    "SQSNotifier",
    "WebhookNotifier",
    "build_notifiers",
    "notify_all",
    "sign_body",
]

EVENT_STUDY_DELIVERED: Final = "study.delivered"
NOTIFICATION_SCHEMA_VERSION: Final = 1
SIGNATURE_HEADER = "X-Dicomgate-Signature"
TIMESTAMP_HEADER = "X-Dicomgate-Timestamp"
# SNS and SQS refuse messages over 256 KiB; leave room for attributes.
AWS_MESSAGE_LIMIT = 250_000

_log = get_logger(__name__)


class Notification(BaseModel):
    """The message sent when a manifest version is published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = NOTIFICATION_SCHEMA_VERSION
    event: Literal["study.delivered"] = EVENT_STUDY_DELIVERED
    id: str = Field(description="<study>/v<N>: the same for every retry of this message.")
    study_instance_uid: Uid
    manifest_version: int = Field(ge=1)
    destination: str
    manifest_key: str
    index_key: str
    counts: Counts
    sent_at: AwareDatetime
    links: LinkSet | None = None
    links_truncated: bool = Field(
        False, description="Instance links left out to fit the channel; use the manifest link."
    )

    @classmethod
    def for_manifest(
        cls,
        manifest: Manifest,
        destination: str,
        links: LinkSet | None = None,
        *,
        now: datetime | None = None,
    ) -> Notification:
        """The notification announcing ``manifest``."""
        study = manifest.study_instance_uid
        version = manifest.manifest_version
        return cls(
            id=f"{study}/v{version}",
            study_instance_uid=study,
            manifest_version=version,
            destination=destination,
            manifest_key=manifest_key(study, version),
            index_key=manifest.index_key,
            counts=manifest.counts,
            sent_at=now or datetime.now(UTC),
            links=links,
        )

    def to_json(self, max_bytes: int | None = None) -> bytes:
        """The message body; over ``max_bytes`` the per-instance links are dropped."""
        body = self.model_dump_json().encode("utf-8")
        if max_bytes is None or len(body) <= max_bytes or self.links is None:
            return body
        slim = self.model_copy(
            update={
                "links": self.links.model_copy(update={"instances": []}),
                "links_truncated": True,
            }
        )
        return slim.model_dump_json().encode("utf-8")


@runtime_checkable
class Notifier(Protocol):
    """One notification channel. ``name`` identifies it in results and the state store."""

    @property
    def name(self) -> str: ...

    async def notify(self, notification: Notification) -> None:
        """Send ``notification``; raise a Retryable/PermanentDeliveryError on failure."""
        ...


class LogNotifier:
    """The structured log line every delivery produces (never fails)."""

    name = "log"

    async def notify(self, notification: Notification) -> None:
        links = notification.links
        # Logged under "study", not "study_instance_uid": the value is pseudonymized, and the
        # PHI filter redacts the DICOM attribute names on principle.
        _log.info(
            "study_delivered",
            notification_id=notification.id,
            study=notification.study_instance_uid,
            manifest_version=notification.manifest_version,
            destination=notification.destination,
            manifest_key=notification.manifest_key,
            instances=notification.counts.instances,
            series=notification.counts.series,
            quarantined=notification.counts.quarantined,
            bytes=notification.counts.bytes,
            links_expire_at=(links.expires_at.isoformat() if links and links.expires_at else None),
        )


def sign_body(secret: bytes, body: bytes) -> str:
    """The ``X-Dicomgate-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A signed POST is not re-sent elsewhere: redirects surface as HTTP errors."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookNotifier:
    """POST the notification as JSON to an HTTP(S) URL, signed with HMAC-SHA256."""

    name = "webhook"

    def __init__(self, url: str, secret: str | bytes | None, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook URL must be http(s)://...: {url!r}")
        self._url = url
        self._secret = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def _post(self, body: bytes, notification: Notification) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"dicomgate/{__version__}",
            "X-Dicomgate-Event": notification.event,
            "X-Dicomgate-Delivery": notification.id,
            TIMESTAMP_HEADER: str(int(notification.sent_at.timestamp())),
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign_body(self._secret, body)
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked in __init__
        action = f"webhook POST {urlsplit(self._url).netloc}"
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's socket
            message = f"{action} failed: HTTP {exc.code}"
            if exc.code >= 500 or exc.code in (408, 425, 429):
                raise RetryableDeliveryError(message, code=str(exc.code)) from exc
            raise PermanentDeliveryError(message, code=str(exc.code)) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, OSError):
                raise classify_os_error(reason, action) from exc
            raise RetryableDeliveryError(f"{action} failed: {reason}", code="URLError") from exc
        except TimeoutError as exc:
            raise RetryableDeliveryError(f"{action} timed out", code="Timeout") from exc
        except OSError as exc:  # connection reset mid-response, ...
            raise classify_os_error(exc, action) from exc

    async def notify(self, notification: Notification) -> None:
        await asyncio.to_thread(self._post, notification.to_json(), notification)


def _fifo_args(target: str, notification: Notification) -> dict[str, Any]:
    """Group and deduplication ids for a FIFO topic or queue (``*.fifo``); nothing otherwise."""
    if not target.endswith(".fifo"):
        return {}
    # FIFO deduplication ids: at most 128 characters of [A-Za-z0-9!-~]; a digest fits always.
    dedup = hashlib.sha256(notification.id.encode("utf-8")).hexdigest()
    return {"MessageGroupId": notification.study_instance_uid, "MessageDeduplicationId": dedup}


def _attributes(notification: Notification) -> dict[str, Any]:
    return {
        "event": {"DataType": "String", "StringValue": notification.event},
        "manifest_version": {
            "DataType": "Number",
            "StringValue": str(notification.manifest_version),
        },
    }


class SNSNotifier:
    """Publish the notification to an SNS topic (FIFO topics get group and dedup ids)."""

    name = "sns"

    def __init__(self, topic_arn: str, client: SNSClient) -> None:
        self._topic_arn = topic_arn
        self._client = client

    def _publish(self, body: str, notification: Notification) -> None:
        self._client.publish(
            TopicArn=self._topic_arn,
            Message=body,
            MessageAttributes=_attributes(notification),
            **_fifo_args(self._topic_arn, notification),
        )

    async def notify(self, notification: Notification) -> None:
        body = notification.to_json(AWS_MESSAGE_LIMIT).decode("utf-8")
        try:
            await asyncio.to_thread(self._publish, body, notification)
        except Exception as exc:
            raise classify_aws_error(exc, f"sns publish {self._topic_arn}") from exc


class SQSNotifier:
    """Send the notification to an SQS queue (FIFO queues get group and dedup ids)."""

    name = "sqs"

    def __init__(self, queue_url: str, client: SQSClient) -> None:
        self._queue_url = queue_url
        self._client = client

    def _send(self, body: str, notification: Notification) -> None:
        self._client.send_message(
            QueueUrl=self._queue_url,
            MessageBody=body,
            MessageAttributes=_attributes(notification),
            **_fifo_args(self._queue_url, notification),
        )

    async def notify(self, notification: Notification) -> None:
        body = notification.to_json(AWS_MESSAGE_LIMIT).decode("utf-8")
        try:
            await asyncio.to_thread(self._send, body, notification)
        except Exception as exc:
            raise classify_aws_error(exc, f"sqs send {self._queue_url}") from exc


def _region_of_topic(arn: str) -> str | None:
    # arn:aws:sns:<region>:<account>:<name>
    parts = arn.split(":")
    return parts[3] if len(parts) >= 6 and parts[3] else None


def _region_of_queue(url: str) -> str | None:
    # https://sqs.<region>.amazonaws.com/<account>/<name>
    host = urlsplit(url).hostname or ""
    labels = host.split(".")
    return labels[1] if len(labels) >= 4 and labels[0] == "sqs" else None


def build_notifiers(
    settings: Settings, *, session: boto3.session.Session | None = None
) -> list[Notifier]:
    """The configured notifiers: the log line first, then webhook, SNS, SQS if set.

    SNS and SQS clients use the region in the topic ARN / queue URL (else boto3's default).
    """
    notifiers: list[Notifier] = [LogNotifier()]
    if settings.notify_webhook_url:
        secret = settings.notify_webhook_secret
        if secret is None:
            _log.warning("webhook_unsigned", reason="notify_webhook_secret is not set")
        notifiers.append(
            WebhookNotifier(
                settings.notify_webhook_url,
                secret.get_secret_value() if secret else None,
                timeout=settings.notify_timeout,
            )
        )
    session = session or boto3.session.Session()
    if settings.notify_sns_topic_arn:
        arn = settings.notify_sns_topic_arn
        sns = session.client("sns", region_name=_region_of_topic(arn) or settings.s3_region)
        notifiers.append(SNSNotifier(arn, sns))
    if settings.notify_sqs_queue_url:
        url = settings.notify_sqs_queue_url
        sqs = session.client("sqs", region_name=_region_of_queue(url) or settings.s3_region)
        notifiers.append(SQSNotifier(url, sqs))
    return notifiers


async def notify_all(
    notifiers: Sequence[Notifier], notification: Notification
) -> dict[str, DeliveryError | None]:
    """Send to every notifier concurrently; map each name to ``None`` or its failure."""

    async def one(notifier: Notifier) -> DeliveryError | None:
        try:
            await notifier.notify(notification)
        except DeliveryError as exc:
            _log.warning(
                "notify_failed",
                notifier=notifier.name,
                notification_id=notification.id,
                retryable=exc.retryable,
                error=str(exc),
            )
            return exc
        return None

    results = await asyncio.gather(*(one(n) for n in notifiers))
    return {n.name: r for n, r in zip(notifiers, results, strict=True)}
