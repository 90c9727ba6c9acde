"""Expiring download links for one manifest version (what ``dicomgate links`` prints).

Links are made on demand and never stored: an S3 presigned URL dies with the credentials that
signed it (a task role's last hours), so ``dicomgate links STUDY`` simply makes a fresh set.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dicomgate.delivery.destination import Destination, check_expiry
from dicomgate.delivery.layout import manifest_key
from dicomgate.delivery.manifest import Manifest, Sha256Hex, Uid

__all__ = ["LINKS_SCHEMA_VERSION", "InstanceLink", "Link", "LinkSet", "make_link_set"]

LINKS_SCHEMA_VERSION: Final = 1


class Link(BaseModel):
    """A URL to download one object, valid until ``expires_at`` (``None``: it does not
    expire, as with a ``file://`` destination)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    url: str
    expires_at: AwareDatetime | None


class InstanceLink(Link):
    """A link to one instance, with what the download must match."""

    sop_instance_uid: Uid
    series_instance_uid: Uid
    size: int = Field(ge=0)
    sha256: Sha256Hex


class LinkSet(BaseModel):
    """Links to a manifest version, its index and every instance it lists."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = LINKS_SCHEMA_VERSION
    study_instance_uid: Uid
    manifest_version: int = Field(ge=1)
    created_at: AwareDatetime
    expires_at: AwareDatetime | None
    manifest: Link
    index: Link
    instances: list[InstanceLink] = Field(default_factory=list)


async def make_link_set(
    destination: Destination,
    manifest: Manifest,
    expires_in: int,
    *,
    now: datetime | None = None,
) -> LinkSet:
    """Fresh links (``expires_in`` seconds, at most 7 days) for everything ``manifest`` lists."""
    check_expiry(expires_in)
    created = now or datetime.now(UTC)
    expires = created + timedelta(seconds=expires_in) if destination.links_expire else None
    m_key = manifest_key(manifest.study_instance_uid, manifest.manifest_version)
    instances = manifest.instances
    urls = await asyncio.gather(
        destination.link(m_key, expires_in),
        destination.link(manifest.index_key, expires_in),
        *(destination.link(inst.key, expires_in) for inst in instances),
    )
    return LinkSet(
        study_instance_uid=manifest.study_instance_uid,
        manifest_version=manifest.manifest_version,
        created_at=created,
        expires_at=expires,
        manifest=Link(key=m_key, url=urls[0], expires_at=expires),
        index=Link(key=manifest.index_key, url=urls[1], expires_at=expires),
        instances=[
            InstanceLink(
                key=inst.key,
                url=url,
                expires_at=expires,
                sop_instance_uid=inst.sop_instance_uid,
                series_instance_uid=inst.series_instance_uid,
                size=inst.size,
                sha256=inst.sha256,
            )
            for inst, url in zip(instances, urls[2:], strict=True)
        ],
    )
