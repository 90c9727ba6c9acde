"""Where delivered objects live: every key the pipeline writes is made here.

Keys are relative to the destination's root (an S3 ``bucket/prefix`` or a ``file://``
directory); the destination adds its own prefix, so the same key works everywhere::

    <study>/<series>/<instance>.dcm        one de-identified instance
    <study>/manifest-v<N>.json             manifest version N (immutable)
    <study>/index-v<N>.csv                 instance index of manifest version N (immutable)
    <study>/manifest.json                  copy of the latest manifest (overwritten)

``<study>``, ``<series>`` and ``<instance>`` are *pseudonymized* UIDs only; the functions refuse
anything that is not a well-formed UID, which also keeps ``..`` and ``/`` out of every key.
"""

from __future__ import annotations

import re

from dicomgate.uids import require_uid

__all__ = [
    "index_key",
    "instance_key",
    "latest_manifest_key",
    "manifest_key",
    "study_prefix",
    "validate_key",
    "validate_uid",
]

# Keys we are willing to write: printable ASCII without backslash, no empty/dot segments.
_KEY_CHARS = re.compile(r"[A-Za-z0-9._\-/=+@,:]+")  # fullmatch: "$" would let "\n" in


def validate_uid(uid: str, what: str = "UID") -> str:
    """Return ``uid`` if it is exactly a DICOM UID (the one rule, :mod:`dicomgate.uids`),
    else raise ``ValueError``. No padding is stripped: keys are made of our own pseudonyms."""
    return require_uid(uid, what)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``ValueError``.

    Both destinations call this, so a key can never escape the destination's root.
    """
    if not key or len(key) > 900 or not _KEY_CHARS.fullmatch(key):
        raise ValueError(f"invalid object key: {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid object key (empty or dot segment): {key!r}")
    return key


def study_prefix(study_uid: str) -> str:
    """The folder holding everything of one (pseudonymized) study, with a trailing slash."""
    return f"{validate_uid(study_uid, 'study UID')}/"


def instance_key(study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    """Key of one de-identified instance: ``<study>/<series>/<instance>.dcm``."""
    return (
        f"{validate_uid(study_uid, 'study UID')}/{validate_uid(series_uid, 'series UID')}/"
        f"{validate_uid(sop_instance_uid, 'SOP instance UID')}.dcm"
    )


def _check_version(version: int) -> int:
    if version < 1:
        raise ValueError(f"manifest version must be >= 1, got {version}")
    return version


def manifest_key(study_uid: str, version: int) -> str:
    """Key of manifest version ``version`` (1, 2, ...): ``<study>/manifest-v<N>.json``."""
    return f"{study_prefix(study_uid)}manifest-v{_check_version(version)}.json"


def index_key(study_uid: str, version: int) -> str:
    """Key of the CSV index written with manifest ``version``: ``<study>/index-v<N>.csv``."""
    return f"{study_prefix(study_uid)}index-v{_check_version(version)}.csv"


def latest_manifest_key(study_uid: str) -> str:
    """Key of the copy of the latest manifest: ``<study>/manifest.json``."""
    return f"{study_prefix(study_uid)}manifest.json"
