"""Audit messages reach a syslog-over-TLS repository (RFC 5425) and survive its outages and
the node's restarts: the audit file is the queue, the cursor says what was delivered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomgate.audit import AuditTrail, Identifiers, SyslogTarget
from dicomgate.pseudonym import Pseudonymizer
from tests.audit.helpers import Pki, SyslogReceiver, assert_valid, audit_lines, make_pki
from tests.helpers import wait_for


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def receiver(pki: Pki) -> Iterator[SyslogReceiver]:
    r = SyslogReceiver(pki).start()
    try:
        yield r
    finally:
        r.stop()


def _trail(tmp_path: Path, receiver: SyslogReceiver, pki: Pki) -> AuditTrail:
    return AuditTrail(
        tmp_path / "audit" / "audit.log",
        identifiers=Identifiers("pseudonymized", Pseudonymizer(b"k" * 40)),
        ae_title="DICOMGATE",
        node_id="node-1",
        syslog=SyslogTarget("127.0.0.1", receiver.port, ca_file=pki.ca_file),
        fsync_interval=0.05,
    ).open()


def _alert(trail: AuditTrail, n: int) -> None:
    trail.security_alert(f"test alert {n}", f"127.0.0.1:{1000 + n}")


def test_messages_arrive_framed_as_rfc5424(
    tmp_path: Path, receiver: SyslogReceiver, pki: Pki
) -> None:
    trail = _trail(tmp_path, receiver, pki)
    try:
        trail.application_start()
        _alert(trail, 1)
        assert wait_for(lambda: len(receiver.frames) == 2, timeout=30)
    finally:
        trail.close()
    lines = audit_lines(trail.path)
    assert receiver.messages() == lines
    for f in receiver.frames:
        pri_version, stamp, host, app, procid, msgid, sd = f.header
        assert (pri_version, app, msgid, sd) == ("<85>1", "dicomgate", "IHE+RFC-3881", "-")
        assert stamp.endswith("Z") and host and procid.isdigit()
        assert_valid(f.msg)
    assert int(trail.cursor_path.read_text()) == trail.path.stat().st_size


def test_repository_down_loses_nothing(tmp_path: Path, receiver: SyslogReceiver, pki: Pki) -> None:
    trail = _trail(tmp_path, receiver, pki)
    try:
        _alert(trail, 1)
        _alert(trail, 2)
        assert wait_for(lambda: len(receiver.frames) >= 2, timeout=30)
        receiver.stop()
        assert not receiver.listening
        for n in range(3, 8):  # emitted while the repository is down
            _alert(trail, n)
        receiver.start()  # same port
        assert wait_for(lambda: set(receiver.messages()) >= set(audit_lines(trail.path)), 60)
    finally:
        trail.close()
    lines = audit_lines(trail.path)
    assert len(lines) == 7
    # at least once: every message arrived; a repeat is possible only across the outage
    assert set(receiver.messages()) == set(lines)
    assert [m for m in receiver.messages() if m == lines[-1]] == [lines[-1]]


def test_queue_survives_a_restart(tmp_path: Path, receiver: SyslogReceiver, pki: Pki) -> None:
    """Messages written while the repository was down, by a node that then stopped, are
    sent by the next start (from the cursor)."""
    receiver.stop()
    assert not receiver.listening
    trail = _trail(tmp_path, receiver, pki)
    for n in range(3):
        _alert(trail, n)
    trail.close()
    assert receiver.messages() == []
    receiver.start()
    again = _trail(tmp_path, receiver, pki)
    try:
        again.application_start()
        assert wait_for(lambda: len(receiver.frames) >= 4, timeout=60)
    finally:
        again.close()
    assert receiver.messages() == audit_lines(again.path)
