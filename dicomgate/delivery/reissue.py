"""Re-issue links for a delivered study (``dicomgate links``).

Presigned URLs die with the credentials that signed them (a task role's last hours), so links
are never stored: this reads the study's latest manifest back from the destination and signs a
fresh set with the credentials at hand.
"""

from __future__ import annotations

import asyncio
import urllib.request
from urllib.parse import urlsplit

from dicomgate.config import Settings
from dicomgate.delivery.destination import Destination
from dicomgate.delivery.factory import file_url_path, open_destination
from dicomgate.delivery.layout import manifest_key
from dicomgate.delivery.links import LinkSet, make_link_set
from dicomgate.delivery.manifest import Manifest
from dicomgate.state import StateStore

__all__ = ["StudyNotDeliveredError", "load_manifest", "reissue_links"]


class StudyNotDeliveredError(LookupError):
    """The study is unknown here, or no manifest of it has been published yet."""


def _fetch(url: str) -> bytes:
    if urlsplit(url).scheme == "file":
        return file_url_path(url).read_bytes()
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own presigned URL
        return bytes(response.read())


async def load_manifest(destination: Destination, deid_study_uid: str, version: int) -> Manifest:
    """Read manifest ``version`` of a study back from the destination (through a short link)."""
    url = await destination.link(manifest_key(deid_study_uid, version), 300)
    return Manifest.from_json(await asyncio.to_thread(_fetch, url))


async def reissue_links(
    settings: Settings, state: StateStore, study: str, *, expires_in: int | None = None
) -> LinkSet:
    """Fresh links for the latest manifest of ``study`` (original or pseudonymized UID)."""
    record = state.study(study)
    if record is None:
        raise StudyNotDeliveredError(f"no study {study} in the state store")
    if record.manifest_version < 1 or record.deid_study_uid is None:
        raise StudyNotDeliveredError(f"study {study} has not been delivered yet")
    destination = open_destination(settings.destination_url, settings)
    try:
        manifest = await load_manifest(destination, record.deid_study_uid, record.manifest_version)
        return await make_link_set(destination, manifest, expires_in or settings.link_expiry)
    finally:
        await destination.aclose()
