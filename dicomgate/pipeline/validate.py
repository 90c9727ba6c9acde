"""Validation: the instance metadata the pipeline relies on, and the site's accept rules.

:class:`InstanceMetadata` is read from the *received* dataset (tolerant: an Integer String
that does not parse becomes ``None``, not a crash); :class:`AcceptRules` says which instances
this node delivers at all.  A violation quarantines the instance with a reason that names the
rule, never a patient value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from dicomgate.uids import is_valid_uid

__all__ = ["AcceptRules", "InstanceMetadata"]


def _valid_uid(value: str) -> str:
    if not is_valid_uid(value):  # the node's one UID rule (PS3.5 9.1, no stray whitespace)
        raise ValueError("not a valid UID")
    return value


Uid = Annotated[str, AfterValidator(_valid_uid)]


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _modality(value: Any) -> str | None:
    """Modality is CS, VM 1 (PS3.3 C.7.3.1): take the first value of a malformed multi-value
    and drop anything that is not a short printable code, rather than fail later."""
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    text = str(value or "").strip()
    return text if 0 < len(text) <= 16 and text.isprintable() and text.isascii() else None


class InstanceMetadata(BaseModel):
    """What the pipeline needs from an instance's header (PS3.3 SOP Common, General Series...)."""

    model_config = ConfigDict(frozen=True)

    sop_class_uid: Uid
    sop_instance_uid: Uid
    study_instance_uid: Uid
    series_instance_uid: Uid
    transfer_syntax_uid: Uid
    modality: str | None = None
    series_number: int | None = None
    instance_number: int | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Self:
        meta = getattr(ds, "file_meta", None)
        return cls(
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
            series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
            transfer_syntax_uid=str(meta.get("TransferSyntaxUID", "")) if meta else "",
            modality=_modality(ds.get("Modality")),
            series_number=_int_or_none(ds.get("SeriesNumber")),
            instance_number=_int_or_none(ds.get("InstanceNumber")),
        )


def _sop_class(uid: str) -> str:
    """A SOP class by its standard name (PS3.6 Annex A), never by a UID (reasons carry none)."""
    known = UID(uid)
    return f"SOP class {known.name}" if known.name != uid else "a non-standard SOP class"


@dataclass(frozen=True)
class AcceptRules:
    """Which instances this node delivers. Empty sets mean "any"."""

    modalities: frozenset[str] = frozenset()
    sop_classes: frozenset[str] = frozenset()
    required: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        modalities: Iterable[str] = (),
        sop_classes: Iterable[str] = (),
        required: Iterable[str] = (),
    ) -> Self:
        required = tuple(required)
        unknown = [k for k in required if tag_for_keyword(k) is None]
        if unknown:
            raise ValueError(f"require_attributes names no DICOM keyword: {unknown}")
        return cls(
            modalities=frozenset(m.strip().upper() for m in modalities),
            sop_classes=frozenset(s.strip() for s in sop_classes),
            required=required,
        )

    def violations(self, meta: InstanceMetadata, ds: Dataset) -> list[str]:
        """Why this instance is not accepted (empty: accepted)."""
        found = []
        if self.modalities and (meta.modality or "").upper() not in self.modalities:
            found.append(f"modality {meta.modality or '(none)'} is not accepted")
        if self.sop_classes and meta.sop_class_uid not in self.sop_classes:
            found.append(f"{_sop_class(meta.sop_class_uid)} is not accepted")
        for keyword in self.required:
            value = ds.get(keyword)
            if value is None or (hasattr(value, "__len__") and len(value) == 0):
                found.append(f"required attribute {keyword} is missing or empty")
        return found
