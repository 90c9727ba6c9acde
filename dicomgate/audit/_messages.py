"""DICOM audit messages (PS3.15 A.5): the XML of each event, built with the standard library.

Every builder returns an :class:`AuditMessage` (one XML element tree) that validates against
``data/audit-message.rng`` (PS3.15 A.5.1). Element order follows the schema; values are
sanitized (no control characters) so a message is always one line of well-formed XML.

Codes: DCM (PS3.16) for events, roles and ID types; RFC-3881 for the patient number and URIs.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = [
    "AuditMessage",
    "Code",
    "Participant",
    "ParticipantObject",
    "application_activity",
    "begin_transferring",
    "build",
    "export",
    "instances_transferred",
    "patient_object",
    "query",
    "security_alert",
    "study_object",
]


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value (csd-code, codeSystemName, originalText)."""

    code: str
    scheme: str
    meaning: str


# -- PS3.16 / RFC 3881 codes ----------------------------------------------------------------------
EV_APPLICATION_ACTIVITY = Code("110100", "DCM", "Application Activity")
EV_BEGIN_TRANSFERRING = Code("110102", "DCM", "Begin Transferring DICOM Instances")
EV_INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
EV_EXPORT = Code("110106", "DCM", "Export")
EV_QUERY = Code("110112", "DCM", "Query")
EV_SECURITY_ALERT = Code("110113", "DCM", "Security Alert")

APPLICATION_START = Code("110120", "DCM", "Application Start")
APPLICATION_STOP = Code("110121", "DCM", "Application Stop")

#: Security Alert types (CID 403) by the names callers use
ALERT_TYPES = {
    "node-authentication": Code("110126", "DCM", "Node Authentication"),
    "restricted-function": Code("110132", "DCM", "Use of Restricted Function"),
    "security-configuration": Code("110129", "DCM", "Security Configuration"),
    "software-configuration": Code("110131", "DCM", "Software Configuration"),
    "network-configuration": Code("110128", "DCM", "Network Configuration"),
}

ROLE_APPLICATION = Code("110150", "DCM", "Application")
ROLE_APPLICATION_LAUNCHER = Code("110151", "DCM", "Application Launcher")
ROLE_DESTINATION = Code("110152", "DCM", "Destination Role ID")
ROLE_SOURCE = Code("110153", "DCM", "Source Role ID")
ROLE_DESTINATION_MEDIA = Code("110154", "DCM", "Destination Media")
MEDIA_URI = Code("110037", "DCM", "URI")

ID_STUDY = Code("110180", "DCM", "Study Instance UID")
ID_PATIENT = Code("2", "RFC-3881", "Patient Number")
ID_URI = Code("12", "RFC-3881", "URI")
#: the query of ``dicomgate links`` is no DICOM query: a local code says what it is
ID_LINKS_QUERY = Code("links", "DCMGATE", "dicomgate links")

#: AuditSourceTypeCode 4: application server process
SOURCE_TYPE_APPLICATION_SERVER = "4"

# network access point type codes
NAP_MACHINE_NAME = "1"
NAP_IP_ADDRESS = "2"
NAP_URI = "5"

OUTCOME_SUCCESS = "0"
OUTCOME_MINOR_FAILURE = "4"
OUTCOME_SERIOUS_FAILURE = "8"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _clean(value: object) -> str:
    """One line of XML-safe text: control characters become spaces (a peer's AE title may hold
    anything; XML 1.0 cannot carry most of them and the file is one message per line)."""
    return _CONTROL.sub(" ", str(value))


def _token(value: object) -> str:
    """An ``xsd:token``: no leading, trailing or doubled spaces."""
    return " ".join(_clean(value).split()) or "-"


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(
        parent,
        tag,
        {
            "csd-code": _token(code.code),
            "codeSystemName": _token(code.scheme),
            "originalText": _token(code.meaning),
        },
    )


@dataclass(frozen=True, slots=True)
class Participant:
    """An ActiveParticipant: a process or person taking part (never a patient)."""

    user_id: str
    requestor: bool
    role: Code | None = None
    alternative_user_id: str | None = None
    user_name: str | None = None
    access_point: str | None = None
    access_point_type: str | None = None
    media_type: Code | None = None

    def to_xml(self, parent: ET.Element) -> None:
        attrs = {"UserID": _clean(self.user_id) or "-"}
        if self.alternative_user_id:
            attrs["AlternativeUserID"] = _clean(self.alternative_user_id)
        if self.user_name:
            attrs["UserName"] = _clean(self.user_name)
        attrs["UserIsRequestor"] = "true" if self.requestor else "false"
        if self.access_point:
            attrs["NetworkAccessPointID"] = _token(self.access_point)
            if self.access_point_type:
                attrs["NetworkAccessPointTypeCode"] = self.access_point_type
        el = ET.SubElement(parent, "ActiveParticipant", attrs)
        if self.role is not None:
            _coded(el, "RoleIDCode", self.role)
        if self.media_type is not None:
            _coded(ET.SubElement(el, "MediaIdentifier"), "MediaType", self.media_type)


