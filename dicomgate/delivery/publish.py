"""Write a manifest version and its index beside the study, in an order that is safe to repeat."""

from __future__ import annotations

from dataclasses import dataclass

from dicomgate.delivery.destination import (
    CONTENT_TYPE_CSV,
    CONTENT_TYPE_JSON,
    Destination,
    StoredObject,
)
from dicomgate.delivery.index import index_csv
from dicomgate.delivery.layout import latest_manifest_key, manifest_key
from dicomgate.delivery.manifest import Manifest

__all__ = ["PublishedManifest", "publish_manifest"]


@dataclass(frozen=True, slots=True)
class PublishedManifest:
    """What :func:`publish_manifest` wrote."""

    manifest: StoredObject
    index: StoredObject
    latest: StoredObject


async def publish_manifest(destination: Destination, manifest: Manifest) -> PublishedManifest:
    """Upload the index, then ``manifest-v<N>.json``, then the ``manifest.json`` copy.

    The index goes first so a manifest never points at an index that is not there; the latest
    copy goes last so it never names a version that is not there. Every step overwrites, so a
    pipeline that crashed half-way simply calls this again.
    """
    study = manifest.study_instance_uid
    version = manifest.manifest_version
    body = manifest.to_json()
    meta = {"manifest-version": str(version)}
    index = await destination.put_bytes(
        manifest.index_key, index_csv(manifest), content_type=CONTENT_TYPE_CSV, metadata=meta
    )
    versioned = await destination.put_bytes(
        manifest_key(study, version), body, content_type=CONTENT_TYPE_JSON, metadata=meta
    )
    latest = await destination.put_bytes(
        latest_manifest_key(study), body, content_type=CONTENT_TYPE_JSON, metadata=meta
    )
    return PublishedManifest(manifest=versioned, index=index, latest=latest)
