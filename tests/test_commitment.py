"""Storage Commitment Push Model SCP with pynetdicom peers (issue 10, item 1): the report on
the requesting association, on a new association to the peer table's address, after a
restart, failures with their reasons, and the N-ACTION's own checks."""

from __future__ import annotations

import json
import queue
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt

from dicomgate.commitment import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT_INSTANCE,
    STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
)
from dicomgate.config import Settings
from dicomgate.node import StartupError
from dicomgate.scp._tls import server_context
from dicomgate.state import CommitmentState
from dicomgate.testing import write_tiny_study
from tests.helpers import NodeHandle, send_files, start_node, wait_for
from tests.tls_certs import CertAuthority

SC_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
CT = "1.2.840.10008.5.1.4.1.1.2"


def _request(paths: list[Path], *, extra: list[tuple[str, str]] = ()) -> tuple[str, Dataset]:  # type: ignore[assignment]
    txn = generate_uid()
    ds = Dataset()
    ds.TransactionUID = txn
    items = []
    refs = [
        (str(m.SOPClassUID), str(m.SOPInstanceUID))
        for m in (dcmread(p, stop_before_pixels=True) for p in paths)
    ] + list(extra)
    for cls, inst in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = inst
        items.append(item)
    ds.ReferencedSOPSequence = items
    return txn, ds


class Listener:
    """A pynetdicom Storage Commitment SCU's own listener: receives N-EVENT-REPORTs."""

    def __init__(self, ae_title: str = "REQUESTER") -> None:
        self.reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(STORAGE_COMMITMENT, SC_SYNTAXES, scu_role=True, scp_role=True)
        self.server: Any = None

    def _on_report(self, event: Any) -> tuple[int, None]:
        self.reports.put((int(event.event_type), event.event_information))
        return 0x0000, None

    def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = self.ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
            ssl_context=ssl_context,
        )
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


@pytest.fixture
def listener() -> Iterator[Listener]:
    ln = Listener()
    ln.start()
    try:
        yield ln
    finally:
        ln.stop()


