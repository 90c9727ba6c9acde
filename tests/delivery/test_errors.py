"""Classifying AWS and OS failures into retryable and permanent delivery errors."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from dicomgate.delivery import PermanentDeliveryError, RetryableDeliveryError
from dicomgate.delivery.errors import classify_aws_error, classify_os_error


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("SlowDown", 503, RetryableDeliveryError),
        ("ThrottlingException", 400, RetryableDeliveryError),
        ("RequestTimeout", 400, RetryableDeliveryError),
        ("ExpiredToken", 400, RetryableDeliveryError),
        ("InternalError", 500, RetryableDeliveryError),
        ("Whatever", 502, RetryableDeliveryError),
        ("TooManyRequests", 429, RetryableDeliveryError),
        ("AccessDenied", 403, PermanentDeliveryError),
        ("NoSuchBucket", 404, PermanentDeliveryError),
        ("InvalidArgument", 400, PermanentDeliveryError),
        ("KMS.NotFoundException", 400, PermanentDeliveryError),
        ("BadDigest", 400, PermanentDeliveryError),
    ],
)
def test_client_errors(code: str, status: int, kind: type[Exception]) -> None:
    """Throttling, timeouts and 5xx are retryable; access, bucket and argument errors are not."""
    error = classify_aws_error(_client_error(code, status), "put x")
    assert type(error) is kind and error.code == code and code in str(error)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), RetryableDeliveryError),
        (ReadTimeoutError(endpoint_url="http://x"), RetryableDeliveryError),
        (NoCredentialsError(), PermanentDeliveryError),
        (ParamValidationError(report="bad"), PermanentDeliveryError),
        (ConnectionResetError(errno.ECONNRESET, "reset"), RetryableDeliveryError),
        (RuntimeError("?"), PermanentDeliveryError),
    ],
)
def test_transport_and_other_errors(exc: Exception, kind: type[Exception]) -> None:
    """Connection failures and timeouts are retryable; missing credentials and bugs are not."""
    assert type(classify_aws_error(exc, "put x")) is kind


def test_wrapped_upload_errors_keep_their_cause() -> None:
    """boto3's S3UploadFailedError (raised with only __context__) is classified by its cause."""
    try:
        try:
            raise _client_error("SlowDown", 503)
        except ClientError as inner:
            raise S3UploadFailedError(f"Failed to upload: {inner}")  # noqa: B904
    except S3UploadFailedError as outer:
        error = classify_aws_error(outer, "put x")
    assert isinstance(error, RetryableDeliveryError) and error.code == "SlowDown"


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        (errno.ENOSPC, RetryableDeliveryError),
        (errno.EIO, RetryableDeliveryError),
        (errno.EACCES, PermanentDeliveryError),
        (errno.EROFS, PermanentDeliveryError),
    ],
)
def test_os_errors(number: int, kind: type[Exception]) -> None:
    """A full disk may clear up; a read-only or forbidden directory will not."""
    error = classify_os_error(OSError(number, "x"), "write y")
    assert type(error) is kind and error.code == errno.errorcode[number]
