"""The event-driven pynetdicom replacements (dicomgate.scp._fast) and the spool's group commit.

The pins below fail when pynetdicom changes a method that ``_fast`` copies or relies on: re-read
the new pynetdicom code, port the change into ``_fast`` (or drop the replacement), then update
the pin and ``_fast.SUPPORTED``.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydicom.filewriter import write_file_meta_info
from pynetdicom import dimse_messages, dsutils
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicomgate.scp import _fast
from dicomgate.spool import DirSyncer
from tests.helpers import associate, start_node, wait_for

PINNED = {
    "Association._run_reactor": (Association._run_reactor, "f28838c5559e462a"),
    "Association.__init__": (Association.__init__, "eb07516b8009ad8f"),
    "Association.kill": (Association.kill, "8f9713666a7f4cff"),
    "DULServiceProvider.run_reactor": (DULServiceProvider.run_reactor, "e3a10eb3a0931e48"),
    "DULServiceProvider.__init__": (DULServiceProvider.__init__, "c82dafa9438ddf70"),
    "DULServiceProvider.stop_dul": (DULServiceProvider.stop_dul, "28a7e0be126e7b30"),
    "AssociationSocket.recv": (AssociationSocket.recv, "6bc20a33b1b7cfe7"),
    "RequestHandler._create_association": (
        RequestHandler._create_association,
        "05c8d12b79863cdb",
    ),
    "DIMSEServiceProvider.send_msg": (DIMSEServiceProvider.send_msg, "a839cf2fb46976d9"),
    "DIMSEMessage.decode_msg": (DIMSEMessage.decode_msg, "f51c777e841a76be"),
    "dsutils.create_file_meta": (dsutils.create_file_meta, "035ed415f5aeea15"),
}


def test_fast_path_is_enabled_for_this_pynetdicom() -> None:
    assert _fast.enabled(), "pynetdicom upgraded: review dicomgate/scp/_fast.py"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_replaced_pynetdicom_code_is_unchanged(name: str) -> None:
    obj, pin = PINNED[name]
    digest = hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]
    assert digest == pin, f"pynetdicom's {name} changed: port it into dicomgate/scp/_fast.py"


@pytest.mark.parametrize(
    ("status", "sop_class", "sop_instance"),
    [
        (0x0000, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"),
        (0xA700, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45"),
        (0xC000, "1.2.840.10008.5.1.4.1.1.77.1.4", "2.25.123456789012345678901234567"),
        (0xA900, None, None),
    ],
)
def test_store_rsp_encoding_matches_pynetdicom(
    status: int, sop_class: str | None, sop_instance: str | None
) -> None:
    rsp = C_STORE()
    rsp.MessageID = rsp.MessageIDBeingRespondedTo = 7
    rsp.Status = status
    if sop_class is not None:
        rsp.AffectedSOPClassUID = sop_class
        rsp.AffectedSOPInstanceUID = sop_instance
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    (pdata,) = list(msg.encode_msg(1, 16384))
    ((_, stock),) = pdata.presentation_data_value_list
    assert stock == b"\x03" + (_fast.encode_store_rsp(rsp) or b"")


def test_store_rsp_with_error_comment_goes_the_stock_way() -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.Status = 0xC000
    rsp.ErrorComment = "no"
    assert _fast.encode_store_rsp(rsp) is None


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "ts"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2"),
        ("1.2.840.10008.5.1.4.1.1.7", "2.25.98765432109876543210987", "1.2.840.10008.1.2.4.50"),
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4 ", "1.2.840.10008.1.2.1"),  # odd: stock path
    ],
)
def test_file_meta_bytes_match_pydicom(sop_class: str, sop_instance: str, ts: str) -> None:
    uids = {"sop_class_uid": sop_class, "sop_instance_uid": sop_instance, "transfer_syntax": ts}
    _fast.install_file_meta_fast_path()
    stock, ours = io.BytesIO(), io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the padded UID
        write_file_meta_info(stock, dsutils.create_file_meta(**uids))
        # the names pynetdicom's decode_msg calls
        meta = dimse_messages.create_file_meta(**uids)  # type: ignore[attr-defined]
        dimse_messages.write_file_meta_info(ours, meta)  # type: ignore[attr-defined]
    assert ours.getvalue() == stock.getvalue()


def _server_associations(handle: Any) -> list[Any]:
    server = handle.node.scp._server
    return list(server.active_associations)


def test_tuned_reactor_serves_echo_and_release(tmp_path: Path) -> None:
    with start_node(tmp_path / "data") as node:
        assoc = associate(node.host, node.port)
        assert assoc.is_established
        assert wait_for(lambda: len(_server_associations(node)) == 1)
        (server_side,) = _server_associations(node)
        assert isinstance(server_side, _fast.FastAssociation)
        assert isinstance(server_side.dul, _fast.FastDUL)
        t0 = time.monotonic()
        for _ in range(50):
            assert assoc.send_c_echo().Status == 0x0000
        # no 1 ms sleeps per hand-off: 50 echoes well under the stock reactor's cost
        assert time.monotonic() - t0 < 5
        assoc.release()
        assert assoc.is_released
        assert wait_for(lambda: not server_side.is_alive(), timeout=5)
        assert server_side.is_released


def test_tuned_reactor_handles_peer_abort(tmp_path: Path) -> None:
    with start_node(tmp_path / "data") as node:
        assoc = associate(node.host, node.port)
        assert wait_for(lambda: len(_server_associations(node)) == 1)
        (server_side,) = _server_associations(node)
        assoc.abort()
        assert wait_for(lambda: not server_side.is_alive(), timeout=5)
        assert server_side.is_aborted


def test_tuned_reactor_network_timeout_aborts_idle_peer(tmp_path: Path) -> None:
    with start_node(tmp_path / "data", network_timeout=0.5) as node:
        assoc = associate(node.host, node.port)
        assert assoc.is_established
        assert wait_for(lambda: len(_server_associations(node)) == 1)
        (server_side,) = _server_associations(node)
        # say nothing: the node must abort within its network timeout (plus slack)
        assert wait_for(lambda: not server_side.is_alive(), timeout=5)
        assert wait_for(lambda: not assoc.is_established, timeout=5)


def test_tuned_reactor_acse_timeout_drops_silent_connection(tmp_path: Path) -> None:
    with (
        start_node(tmp_path / "data", acse_timeout=0.5) as node,
        socket.create_connection((node.host, node.port), timeout=5) as s,
    ):
        # no A-ASSOCIATE-RQ: the node closes the connection after its ACSE timeout
        t0 = time.monotonic()
        assert s.recv(1) == b""
        assert time.monotonic() - t0 < 3
        (server_side,) = _server_associations(node) or [None]
        assert server_side is None or server_side.acse_timeout == 0.5


def test_timeouts_reach_the_replaced_providers(tmp_path: Path) -> None:
    with start_node(
        tmp_path / "data", acse_timeout=1.5, dimse_timeout=2.5, network_timeout=3.5
    ) as node:
        assoc = associate(node.host, node.port)
        assert wait_for(lambda: len(_server_associations(node)) == 1)
        (server_side,) = _server_associations(node)
        assert server_side.dul.artim_timer.timeout == 1.5
        assert server_side.dimse.dimse_timeout == 2.5
        assert server_side.dul._idle_timer.timeout == 3.5
        assoc.release()


def test_stop_aborts_open_association(tmp_path: Path) -> None:
    with start_node(tmp_path / "data") as node:
        assoc = associate(node.host, node.port)
        assert wait_for(lambda: len(_server_associations(node)) == 1)
        t0 = time.monotonic()
        node.node.scp.stop(timeout=0.2)  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 5
        assert wait_for(lambda: not assoc.is_established, timeout=5)


# -- group commit of the spool directory's fsync -------------------------------------------------
def test_dir_syncer_alone_fsyncs_every_time(tmp_path: Path) -> None:
    syncer = DirSyncer(tmp_path)
    for _ in range(3):
        syncer.sync()
    assert syncer.fsyncs == 3


def test_dir_syncer_shares_fsyncs_between_threads(tmp_path: Path, monkeypatch: Any) -> None:
    import dicomgate.spool as spool

    calls: list[float] = []

    def slow_fsync_dir(path: Path) -> None:
        calls.append(time.monotonic())
        time.sleep(0.05)

    monkeypatch.setattr(spool, "fsync_dir", slow_fsync_dir)
    syncer = DirSyncer(tmp_path)
    done: list[float] = []

    def worker() -> None:
        start = time.monotonic()
        syncer.sync()
        done.append(start)
        # the fsync that covered this call started after the call
        assert any(c >= start for c in calls)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(done) == 8
    assert syncer.fsyncs < 8  # shared, not one per caller


def test_dir_syncer_error_reaches_caller_then_retries(tmp_path: Path, monkeypatch: Any) -> None:
    import dicomgate.spool as spool

    failures = [OSError("boom")]

    def flaky(path: Path) -> None:
        if failures:
            raise failures.pop()

    monkeypatch.setattr(spool, "fsync_dir", flaky)
    syncer = DirSyncer(tmp_path)
    with pytest.raises(OSError, match="boom"):
        syncer.sync()
    syncer.sync()  # the next caller gets a real fsync
    assert syncer.fsyncs == 1