def _n_action(
    handle: NodeHandle,
    ds: Dataset,
    *,
    wait_report: bool = False,
    action_type: int = 1,
    aet: str = "REQUESTER",
    take_reports: bool = True,
) -> tuple[int, tuple[int, Dataset] | None]:
    """Send one N-ACTION; with ``wait_report`` keep the association open for the report."""
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def on_report(event: Any) -> tuple[int, None]:
        reports.put((int(event.event_type), event.event_information))
        return 0x0000, None

    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(STORAGE_COMMITMENT, SC_SYNTAXES)
    assoc = ae.associate(
        handle.host,
        handle.port,
        ae_title="DICOMGATE",
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)] if take_reports else [],
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(
            ds, action_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
        report = reports.get(timeout=10) if wait_report else None
    finally:
        assoc.release()
    return int(status.Status), report


def _refs(ds: Dataset, name: str) -> dict[str, int]:
    return {
        str(i.ReferencedSOPInstanceUID): int(i.get("FailureReason", 0)) for i in ds.get(name, [])
    }


def test_report_on_the_requesting_association(tmp_path: Path) -> None:
    """Instances stored, then N-ACTION on an association that stays open: the N-EVENT-REPORT
    comes back on it, every instance committed (Event Type 1)."""
    paths = write_tiny_study(tmp_path / "in", 3)
    with start_node(tmp_path / "node") as h:
        assert send_files(h.host, h.port, paths, aet="REQUESTER") == [0, 0, 0]
        txn, ds = _request(paths)
        status, report = _n_action(h, ds, wait_report=True)
        assert status == 0 and report is not None
        event_type, info = report
        assert event_type == 1 and str(info.TransactionUID) == txn
        assert set(_refs(info, "ReferencedSOPSequence")) == {
            str(dcmread(p).SOPInstanceUID) for p in paths
        }
        assert "FailedSOPSequence" not in info
        assert wait_for(
            lambda: h.node.state.commitment(txn).state == CommitmentState.REPORTED  # type: ignore[union-attr]
        )
    # the audit trail records the report: Instances Transferred (110104), action R, to the
    # requester, the study by its pseudonym (never the original Study Instance UID)
    from tests.audit.helpers import assert_valid, audit_lines, event_id

    study = str(dcmread(paths[0]).StudyInstanceUID)
    docs = [assert_valid(line) for line in audit_lines(tmp_path / "node" / "audit" / "audit.log")]
    [report_doc] = [
        d
        for d in docs
        if event_id(d) == "110104" and d.find("EventIdentification").get("EventActionCode") == "R"
    ]
    assert "REQUESTER" in {p.get("UserID") for p in report_doc.findall("ActiveParticipant")}
    assert all(study not in line for line in audit_lines(tmp_path / "node" / "audit" / "audit.log"))


def test_report_on_a_new_association_with_failures(tmp_path: Path, listener: Listener) -> None:
    """The requester releases at once: the report goes to the peer table's address on a new
    association (SCP role proposed); an unknown instance fails 0x0112 after the timeout, one
    referenced with the wrong SOP Class fails 0x0119."""
    paths = write_tiny_study(tmp_path / "in", 2)
    port = int(listener.server.server_address[1])
    with start_node(
        tmp_path / "node",
        commitment_peers={"REQUESTER": f"127.0.0.1:{port}"},
        commitment_timeout=0.5,
    ) as h:
        assert send_files(h.host, h.port, paths, aet="REQUESTER") == [0, 0]
        stored = [str(dcmread(p).SOPInstanceUID) for p in paths]
        unknown = generate_uid()
        txn, ds = _request(
            paths[:1], extra=[(CT, unknown), ("1.2.840.10008.5.1.4.1.1.4", stored[1])]
        )
        status, _ = _n_action(h, ds)
        assert status == 0
        event_type, info = listener.reports.get(timeout=15)
        assert event_type == 2 and str(info.TransactionUID) == txn
        assert _refs(info, "ReferencedSOPSequence") == {stored[0]: 0}
        assert _refs(info, "FailedSOPSequence") == {
            unknown: NO_SUCH_OBJECT_INSTANCE,
            stored[1]: CLASS_INSTANCE_CONFLICT,
        }
        state = h.node.state
        assert state is not None
        assert wait_for(
            lambda: (
                (c := state.commitment(txn)) is not None
                and c.state == CommitmentState.REPORTED
                and c.failed == 2
            )
        )
        metrics = h.node.metrics.registry.get_sample_value(
            "dicomgate_commitments_total", {"result": "failed"}
        )
        assert metrics == 1


def test_pending_commitment_answered_after_restart(tmp_path: Path, listener: Listener) -> None:
    """A node stopped between N-ACTION and N-EVENT-REPORT answers after its restart."""
    paths = write_tiny_study(tmp_path / "in", 2)
    port = int(listener.server.server_address[1])
    data = tmp_path / "node"
    # no peer configured, and a requester that refuses reports on its own association (it may
    # still be open when the report is ready): the first run cannot deliver, keeps it pending
    with start_node(data) as h:
        assert send_files(h.host, h.port, paths, aet="REQUESTER") == [0, 0]
        txn, ds = _request(paths)
        assert _n_action(h, ds, take_reports=False)[0] == 0
        assert wait_for(
            lambda: (
                (c := h.node.state.commitment(txn)) is not None  # type: ignore[union-attr]
                and c.attempts >= 1
                and "commitment_peers" in (c.outcome or "")
            )
        )
    assert listener.reports.empty()
    with start_node(data, commitment_peers={"REQUESTER": f"127.0.0.1:{port}"}) as h:
        event_type, info = listener.reports.get(timeout=90)  # the retry backoff is short
        assert event_type == 1 and str(info.TransactionUID) == txn
        assert len(info.ReferencedSOPSequence) == 2


@pytest.mark.parametrize(
    ("change", "action_type", "expected"),
    [
        ("none", 7, 0x0123),  # no such action type
        ("no-transaction", 1, 0x0120),  # missing attribute
        ("bad-transaction", 1, 0x0106),  # invalid attribute value
        ("empty-sequence", 1, 0x0121),  # missing attribute value
        ("no-sequence", 1, 0x0120),
    ],
)
def test_n_action_checks(tmp_path: Path, change: str, action_type: int, expected: int) -> None:
    paths = write_tiny_study(tmp_path / "in", 1)
    _, ds = _request(paths)
    if change == "no-transaction":
        del ds.TransactionUID
    elif change == "bad-transaction":
        ds.TransactionUID = "1.2.x"
    elif change == "empty-sequence":
        ds.ReferencedSOPSequence = []
    elif change == "no-sequence":
        del ds.ReferencedSOPSequence
    with start_node(tmp_path / "node") as h:
        status, _ = _n_action(h, ds, action_type=action_type)
        assert status == expected
        assert h.node.state.due_commitments() == []  # type: ignore[union-attr]


def test_role_selection_is_accepted_for_the_callback(tmp_path: Path) -> None:
    """A requester proposing both roles for Storage Commitment gets an association."""
    with start_node(tmp_path / "node") as h:
        ae = AE(ae_title="REQUESTER")
        ae.add_requested_context(STORAGE_COMMITMENT, SC_SYNTAXES)
        role = build_role(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
        assoc = ae.associate(h.host, h.port, ae_title="DICOMGATE", ext_neg=[role])
        assert assoc.is_established
        assoc.release()


def test_handlers_stay_thin_under_concurrent_stores(tmp_path: Path) -> None:
    """An N-ACTION among C-STOREs on other associations answers at once (no report wait)."""
    paths = write_tiny_study(tmp_path / "in", 4)
    with start_node(tmp_path / "node") as h:
        done: list[list[int | None]] = []
        t = threading.Thread(
            target=lambda: done.append(send_files(h.host, h.port, paths[2:], aet="OTHER"))
        )
        t.start()
        assert send_files(h.host, h.port, paths[:2], aet="REQUESTER") == [0, 0]
        _, ds = _request(paths[:2])
        status, report = _n_action(h, ds, wait_report=True)
        t.join(30)
        assert status == 0 and report is not None and report[0] == 1
        assert done == [[0, 0]]


def test_status_shows_expected_and_pending(tmp_path: Path) -> None:
    """``dicomgate status STUDY``: expected vs received counts and the pending commitment."""
    from click.testing import CliRunner

    from dicomgate.cli import main

    paths = write_tiny_study(tmp_path / "in", 3)
    study = str(dcmread(paths[0]).StudyInstanceUID)
    data = tmp_path / "node"
    with start_node(data) as h:
        assert send_files(h.host, h.port, paths[:2], aet="REQUESTER") == [0, 0]
        txn, ds = _request(paths)  # names the third, never sent
        assert _n_action(h, ds)[0] == 0
        state = h.node.state
        assert state is not None
        assert wait_for(lambda: state.expectations(study) != [])
    out = CliRunner().invoke(main, ["status", study, "--data-dir", str(data)])
    assert out.exit_code == 0, out.output
    assert "expected 3 instances, 2 received, 1 missing" in out.output
    assert "1 storage commitments pending" in out.output and txn in out.output
    as_json = CliRunner().invoke(main, ["status", study, "--json", "--data-dir", str(data)])
    [s] = json.loads(as_json.output)["studies"]
    assert (s["expected"], s["expected_received"], s["pending_commitments"]) == (3, 2, [txn])


def _tls_listener(tmp_path: Path, ca: CertAuthority) -> tuple[Listener, int]:
    """A requester taking reports on a DICOM TLS port only (certificate from ``ca``)."""
    issued = ca.issue("requester", "requester.example", server=True)
    ln = Listener()
    return ln, ln.start(server_context(issued.cert, issued.key))


def test_report_called_back_over_tls(tmp_path: Path) -> None:
    """A tls:// commitment peer gets its report over DICOM TLS, its certificate checked
    against commitment_tls_ca_file; a peer whose certificate another CA issued gets nothing
    (the report stays pending, the error says TLS)."""
    ca, stranger = CertAuthority(tmp_path / "ca"), CertAuthority(tmp_path / "other", name="x")
    paths = write_tiny_study(tmp_path / "in", 2)
    good, good_port = _tls_listener(tmp_path / "good", ca)
    bad, bad_port = _tls_listener(tmp_path / "bad", stranger)
    try:
        with start_node(
            tmp_path / "node",
            commitment_peers={
                "REQUESTER": f"tls://127.0.0.1:{good_port}",
                "IMPOSTOR": f"tls://127.0.0.1:{bad_port}",
            },
            commitment_tls_ca_file=ca.cert,
        ) as h:
            assert send_files(h.host, h.port, paths, aet="REQUESTER") == [0, 0]
            txn, ds = _request(paths)
            assert _n_action(h, ds)[0] == 0  # released at once: the report is called back
            event_type, info = good.reports.get(timeout=15)
            assert event_type == 1 and str(info.TransactionUID) == txn
            assert set(_refs(info, "ReferencedSOPSequence")) == {
                str(dcmread(p).SOPInstanceUID) for p in paths
            }

            other, ds2 = _request(paths)
            assert _n_action(h, ds2, aet="IMPOSTOR")[0] == 0
            state = h.node.state
            assert state is not None
            assert wait_for(
                lambda: "TLS" in (((c := state.commitment(other)) and c.outcome) or ""), 15
            ), state.commitment(other)
            assert state.commitment(other).state != CommitmentState.REPORTED  # type: ignore[union-attr]
            assert bad.reports.empty()
    finally:
        good.stop()
        bad.stop()


def test_tls_only_node_refuses_plaintext_commitment_peers(tmp_path: Path) -> None:
    """PLAINTEXT=false sends nothing in clear: a host:port peer is a start-up error naming
    the setting; the same peer as tls:// is accepted."""
    issued = CertAuthority(tmp_path / "ca").issue("node", "node", server=True)
    tls = {"plaintext": False, "tls_cert_file": issued.cert, "tls_key_file": issued.key}
    with pytest.raises(ValueError, match=r"COMMITMENT_PEERS .*PLAINTEXT=false.*tls://"):
        Settings(commitment_peers={"PACS": "10.0.0.5:104"}, **tls)
    assert Settings(commitment_peers={"PACS": "tls://10.0.0.5:2762"}, **tls).commitment_peers
    with pytest.raises(ValueError, match="expected 'host:port' or 'tls://host:port'"):
        Settings(commitment_peers={"PACS": "tls://10.0.0.5"})


@pytest.mark.parametrize("problem", ["missing", "not a certificate"])
def test_bad_commitment_ca_file_stops_start_up_naming_the_setting(
    tmp_path: Path, problem: str
) -> None:
    """A commitment_tls_ca_file that cannot be loaded is a start-up error naming the setting
    (not a failure of every call-back later); plaintext peers alone never read it."""
    ca_file = tmp_path / "ca.pem"
    if problem != "missing":
        ca_file.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    peers = {"PACS": "tls://127.0.0.1:2762"}
    with (
        pytest.raises(StartupError, match=r"CA file .*ca\.pem.*COMMITMENT_TLS_CA_FILE"),
        start_node(tmp_path / "node", commitment_peers=peers, commitment_tls_ca_file=ca_file),
    ):
        pass
    with start_node(
        tmp_path / "plain",
        commitment_peers={"PACS": "127.0.0.1:104"},
        commitment_tls_ca_file=ca_file,
    ) as h:
        assert h.port
