"""Door checks run before an instance is acknowledged (cheap, header only).

Each check either yields the UIDs the node files the instance under, or a
:class:`Refusal` carrying the DIMSE status and a reason safe to log (no patient values).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import RawDataElement
from pydicom.uid import UID

from dicomgate.status import Status

__all__ = ["HeaderUIDs", "Refusal", "check_header"]

_UNDEFINED_LENGTH = 0xFFFFFFFF
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@dataclass(frozen=True, slots=True)
class HeaderUIDs:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True, slots=True)
class Refusal:
    status: Status
    reason: str


def _uid(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip().rstrip("\x00")
    return text or None


def _truncated(elem: Any, file_size: int) -> bool:
    """True if a raw element's declared length runs past the data that arrived."""
    if not isinstance(elem, RawDataElement) or elem.length == _UNDEFINED_LENGTH:
        return False
    if elem.value is None:  # deferred: only its position and length were read
        return int(elem.value_tell) + int(elem.length) > file_size
    return len(elem.value) != elem.length


def _quotable_sop_class(uid: str) -> str:
    """A SOP Class UID as it may appear in a log: registered ones only (a sender that put,
    say, its SOP Instance UID there must not get it logged)."""
    return uid if uid in UID_dictionary else "an unregistered UID"


def check_header(
    path: Path,
    *,
    request_sop_class_uid: str | None,
    request_sop_instance_uid: str,
    file_size: int | None = None,
) -> HeaderUIDs | Refusal:
    """Parse the header of a received file and check it against the C-STORE request.

    ``request_sop_class_uid=None`` skips the SOP Class match (used when re-reading our own
    spool files, which passed it on the way in). ``file_size``, if the caller already has it,
    spares a stat of the file.
    """
    try:
        with path.open("rb") as fp:
            if file_size is None:
                file_size = os.fstat(fp.fileno()).st_size
            # Pixel data (possibly gigabytes, possibly compressed) is neither read nor decoded.
            ds = dcmread(fp, stop_before_pixels=True, defer_size=1024)
            # Element values stay raw (tolerant when reading: odd values are the pipeline's
            # business), but sequences are parsed so a garbled nested structure fails here.
            for tag in list(ds.keys()):
                # raw elements: no value conversion, and deferred values stay unread
                elem = ds.get_item(tag, keep_deferred=True)
                if _truncated(elem, file_size):
                    return Refusal(
                        Status.CANNOT_UNDERSTAND,
                        f"element ({elem.tag.group:04X},{elem.tag.element:04X}) runs past the "
                        "end of the dataset",
                    )
                if elem.VR == "SQ":
                    _ = ds[elem.tag].value
            # (inside the ``with``: an oversized value was deferred and is read from ``fp``)
            uids = {kw: _uid(ds.get(kw)) for kw in ("SOPClassUID", *_REQUIRED_UIDS)}
            transfer_syntax = _uid(ds.file_meta.get("TransferSyntaxUID")) or ""
    except Exception as exc:  # pydicom raises many kinds on garbage; none may escape
        return Refusal(Status.CANNOT_UNDERSTAND, f"dataset cannot be parsed: {type(exc).__name__}")

    sop_class = uids["SOPClassUID"]
    if sop_class is None:
        return Refusal(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "dataset has no SOP Class UID")
    if request_sop_class_uid is not None and sop_class != request_sop_class_uid.strip():
        return Refusal(
            Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"dataset SOP Class UID ({_quotable_sop_class(sop_class)}) differs from the "
            f"request's ({_quotable_sop_class(request_sop_class_uid.strip())})",
        )
    for keyword in _REQUIRED_UIDS:
        value = uids[keyword]
        if value is None:
            return Refusal(Status.INVALID_UID, f"{keyword} is missing")
        if not UID(value).is_valid:
            return Refusal(Status.INVALID_UID, f"{keyword} is not a valid UID")
    if uids["SOPInstanceUID"] != request_sop_instance_uid.strip().rstrip("\x00"):
        return Refusal(
            Status.INSTANCE_UID_MISMATCH,
            "dataset SOP Instance UID differs from the C-STORE request's",
        )
    return HeaderUIDs(
        sop_class_uid=sop_class,
        sop_instance_uid=uids["SOPInstanceUID"] or "",
        study_instance_uid=uids["StudyInstanceUID"] or "",
        series_instance_uid=uids["SeriesInstanceUID"] or "",
        transfer_syntax_uid=transfer_syntax,
    )
