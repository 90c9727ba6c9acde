"""Every audit message the node writes validates against the PS3.15 A.5.1 schema and names
studies and patients only as the identifier setting says."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from lxml import etree
from pydicom import dcmread

from dicomgate.audit import AuditTrail, Identifiers, StudyTally, messages, schema_path
from dicomgate.audit._syslog import frame, parse_syslog_url, syslog_message
from dicomgate.checks import check_header
from dicomgate.deid import PatientPseudonyms, patient_key
from dicomgate.pseudonym import Pseudonymizer
from dicomgate.testing import CT_PHI, write_tiny_study
from tests.audit.helpers import assert_valid, audit_lines, event_id, schema

KEY = b"k" * 40
STUDY = "1.2.826.0.1.3680043.8.498.11"
CT = "1.2.840.10008.5.1.4.1.1.2"
PATIENT_KEY = "id:" + CT_PHI["PatientID"]


def _trail(tmp_path: Path, mode: str = "pseudonymized") -> AuditTrail:
    return AuditTrail(
        tmp_path / "audit" / "audit.log",
        identifiers=Identifiers(mode, Pseudonymizer(KEY)),  # type: ignore[arg-type]
        ae_title="DICOMGATE",
        node_id="node-1",
        background=False,
    ).open()


def _every_event(trail: AuditTrail) -> None:
    tally = StudyTally()
    tally.add(CT, PATIENT_KEY)
    tally.add(CT, PATIENT_KEY)
    tally.add("1.2.840.10008.5.1.4.1.1.7", PATIENT_KEY)
    trail.application_start()
    trail.security_alert(
        "TLS handshake failed: unknown ca", "127.0.0.1:4711", kind="node-authentication"
    )
    trail.on_security_event(
        SimpleNamespace(
            kind="association_rejected",
            listener="dicom",
            peer="127.0.0.1:4712",
            reason="calling AE title not allowed",
            calling_ae="STRANGER",
            called_ae="DICOMGATE",
            rj=(1, 1, 3),
            tls_subject=None,
        )
    )
    trail.on_security_event(
        SimpleNamespace(
            kind="authentication_failed",
            listener="dicom-tls",
            peer="[::1]:4713",
            reason="certificate subject does not match",
            calling_ae="CT1",
            called_ae="DICOMGATE",
            rj=(1, 1, 3),
            tls_subject="CN=other",
        )
    )
    trail.begin_receiving(calling_ae="CT1", peer="10.0.0.7:50000", study_uid=STUDY, tally=tally)
    trail.received(calling_ae="CT1", peer="10.0.0.7:50000", studies={STUDY: tally})
    trail.received(
        calling_ae="CT1", peer="10.0.0.7:50000", studies={STUDY: tally}, how="aborted", refused=1
    )
    trail.begin_export(study_uid=STUDY, destination="s3://bucket/prefix", partners=[])
    trail.exported(
        study_uid=STUDY,
        sop_classes={CT: 2},
        destination="s3://bucket/prefix",
        partners=["https://partner.example/hook", "arn:aws:sns:eu-west-1:1:topic"],
        manifest_version=1,
        quarantined=1,
    )
    trail.query(study=STUDY, study_uid=STUDY, what="links expires=3600")
    trail.query(study="1.2.3", study_uid=None, what="links", outcome="4", description="unknown")
    trail.commitment(calling_ae="CT1", peer="10.0.0.7:50001", studies={STUDY: 3}, failed=1)
    trail.application_stop()


def test_every_message_type_validates(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    _every_event(trail)
    trail.close()
    docs = [assert_valid(line) for line in audit_lines(trail.path)]
    ids = Counter(event_id(d) for d in docs)
    assert set(ids) == {"110100", "110113", "110102", "110104", "110106", "110112"}
    starts = [
        d.find("EventIdentification/EventTypeCode").get("csd-code")
        for d in docs
        if event_id(d) == "110100"
    ]
    assert starts == ["110120", "110121"]
    alerts = [d for d in docs if event_id(d) == "110113"]
    kinds = [a.find("EventIdentification/EventTypeCode").get("csd-code") for a in alerts]
    assert kinds == ["110126", "110132", "110126"]
    assert "calling AE title not allowed" in alerts[1].findtext(
        "EventIdentification/EventOutcomeDescription"
    )
    assert alerts[2].find("ActiveParticipant[@UserID='CT1']").get("NetworkAccessPointID") == "::1"


def test_received_names_peer_counts_and_pseudonyms(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    _every_event(trail)
    trail.close()
    text = trail.path.read_text()
    assert STUDY not in text and CT_PHI["PatientID"] not in text
    for value in CT_PHI.values():
        if len(value) >= 6:  # "F", "053Y": too short to mean anything in a message
            assert value not in text
    pz = Pseudonymizer(KEY)
    docs = [etree.fromstring(line.encode()) for line in audit_lines(trail.path)]
    received = next(
        d
        for d in docs
        if event_id(d) == "110104" and d.find("EventIdentification").get("EventActionCode") == "C"
    )
    source = received.find("ActiveParticipant[@UserIsRequestor='true']")
    assert source.get("UserID") == "CT1" and source.get("NetworkAccessPointID") == "10.0.0.7"
    assert source.find("RoleIDCode").get("csd-code") == "110153"
    dest = received.find("ActiveParticipant[@UserIsRequestor='false']")
    assert dest.find("RoleIDCode").get("csd-code") == "110152"
    assert dest.get("AlternativeUserID") == "AETITLES=DICOMGATE"
    study = received.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='3']")
    assert study.get("ParticipantObjectID") == pz.uid(STUDY)
    counts = {s.get("UID"): int(s.get("NumberOfInstances")) for s in study.iter("SOPClass")}
    assert counts == {CT: 2, "1.2.840.10008.5.1.4.1.1.7": 1}
    patient = received.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
    assert (
        patient.get("ParticipantObjectID") == PatientPseudonyms.derive(pz, PATIENT_KEY).patient_id
    )
    assert patient.find("ParticipantObjectName") is None
    # the export names the partners as destinations and carries the patient noted on receipt
    exported = next(
        d
        for d in docs
        if event_id(d) == "110104"
        and d.find("EventIdentification").get("EventActionCode") == "R"
        and d.find("ActiveParticipant[@UserID='https://partner.example/hook']") is not None
    )
    assert exported.find("ActiveParticipant[@UserID='arn:aws:sns:eu-west-1:1:topic']") is not None
    assert exported.find(".//Anonymized").text == "true"
    assert (
        exported.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
        is not None
    )
    export = next(d for d in docs if event_id(d) == "110106")
    media = export.find("ActiveParticipant/MediaIdentifier/..")
    assert (
        media.get("UserID") == "s3://bucket/prefix"
        and media.get("NetworkAccessPointTypeCode") == "5"
    )


def test_original_identifiers_never_names(tmp_path: Path) -> None:
    trail = _trail(tmp_path, "original")
    _every_event(trail)
    name_only = StudyTally()
    name_only.add(CT, "name:" + CT_PHI["PatientName"])
    trail.received(calling_ae="CT1", peer="10.0.0.7:1", studies={"1.2.3.4": name_only})
    trail.close()
    text = trail.path.read_text()
    assert STUDY in text and CT_PHI["PatientID"] in text
    assert CT_PHI["PatientName"] not in text  # a patient known by name only gets its pseudonym
    for line in audit_lines(trail.path):
        assert_valid(line)


def test_patient_found_again_after_restart(tmp_path: Path) -> None:
    """An export after a restart names the patient the receipt named (read back from the file)."""
    trail = _trail(tmp_path)
    tally = StudyTally()
    tally.add(CT, PATIENT_KEY)
    trail.received(calling_ae="CT1", peer="10.0.0.7:1", studies={STUDY: tally})
    trail.close()
    again = _trail(tmp_path)
    again.exported(
        study_uid=STUDY,
        sop_classes={CT: 1},
        destination="file:///x",
        partners=[],
        manifest_version=1,
    )
    again.close()
    last = etree.fromstring(audit_lines(again.path)[-1].encode())
    patient = last.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
    assert (
        patient.get("ParticipantObjectID")
        == PatientPseudonyms.derive(Pseudonymizer(KEY), PATIENT_KEY).patient_id
    )


def test_header_patient_key_is_the_engines(tmp_path: Path) -> None:
    [path] = write_tiny_study(tmp_path / "s", 1)
    checked = check_header(path, request_sop_class_uid=None, request_sop_instance_uid=None)
    assert not hasattr(checked, "status")
    assert checked.patient_key == patient_key(dcmread(path)) == PATIENT_KEY  # type: ignore[union-attr]


def test_schema_is_not_permissive() -> None:
    rng = schema()
    ok = messages.build(
        messages.AuditSource("src"),
        messages.EV_QUERY,
        action="E",
        participants=[messages.Participant(user_id="u", requestor=True)],
    )
    assert rng.validate(etree.fromstring(ok.xml.encode()))
    broken = ok.xml.replace('EventOutcomeIndicator="0"', 'EventOutcomeIndicator="3"')
    assert not rng.validate(etree.fromstring(broken.encode()))
    no_source = etree.fromstring(ok.xml.encode())
    no_source.remove(no_source.find("AuditSourceIdentification"))
    assert not rng.validate(no_source)
    with pytest.raises(ValueError):
        messages.build(messages.AuditSource("s"), messages.EV_QUERY, action="E", participants=[])
    assert schema_path().name == "audit-message.rng"


def test_control_characters_stay_one_line(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    trail.security_alert("bad\nthing\x00here", "1.2.3.4", calling_ae="A\rB\x01")
    trail.close()
    [line] = audit_lines(trail.path)
    assert_valid(line)


def test_syslog_framing() -> None:
    line = (
        b'<AuditMessage><EventIdentification EventDateTime="2026-01-02T03:04:05.678Z"/>'
        b"</AuditMessage>"
    )
    msg = syslog_message(line, hostname="gate", procid="42")
    assert msg == b"<85>1 2026-01-02T03:04:05.678Z gate dicomgate 42 IHE+RFC-3881 - " + line
    assert frame(msg) == str(len(msg)).encode() + b" " + msg
    assert parse_syslog_url("tls://audit.example") == ("audit.example", 6514)
    assert parse_syslog_url("tls://10.0.0.1:7514") == ("10.0.0.1", 7514)
    for bad in ("udp://x:514", "tcp://x", "tls://:6514", "audit.example:6514"):
        with pytest.raises(ValueError):
            parse_syslog_url(bad)


def test_torn_line_is_ended_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.log"
    path.parent.mkdir()
    path.write_bytes(b"<AuditMessage><EventIdent")  # a crash mid-write
    trail = _trail(tmp_path)
    trail.application_start()
    trail.close()
    lines = audit_lines(path)
    assert lines[0] == "<AuditMessage><EventIdent"
    assert_valid(lines[1])
    assert trail._frames([lines[0].encode()]) == b""