@dataclass(frozen=True, slots=True)
class ParticipantObject:
    """A ParticipantObjectIdentification: a study, a patient, a query, an alert subject."""

    object_id: str
    id_type: Code
    type_code: str | None = None
    role: str | None = None
    life_cycle: str | None = None
    query: bytes | None = None
    #: ParticipantObjectDetail type -> value (base64-encoded in the XML)
    details: Sequence[tuple[str, bytes]] = ()
    #: SOP Class UID -> number of instances (a DICOM object description), if any
    sop_classes: Mapping[str, int] | None = None
    anonymized: bool | None = None

    def to_xml(self, parent: ET.Element) -> None:
        attrs = {"ParticipantObjectID": _token(self.object_id)}
        if self.type_code:
            attrs["ParticipantObjectTypeCode"] = self.type_code
        if self.role:
            attrs["ParticipantObjectTypeCodeRole"] = self.role
        if self.life_cycle:
            attrs["ParticipantObjectDataLifeCycle"] = self.life_cycle
        el = ET.SubElement(parent, "ParticipantObjectIdentification", attrs)
        _coded(el, "ParticipantObjectIDTypeCode", self.id_type)
        if self.query is not None:
            ET.SubElement(el, "ParticipantObjectQuery").text = base64.b64encode(self.query).decode()
        for kind, value in self.details:
            ET.SubElement(
                el,
                "ParticipantObjectDetail",
                {"type": _token(kind), "value": base64.b64encode(value).decode()},
            )
        if self.sop_classes is not None or self.anonymized is not None:
            desc = ET.SubElement(el, "ParticipantObjectDescription")
            for uid, count in sorted((self.sop_classes or {}).items()):
                ET.SubElement(
                    desc, "SOPClass", {"UID": _token(uid), "NumberOfInstances": str(count)}
                )
            if self.anonymized is not None:
                ET.SubElement(desc, "Anonymized").text = "true" if self.anonymized else "false"


@dataclass(frozen=True, slots=True)
class AuditSource:
    """Who reports: AuditSourceID (and the enterprise site, if configured)."""

    source_id: str
    site_id: str | None = None


@dataclass(slots=True)
class AuditMessage:
    """One audit message; ``xml`` is its single-line serialization."""

    root: ET.Element
    event: Code = field(default=EV_APPLICATION_ACTIVITY)

    @property
    def xml(self) -> str:
        return ET.tostring(self.root, encoding="unicode")

    @property
    def event_time(self) -> str:
        ident = self.root.find("EventIdentification")
        return ident.get("EventDateTime", "") if ident is not None else ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build(
    source: AuditSource,
    event: Code,
    *,
    action: str,
    outcome: str = OUTCOME_SUCCESS,
    description: str | None = None,
    event_types: Iterable[Code] = (),
    participants: Iterable[Participant],
    objects: Iterable[ParticipantObject] = (),
    when: str | None = None,
) -> AuditMessage:
    """Any audit message: the event, its active participants (at least one), the source and the
    participant objects, in the schema's order."""
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": action,
            "EventDateTime": when or _now(),
            "EventOutcomeIndicator": outcome,
        },
    )
    _coded(ident, "EventID", event)
    for code in event_types:
        _coded(ident, "EventTypeCode", code)
    if description:
        ET.SubElement(ident, "EventOutcomeDescription").text = _clean(description)
    people = list(participants)
    if not people:
        raise ValueError("an audit message needs at least one active participant")
    for p in people:
        p.to_xml(root)
    attrs = {"AuditSourceID": _token(source.source_id)}
    if source.site_id:
        attrs["AuditEnterpriseSiteID"] = _token(source.site_id)
    src = ET.SubElement(root, "AuditSourceIdentification", attrs)
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": SOURCE_TYPE_APPLICATION_SERVER})
    for obj in objects:
        obj.to_xml(root)
    return AuditMessage(root, event)


# -- participant objects --------------------------------------------------------------------------
def study_object(
    study_id: str,
    sop_classes: Mapping[str, int] | None = None,
    *,
    anonymized: bool | None = None,
) -> ParticipantObject:
    """A study (system object, role Report) with its instance counts by SOP class."""
    return ParticipantObject(
        object_id=study_id,
        id_type=ID_STUDY,
        type_code="2",
        role="3",
        sop_classes=dict(sop_classes) if sop_classes is not None else None,
        anonymized=anonymized,
    )


