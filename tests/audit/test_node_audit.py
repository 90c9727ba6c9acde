"""A full send-and-deliver run writes the audit trail the issue asks for: every message
validates against the schema, names the calling AE, the peer address and the counts, and carries
no original identifier or patient value; a syslog-over-TLS repository gets the same messages,
also those written while it was down."""

from __future__ import annotations

import json
from pathlib import Path

from lxml import etree
from pydicom import dcmread

from dicomgate.testing import CT_PHI, write_ct_study
from tests.audit.helpers import (
    SyslogReceiver,
    assert_valid,
    audit_lines,
    event_id,
    make_pki,
)
from tests.helpers import associate, dicomgate_cli, send_files, start_node, wait_for


def _action(doc: etree._Element) -> str:
    return str(doc.find("EventIdentification").get("EventActionCode"))


def test_send_and_deliver_audit_trail(tmp_path: Path) -> None:
    paths = write_ct_study(tmp_path / "study", 3, rows=32, columns=32)
    originals = [dcmread(p) for p in paths]
    study_uid = str(originals[0].StudyInstanceUID)
    data = tmp_path / "data"
    pki = make_pki(tmp_path / "pki")
    receiver = SyslogReceiver(pki).start()
    try:
        with start_node(
            data,
            pipeline=True,
            stable_after=0.3,
            audit_syslog_url=receiver.url,
            audit_syslog_ca_file=pki.ca_file,
            notify_webhook_url=None,
        ) as n:
            audit_file = data / "audit" / "audit.log"
            assert wait_for(lambda: len(receiver.frames) >= 1, timeout=30)  # Application Start
            receiver.stop()  # the repository goes down; everything below is queued
            assert not receiver.listening
            before = len(receiver.frames)
            # refused: addressed to another AE title
            rejected = associate(n.host, n.port, aec="SOMEONEELSE", aet="INTRUDER")
            assert not rejected.is_established
            assert send_files(n.host, n.port, paths, aet="AUDITCT") == [0, 0, 0]
            assert wait_for(
                lambda: (
                    (s := n.node.state) is not None
                    and (r := s.study(study_uid)) is not None
                    and r.manifest_version == 1
                ),
                timeout=60,
            )
            assert wait_for(lambda: '"110106"' in audit_file.read_text(), timeout=30)
            links = dicomgate_cli(
                "links",
                study_uid,
                "--json",
                "--data-dir",
                str(data),
                env={"DICOMGATE_SECRET_KEY": "k" * 40},
            )
            assert links.returncode == 0, links.stderr
            assert len(receiver.frames) == before  # nothing got through while it was down
            receiver.start()  # back: the queue drains
            assert wait_for(
                lambda: set(receiver.messages()) >= set(audit_lines(audit_file)), timeout=60
            )
        # the node stopped: Application Stop is sent before the sender stops
        assert wait_for(
            lambda: set(receiver.messages()) == set(audit_lines(audit_file)), timeout=30
        )
    finally:
        receiver.stop()

    lines = audit_lines(audit_file)
    docs = [assert_valid(line) for line in lines]
    by_event: dict[str, list[etree._Element]] = {}
    for d in docs:
        by_event.setdefault(event_id(d), []).append(d)

    # Application Activity: start and stop
    types = [
        d.find("EventIdentification/EventTypeCode").get("csd-code") for d in by_event["110100"]
    ]
    assert types == ["110120", "110121"]
    # Security Alert: the rejected association, with the reason and the peer
    [alert] = by_event["110113"]
    assert "called AE title" in alert.findtext("EventIdentification/EventOutcomeDescription")
    peer = alert.find("ActiveParticipant[@UserIsRequestor='true']")
    assert peer.get("UserID") == "INTRUDER" and peer.get("NetworkAccessPointID") == "127.0.0.1"

    # received: Begin Transferring and Instances Transferred (C), per association and study
    received = [d for d in by_event["110104"] if _action(d) == "C"]
    [got] = received
    source = got.find("ActiveParticipant[@UserIsRequestor='true']")
    assert source.get("UserID") == "AUDITCT"
    assert source.get("NetworkAccessPointID") == "127.0.0.1"
    assert source.find("RoleIDCode").get("csd-code") == "110153"
    node = got.find("ActiveParticipant[@UserIsRequestor='false']")
    assert node.get("AlternativeUserID") == "AETITLES=DICOMGATE"
    [sop] = got.iter("SOPClass")
    assert sop.get("UID") == str(originals[0].SOPClassUID) and sop.get("NumberOfInstances") == "3"
    assert [_action(d) for d in by_event["110102"]] == ["E", "E"]  # receiving, exporting

    # exported: Export + Instances Transferred (R) to the destination, with the delivered ids
    state_record = json.loads(links.stdout)
    deid_study = state_record["study_instance_uid"]
    [export] = by_event["110106"]
    [sent] = [d for d in by_event["110104"] if _action(d) == "R"]
    for d in (got, export, sent):
        study = d.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='3']")
        assert study.get("ParticipantObjectID") == deid_study
    delivered = dcmread(next((data / "delivered" / deid_study).rglob("*.dcm")))
    for d in (got, export, sent):
        patient = d.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
        assert patient.get("ParticipantObjectID") == str(delivered.PatientID)
    [count] = sent.iter("SOPClass")
    assert count.get("NumberOfInstances") == "3"
    assert (
        sent.find("ActiveParticipant[@UserIsRequestor='false']").get("UserID").startswith("file://")
    )
    # Query: dicomgate links
    [query] = by_event["110112"]
    assert query.find("EventIdentification").get("EventOutcomeIndicator") == "0"

    # nothing original, nothing of the patient
    text = audit_file.read_text()
    for ds in originals:
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert str(uid) not in text
    for value in CT_PHI.values():
        if len(value) >= 6:
            assert value not in text
