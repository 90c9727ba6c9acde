"""Delivery: destinations (S3, local files), object layout, manifests, links and notifications.

The pipeline uses this package through a handful of names::

    dest = open_destination(settings.destination_url, settings)
    stored = await dest.put_file(instance_key(study, series, sop), path, sha256=digest)
    published = await publish_manifest(dest, Manifest.build(...))
    links = await make_link_set(dest, manifest, settings.link_expiry)
    results = await notify_all(build_notifiers(settings), Notification.for_manifest(...))

Failures are :class:`RetryableDeliveryError` (retry with backoff) or
:class:`PermanentDeliveryError` (someone must act).
"""

from dicomgate.delivery.destination import (
    CONTENT_TYPE_CSV,
    CONTENT_TYPE_DICOM,
    CONTENT_TYPE_JSON,
    MAX_LINK_EXPIRY,
    Destination,
    StoredObject,
)
from dicomgate.delivery.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from dicomgate.delivery.factory import open_destination
from dicomgate.delivery.file import FileDestination
from dicomgate.delivery.index import INDEX_COLUMNS, index_csv, read_index_csv
from dicomgate.delivery.layout import (
    index_key,
    instance_key,
    latest_manifest_key,
    manifest_key,
    study_prefix,
)
from dicomgate.delivery.links import InstanceLink, Link, LinkSet, make_link_set
from dicomgate.delivery.manifest import (
    MANIFEST_SCHEMA_VERSION,
    Counts,
    DeidInfo,
    Manifest,
    ManifestInstance,
    ManifestSeries,
    MissingInstance,
    ProcedureStep,
    QuarantinedInstance,
    manifest_json_schema,
)
from dicomgate.delivery.notify import (
    LogNotifier,
    Notification,
    Notifier,
    SNSNotifier,
    SQSNotifier,
    WebhookNotifier,
    build_notifiers,
    notify_all,
    sign_body,
)
from dicomgate.delivery.publish import PublishedManifest, publish_manifest
from dicomgate.delivery.s3 import S3Destination, S3Options

__all__ = [
    "CONTENT_TYPE_CSV",
    "CONTENT_TYPE_DICOM",
    "CONTENT_TYPE_JSON",
    "INDEX_COLUMNS",
    "MANIFEST_SCHEMA_VERSION",
    "MAX_LINK_EXPIRY",
    "Counts",
    "DeidInfo",
    "DeliveryError",
    "Destination",
    "FileDestination",
    "InstanceLink",
    "Link",
    "LinkSet",
    "LogNotifier",
    "Manifest",
    "ManifestInstance",
    "ManifestSeries",
    "MissingInstance",
    "Notification",
    "Notifier",
    "PermanentDeliveryError",
    "ProcedureStep",
    "PublishedManifest",
    "QuarantinedInstance",
    "RetryableDeliveryError",
    "S3Destination",
    "S3Options",
    "SNSNotifier",
    "SQSNotifier",
    "StoredObject",
    "WebhookNotifier",
    "build_notifiers",
    "index_csv",
    "index_key",
    "instance_key",
    "latest_manifest_key",
    "make_link_set",
    "manifest_json_schema",
    "manifest_key",
    "notify_all",
    "open_destination",
    "publish_manifest",
    "read_index_csv",
    "sign_body",
    "study_prefix",
]