def patient_object(patient_id: str) -> ParticipantObject:
    """A patient (person, role Patient) by identifier only: never a name."""
    return ParticipantObject(object_id=patient_id, id_type=ID_PATIENT, type_code="1", role="1")


def _with_patient(
    studies: Sequence[ParticipantObject], patient: ParticipantObject | None
) -> list[ParticipantObject]:
    """The studies of a transfer, then their patient if known (the schema's order)."""
    return [*studies, *([patient] if patient is not None else [])]


# -- events ---------------------------------------------------------------------------------------
def application_activity(
    source: AuditSource, application: Participant, *, start: bool, launcher: Participant | None
) -> AuditMessage:
    """110100 Application Activity, 110120 Application Start / 110121 Application Stop."""
    people = [application, *([launcher] if launcher is not None else [])]
    return build(
        source,
        EV_APPLICATION_ACTIVITY,
        action="E",
        event_types=[APPLICATION_START if start else APPLICATION_STOP],
        participants=people,
    )


def security_alert(
    source: AuditSource,
    *,
    kind: str,
    reason: str,
    reporter: Participant,
    performer: Participant | None,
    subject: str,
    outcome: str = OUTCOME_MINOR_FAILURE,
) -> AuditMessage:
    """110113 Security Alert: ``kind`` (a key of :data:`ALERT_TYPES`), the reason in words, the
    node reporting it, the peer that caused it and the alert subject (a URI)."""
    try:
        alert_type = ALERT_TYPES[kind]
    except KeyError:
        raise ValueError(
            f"unknown security alert kind {kind!r}: one of {sorted(ALERT_TYPES)}"
        ) from None
    subject_object = ParticipantObject(
        object_id=subject,
        id_type=ID_URI,
        type_code="2",
        role="13",  # Security Resource
        details=[("Alert Description", _clean(reason).encode("utf-8"))],
    )
    return build(
        source,
        EV_SECURITY_ALERT,
        action="E",
        outcome=outcome,
        description=reason,
        event_types=[alert_type],
        participants=[reporter, *([performer] if performer is not None else [])],
        objects=[subject_object],
    )


def begin_transferring(
    source: AuditSource,
    *,
    sender: Participant,
    receiver: Participant,
    studies: Sequence[ParticipantObject],
    patient: ParticipantObject | None,
) -> AuditMessage:
    """110102 Begin Transferring DICOM Instances."""
    return build(
        source,
        EV_BEGIN_TRANSFERRING,
        action="E",
        participants=[sender, receiver],
        objects=_with_patient(studies, patient),
    )


def instances_transferred(
    source: AuditSource,
    *,
    action: str,
    sender: Participant,
    receivers: Sequence[Participant],
    studies: Sequence[ParticipantObject],
    patient: ParticipantObject | None,
    outcome: str = OUTCOME_SUCCESS,
    description: str | None = None,
) -> AuditMessage:
    """110104 DICOM Instances Transferred: ``action`` C (received, created here) or R (sent)."""
    return build(
        source,
        EV_INSTANCES_TRANSFERRED,
        action=action,
        outcome=outcome,
        description=description,
        participants=[sender, *receivers],
        objects=_with_patient(studies, patient),
    )


def export(
    source: AuditSource,
    *,
    exporter: Participant,
    media: Participant,
    studies: Sequence[ParticipantObject],
    patient: ParticipantObject | None,
    outcome: str = OUTCOME_SUCCESS,
    description: str | None = None,
) -> AuditMessage:
    """110106 Export: data leaves the node for a destination (media: a URI)."""
    return build(
        source,
        EV_EXPORT,
        action="R",
        outcome=outcome,
        description=description,
        participants=[exporter, media],
        objects=_with_patient(studies, patient),
    )


def query(
    source: AuditSource,
    *,
    requestor: Participant,
    processor: Participant,
    query_text: str,
    studies: Sequence[ParticipantObject] = (),
    outcome: str = OUTCOME_SUCCESS,
    description: str | None = None,
) -> AuditMessage:
    """110112 Query: what was asked (``ParticipantObjectQuery``) and the studies it named."""
    asked = ParticipantObject(
        object_id="dicomgate-links",
        id_type=ID_LINKS_QUERY,
        type_code="2",
        role="24",  # Query
        query=query_text.encode("utf-8"),
    )
    return build(
        source,
        EV_QUERY,
        action="E",
        outcome=outcome,
        description=description,
        participants=[requestor, processor],
        objects=[asked, *studies],
    )
