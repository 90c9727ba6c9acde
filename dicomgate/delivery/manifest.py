"""The study manifest: what was delivered, what was held back, and how it was de-identified.

A manifest is written beside the study as ``<study>/manifest-v<N>.json`` every time the study
completes (N = 1, 2, ... when late instances re-open it). It carries pseudonymized UIDs and
de-identified metadata only. ``schema_version`` changes when a field changes meaning or goes
away; new optional fields do not bump it. :func:`manifest_json_schema` gives the JSON Schema for
partners who validate what they receive.

Build one with :meth:`Manifest.build`, which sorts instances, derives the series list and the
counts, and checks that the keys follow :mod:`dicomgate.delivery.layout`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from dicomgate.delivery.layout import index_key, instance_key, validate_key, validate_uid

__all__ = [
    "BASIC_PROFILE",
    "MANIFEST_SCHEMA_VERSION",
    "Counts",
    "DeidInfo",
    "Manifest",
    "ManifestInstance",
    "ManifestSeries",
    "MissingInstance",
    "ProcedureStep",
    "QuarantinedInstance",
    "Sha256Hex",
    "Uid",
    "manifest_json_schema",
]

MANIFEST_SCHEMA_VERSION: Final = 1
# PS3.16 CID 7050: (113100, DCM, "Basic Application Confidentiality Profile").
BASIC_PROFILE = "113100"

Uid = Annotated[str, AfterValidator(validate_uid)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Key = Annotated[str, AfterValidator(validate_key)]
# PS3.5 6.2 CS is upper-case letters, digits, space and underscore (at most 16 characters);
# real modalities send the odd lower-case letter, so any printable ASCII is accepted.
Modality = Annotated[str, Field(pattern=r"^[ -~]{1,16}$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ManifestInstance(_Model):
    """One delivered (de-identified) instance."""

    sop_instance_uid: Uid
    series_instance_uid: Uid
    sop_class_uid: Uid
    transfer_syntax_uid: Uid
    modality: Modality | None = None
    series_number: int | None = None
    instance_number: int | None = None
    size: int = Field(ge=0, description="Bytes of the delivered object.")
    sha256: Sha256Hex = Field(description="Hex SHA-256 of the delivered object.")
    key: Key = Field(description="Object key relative to the destination root.")


class QuarantinedInstance(_Model):
    """An instance received but not delivered, and why."""

    sop_instance_uid: Uid
    series_instance_uid: Uid | None = None
    sop_class_uid: Uid | None = None
    stage: str = Field(description="Pipeline stage that held it back (validate, deidentify...).")
    reason: str
    quarantined_at: AwareDatetime | None = None


class MissingInstance(_Model):
    """An instance the sender said belongs to the study (storage commitment, MPPS) that had not
    arrived when the study was published (``expected_deadline`` or ``stable_after`` passed)."""

    sop_instance_uid: Uid = Field(description="Pseudonymized SOP Instance UID.")
    expected_by: Literal["commitment", "mpps"] | None = None


class ProcedureStep(_Model):
    """A Modality Performed Procedure Step that named this study."""

    sop_instance_uid: Uid = Field(description="Pseudonymized MPPS SOP Instance UID.")
    status: Literal["IN PROGRESS", "COMPLETED", "DISCONTINUED"]
    instances: int = Field(0, ge=0, description="Instances the COMPLETED step named.")
    discontinuation_reason: str | None = Field(
        None, description="Code meaning (or value) of the Discontinuation Reason Code."
    )
    discontinuation_code: str | None = Field(None, description="'value^scheme'.")


class ManifestSeries(_Model):
    """Summary of one series of delivered instances."""

    series_instance_uid: Uid
    modality: Modality | None = None
    series_number: int | None = None
    instances: int = Field(ge=0)
    bytes: int = Field(ge=0)


class DeidInfo(_Model):
    """How the data were de-identified (PS3.15 Annex E)."""

    profile: str = Field(
        BASIC_PROFILE, description="CID 7050 code of the profile (113100: Basic Profile)."
    )
    profile_name: str = "Basic Application Level Confidentiality Profile"
    options: list[str] = Field(default_factory=list, description="Annex E options applied.")
    table_version: str | None = Field(None, description="PS3.15 edition of Table E.1-1.")
    site_keep: list[str] = Field(default_factory=list, description="Site overrides: kept.")
    site_remove: list[str] = Field(default_factory=list, description="Site overrides: removed.")
    site_replace: list[str] = Field(
        default_factory=list, description="Site overrides: replaced (attribute names only)."
    )
    software: str | None = Field(None, description="e.g. 'dicomgate 0.1.0'.")


class Counts(_Model):
    """Totals, so a reader can check completeness without walking the lists."""

    series: int = Field(ge=0)
    instances: int = Field(ge=0)
    quarantined: int = Field(ge=0)
    bytes: int = Field(ge=0)


def _order(inst: ManifestInstance) -> tuple[float, str, float, str]:
    inf = float("inf")
    return (
        inst.series_number if inst.series_number is not None else inf,
        inst.series_instance_uid,
        inst.instance_number if inst.instance_number is not None else inf,
        inst.sop_instance_uid,
    )


class Manifest(_Model):
    """Manifest version ``manifest_version`` of one pseudonymized study."""

    schema_version: Literal[1] = MANIFEST_SCHEMA_VERSION
    manifest_version: int = Field(ge=1)
    study_instance_uid: Uid
    created_at: AwareDatetime
    first_received_at: AwareDatetime | None = None
    last_received_at: AwareDatetime | None = None
    node: str | None = Field(None, description="The node (AE title or id) that delivered it.")
    destination: str | None = Field(None, description="Destination URL (no credentials).")
    deidentification: DeidInfo
    counts: Counts
    index_key: Key
    series: list[ManifestSeries]
    instances: list[ManifestInstance]
    quarantined: list[QuarantinedInstance] = Field(default_factory=list)
    completion: Literal["commitment", "mpps", "idle"] | None = Field(
        None,
        description="How completeness was decided: every instance a storage commitment or "
        "a COMPLETED MPPS named arrived (or its deadline passed), or stable_after of quiet.",
    )
    missing: list[MissingInstance] = Field(default_factory=list)
    procedure_steps: list[ProcedureStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        uids = [i.sop_instance_uid for i in self.instances]
        if len(set(uids)) != len(uids):
            raise ValueError("an instance is listed twice")
        held = {q.sop_instance_uid for q in self.quarantined}
        if held.intersection(uids):
            raise ValueError("an instance is both delivered and quarantined")
        expected = Counts(
            series=len(self.series),
            instances=len(self.instances),
            quarantined=len(self.quarantined),
            bytes=sum(i.size for i in self.instances),
        )
        if self.counts != expected:
            raise ValueError(f"counts {self.counts} do not match the lists ({expected})")
        return self

    @classmethod
    def build(
        cls,
        *,
        study_instance_uid: str,
        manifest_version: int,
        instances: Iterable[ManifestInstance],
        quarantined: Iterable[QuarantinedInstance] = (),
        deidentification: DeidInfo,
        created_at: datetime,
        first_received_at: datetime | None = None,
        last_received_at: datetime | None = None,
        node: str | None = None,
        destination: str | None = None,
        completion: Literal["commitment", "mpps", "idle"] | None = None,
        missing: Iterable[MissingInstance] = (),
        procedure_steps: Iterable[ProcedureStep] = (),
    ) -> Manifest:
        """A manifest with sorted instances, derived series and counts; keys are checked."""
        ordered = sorted(instances, key=_order)
        for inst in ordered:
            expected = instance_key(
                study_instance_uid, inst.series_instance_uid, inst.sop_instance_uid
            )
            if inst.key != expected:
                raise ValueError(f"instance key {inst.key!r} is not the layout's {expected!r}")
        series: dict[str, ManifestSeries] = {}
        for inst in ordered:
            current = series.get(inst.series_instance_uid)
            series[inst.series_instance_uid] = ManifestSeries(
                series_instance_uid=inst.series_instance_uid,
                modality=current.modality if current and current.modality else inst.modality,
                series_number=(
                    current.series_number
                    if current and current.series_number is not None
                    else inst.series_number
                ),
                instances=(current.instances if current else 0) + 1,
                bytes=(current.bytes if current else 0) + inst.size,
            )
        held = sorted(quarantined, key=lambda q: q.sop_instance_uid)
        return cls(
            manifest_version=manifest_version,
            study_instance_uid=study_instance_uid,
            created_at=created_at,
            first_received_at=first_received_at,
            last_received_at=last_received_at,
            node=node,
            destination=destination,
            deidentification=deidentification,
            counts=Counts(
                series=len(series),
                instances=len(ordered),
                quarantined=len(held),
                bytes=sum(i.size for i in ordered),
            ),
            index_key=index_key(study_instance_uid, manifest_version),
            series=list(series.values()),
            instances=ordered,
            quarantined=held,
            completion=completion,
            missing=sorted(missing, key=lambda m: m.sop_instance_uid),
            procedure_steps=list(procedure_steps),
        )

    def to_json(self) -> bytes:
        """The manifest as UTF-8 JSON (indented: partners read these)."""
        return self.model_dump_json(indent=2).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse and validate a manifest."""
        return cls.model_validate_json(data)


def manifest_json_schema() -> dict[str, Any]:
    """JSON Schema of the manifest (for ``docs/`` and partners' validators)."""
    return Manifest.model_json_schema(mode="serialization")
