"""Delivery failures, split into the two kinds the pipeline acts on.

The pipeline retries a :class:`RetryableDeliveryError` with backoff for as long as
``retry_for`` allows and quarantines (or stops on) a :class:`PermanentDeliveryError`. Every
destination and notifier raises only these two (both subclass :class:`DeliveryError`), so the
pipeline never needs to know about botocore, ``OSError`` or ``urllib``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import ConnectTimeoutError as BotoConnectTimeoutError

__all__ = [
    "DeliveryError",
    "PermanentDeliveryError",
    "RetryableDeliveryError",
    "classify_aws_error",
    "classify_os_error",
]


class DeliveryError(Exception):
    """A destination or notifier operation failed. ``code`` is the service's error code."""

    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class RetryableDeliveryError(DeliveryError):
    """Worth retrying later: connection errors, timeouts, throttling, 5xx."""

    retryable = True


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help until someone changes something (access, bucket, arguments)."""


# Error codes that AWS and S3-compatible servers use for transient conditions. Everything else
# that carries a 4xx status (AccessDenied, NoSuchBucket, InvalidArgument, KMS.NotFound...) is
# permanent. ExpiredToken is retryable: the credential chain refreshes a task role's token.
_RETRYABLE_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InternalError",
        "InternalFailure",
        "KMS.ThrottlingException",
        "OperationAborted",
        "RequestLimitExceeded",
        "RequestTimeTooSkewed",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "SlowDown",
        "Throttled",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)

# Transport-level failures: the request may never have reached the server.
_RETRYABLE_BOTO = (
    BotoConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
    BotoConnectTimeoutError,
    ConnectionClosedError,
    CredentialRetrievalError,  # instance/task metadata endpoint hiccup
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (boto3's transfer manager re-raises with context only)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify_aws_error(exc: BaseException, action: str) -> DeliveryError:
    """Map a botocore/boto3 exception to a retryable or permanent delivery error.

    ``action`` says what was attempted (for the message), e.g. ``"put s3://bucket/key"``.
    """
    for link in _chain(exc):
        if isinstance(link, DeliveryError):
            return link
        if isinstance(link, ClientError):
            error = link.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = int(link.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            message = f"{action} failed: {code} (HTTP {status}): {error.get('Message', '')}"
            if code in _RETRYABLE_CODES or status >= 500 or status == 429:
                return RetryableDeliveryError(message, code=code)
            return PermanentDeliveryError(message, code=code)
        if isinstance(link, _RETRYABLE_BOTO):
            return RetryableDeliveryError(f"{action} failed: {link}", code=type(link).__name__)
        if isinstance(link, NoCredentialsError):
            return PermanentDeliveryError(
                f"{action} failed: no AWS credentials found", code="NoCredentials"
            )
        if isinstance(link, BotoCoreError):
            # ParamValidationError, NoRegionError, ...: a bug or a configuration error.
            return PermanentDeliveryError(f"{action} failed: {link}", code=type(link).__name__)
        if isinstance(link, OSError):
            return classify_os_error(link, action)
    return PermanentDeliveryError(f"{action} failed: {exc!r}", code=type(exc).__name__)


# OS errors that someone has to fix (permissions, read-only filesystem, a bad name); the rest
# (ENOSPC, EIO, EAGAIN, ...) may clear up on their own, so they are retried.
_PERMANENT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR}
)


def classify_os_error(exc: OSError, action: str) -> DeliveryError:
    """Map an ``OSError`` from a local destination to a delivery error."""
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    # strerror, never str(exc): that quotes file names, and spool names carry original UIDs.
    message = f"{action} failed: {name}: {exc.strerror or 'no detail'}"
    if exc.errno in _PERMANENT_ERRNOS:
        return PermanentDeliveryError(message, code=name)
    return RetryableDeliveryError(message, code=name)
