"""The audit trail: a durable local file of DICOM audit messages, forwarded over syslog/TLS.

**The local file** (``audit_file``, default ``<data_dir>/audit/audit.log``) holds one audit
message per line: the XML of the message on a single line (values are sanitized, so no message
contains a newline), appended with ``O_APPEND`` in one ``write`` per message. A line is written
and flushed to the OS before :meth:`AuditTrail.emit` returns, so a crash of the process loses
nothing; ``fsync`` runs in batches, by a background thread, at most ``fsync_interval`` seconds
after a message (and at stop), so a busy node does not pay one disk flush per message — a power
failure can cost the last ``fsync_interval`` seconds of messages. Several processes (``serve
--workers``, ``dicomgate links``) append to the same file; a line is never interleaved.

**The syslog sender** (``audit_syslog_url = tls://host:6514``) reads that file from a cursor
(``<audit_file>.cursor``: a byte offset, replaced atomically) and sends each line as an RFC 5424
message with octet-counting framing (RFC 5425). The file is the disk queue: nothing is kept in
memory, an unreachable repository only makes the cursor wait, and after a restart or a
reconnection the sender resends from the cursor. The cursor moves only past bytes the
repository's TCP stack acknowledged on a connection that is still open (see
:class:`~dicomgate.audit._syslog.SyslogConnection`), so delivery is at least once: a repository
may see the last messages before a broken connection twice, never none of them. Of several
processes sharing the file, the one holding ``<audit_file>.cursor.lock`` sends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import unescape

from dicomgate._logging import get_logger
from dicomgate.audit import _messages as m
from dicomgate.audit._syslog import (
    SyslogConnection,
    SyslogTarget,
    frame,
    local_hostname,
    procid,
    syslog_message,
)
from dicomgate.pseudonym import Pseudonymizer
from dicomgate.spool import fsync_dir

__all__ = ["NULL_TRAIL", "AuditTrail", "Identifiers", "StudyTally"]

log = get_logger(__name__)

IdentifierMode = Literal["pseudonymized", "original"]

#: the sender reads at most this much of the file per batch
_BATCH_BYTES = 1 << 20
#: the patient and study objects as :class:`~dicomgate.audit._messages.ParticipantObject`
#: writes them
_PATIENT_IN_LINE = re.compile(
    rb'<ParticipantObjectIdentification ParticipantObjectID="([^"]*)" '
    rb'ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"'
)
_STUDIES_IN_LINE = re.compile(
    rb'<ParticipantObjectIdentification ParticipantObjectID="([^"]*)" '
    rb'ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3"'
)
#: how far back the file is searched for the patient of a study received before a restart
_PATIENT_SCAN_BYTES = 64 << 20


@dataclass(slots=True)
class StudyTally:
    """What one association (or one manifest) carried of one study: instances by SOP Class
    UID, and the patient key (``id:<Patient ID>`` or ``name:<Patient's Name>``, as the
    de-identification engine derives pseudonyms from) — never written anywhere as such."""

    patient_key: str | None = field(default=None, repr=False)  # raw: kept out of any repr
    sop_classes: Counter[str] = field(default_factory=Counter)

    def add(self, sop_class_uid: str, patient_key: str | None = None) -> None:
        self.sop_classes[sop_class_uid] += 1
        if patient_key and self.patient_key is None:
            self.patient_key = patient_key

    @property
    def count(self) -> int:
        return sum(self.sop_classes.values())


class Identifiers:
    """How studies and patients are named in audit messages.

    ``pseudonymized`` (the default): the identifiers the partner receives — the de-identified
    Study Instance UID (the original one only under the Retain UIDs option, where it is
    delivered as such) and the pseudonymized Patient ID (``PAT-…``), both pure functions of
    the node's key. ``original``: the Study Instance UID and Patient ID as received, for an
    audit repository inside the hospital. Never a patient's name: a patient known only by name
    is named by its pseudonym in either mode.
    """

    def __init__(
        self, mode: IdentifierMode, pseudonymizer: Pseudonymizer, *, retain_uids: bool = False
    ) -> None:
        self.mode = mode
        self._pz = pseudonymizer
        self._retain_uids = retain_uids

    def study(self, study_instance_uid: str) -> str:
        if self.mode == "original" or self._retain_uids:
            return study_instance_uid
        return self._pz.uid(study_instance_uid)

    def patient(self, patient_key: str) -> str:
        if self.mode == "original" and patient_key.startswith("id:"):
            return patient_key[3:]
        # the same value the de-identified instances carry as Patient ID
        from dicomgate.deid._patient import PatientPseudonyms

        return PatientPseudonyms.derive(self._pz, patient_key).patient_id


def _split_peer(peer: str) -> str:
    """``"10.1.2.3:40112"`` / ``"[::1]:40112"`` -> the address alone."""
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit():
        return peer
    return host.strip("[]")


class AuditTrail:
    """Writes audit messages to the local file and (optionally) forwards them over syslog.

    Thread-safe; :meth:`emit` and the event helpers never raise (an audit failure is logged,
    never turned into a failed C-STORE or a stopped pipeline).
    """

    enabled = True

    def __init__(
        self,
        path: Path,
        *,
        identifiers: Identifiers,
        ae_title: str,
        node_id: str,
        source_id: str | None = None,
        site_id: str | None = None,
        syslog: SyslogTarget | None = None,
        fsync_interval: float = 1.0,
        background: bool = True,
    ) -> None:
        self.path = path
        self.ids = identifiers
        self.ae_title = ae_title
        self.node_id = node_id
        self.hostname = local_hostname()
        self.source = m.AuditSource(source_id or f"{ae_title}@{self.hostname}", site_id)
        self.syslog = syslog
        self.fsync_interval = fsync_interval
        self.background = background
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._dirty = False
        self._stop = threading.Event()
        self._wake_fsync = threading.Event()
        self._wake_send = threading.Event()
        self._threads: list[threading.Thread] = []
        self._patients: dict[str, str] = {}  # study id (as written) -> patient id (as written)
        #: the audit file has been read into ``_patients`` up to here (None: not yet)
        self._indexed: int | None = None
        self._index_lock = threading.Lock()
        #: what the sender confirmed (tests and the ops side read it)
        self.cursor_path = path.with_name(path.name + ".cursor")
        self.sent_offset = 0
        self._sender_lock_fd: int | None = None
        self._outage_logged = False

    # -- lifecycle --------------------------------------------------------------------------------
    def open(self) -> AuditTrail:
        """Open (create) the file; start the fsync and sender threads when ``background``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fd = fd
        fsync_dir(self.path.parent)  # a new file's entry: its fsync'd messages survive a crash
        self._terminate_torn_line()
        if self.background:
            t = threading.Thread(target=self._fsync_loop, name="audit-fsync", daemon=True)
            self._threads.append(t)
            if self.syslog is not None:
                s = threading.Thread(target=self._send_loop, name="audit-syslog", daemon=True)
                self._threads.append(s)
            for thread in self._threads:
                thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads (the sender tries once more to deliver what is queued), fsync."""
        self._stop.set()
        self._wake_fsync.set()
        self._wake_send.set()
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads.clear()
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
        if self._sender_lock_fd is not None:
            os.close(self._sender_lock_fd)
            self._sender_lock_fd = None

    def _terminate_torn_line(self) -> None:
        """A crash in the middle of a write (a full disk) can leave a partial last line: end it,
        so the next message starts a line of its own (the sender skips the fragment)."""
        try:
            size = self.path.stat().st_size
            if size == 0:
                return
            with self.path.open("rb") as f:
                f.seek(size - 1)
                last = f.read(1)
            if last != b"\n" and self._fd is not None:
                os.write(self._fd, b"\n")
                log.warning("audit file ended inside a message; the fragment is skipped")
        except OSError:
            pass

    # -- writing ----------------------------------------------------------------------------------
    def emit(self, message: m.AuditMessage) -> None:
        """Append one message (one line) to the audit file; never raises."""
        if not self.enabled:
            return
        try:
            data = message.xml.encode("utf-8") + b"\n"
            with self._lock:
                if self._fd is None:
                    raise OSError(errno.EBADF, "the audit trail is not open")
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                self._dirty = True
                if not self.background:  # a one-shot command: durable before it returns
                    os.fsync(self._fd)
                    self._dirty = False
        except Exception as exc:
            log.error(
                "audit message not written",
                event=message.event.meaning,
                error=type(exc).__name__,
                path=str(self.path),
            )
            return
        self._wake_fsync.set()
        self._wake_send.set()

    def _fsync_loop(self) -> None:
        while not self._stop.is_set():
            self._wake_fsync.wait()
            self._wake_fsync.clear()
            # batch: whatever else arrives within the interval shares this fsync
            self._stop.wait(self.fsync_interval)
            self.flush()

    def flush(self) -> None:
        """fsync the file if anything was written since the last one."""
        with self._lock:
            if self._fd is None or not self._dirty:
                return
            self._dirty = False
            fd = self._fd
        try:
            os.fsync(fd)
        except OSError as exc:
            log.error("audit file fsync failed", error=type(exc).__name__, path=str(self.path))

    # -- participants -----------------------------------------------------------------------------
    def node(self, *, requestor: bool = False, role: m.Code | None = None) -> m.Participant:
        """This node as an active participant: its node id, AE title and host name."""
        return m.Participant(
            user_id=self.node_id,
            alternative_user_id=f"AETITLES={self.ae_title}",
            user_name="dicomgate",
            requestor=requestor,
            role=role,
            access_point=self.hostname,
            access_point_type=m.NAP_MACHINE_NAME,
        )

    @staticmethod
    def peer(
        calling_ae: str | None, peer: str | None, *, requestor: bool, role: m.Code | None = None
    ) -> m.Participant:
        """A DICOM peer: its calling AE title and its IP address (``peer`` may carry a port)."""
        ae = (calling_ae or "").strip()
        return m.Participant(
            user_id=ae or "unknown",
            alternative_user_id=f"AETITLES={ae}" if ae else None,
            requestor=requestor,
            role=role,
            access_point=_split_peer(peer) if peer else None,
            access_point_type=m.NAP_IP_ADDRESS if peer else None,
        )

    def _study(
        self, study_uid: str, tally: StudyTally | None, *, anonymized: bool | None = None
    ) -> tuple[m.ParticipantObject, m.ParticipantObject | None]:
        study_id = self.ids.study(study_uid)
        patient = None
        if tally is not None and tally.patient_key:
            patient = self.ids.patient(tally.patient_key)
            self._patients[study_id] = patient
        else:
            patient = self._patient_of(study_id)
        sop_classes = dict(tally.sop_classes) if tally is not None else None
        return (
            m.study_object(study_id, sop_classes, anonymized=anonymized),
            m.patient_object(patient) if patient else None,
        )

    def _patient_of(self, study_id: str) -> str | None:
        """The patient a study was received for, as an earlier message of this file said
        (after a restart the in-memory note is gone; another node's receipt is not here).

        The file is read incrementally: the first miss reads its last
        ``_PATIENT_SCAN_BYTES``, later misses only what was appended since (by this or another
        process sharing the file), so an export never rescans the same bytes."""
        known = self._patients.get(study_id)
        if known is not None:
            return known
        with self._index_lock:
            try:
                self._index_appended()
            except OSError:
                return None
        return self._patients.get(study_id)

    def _index_appended(self) -> None:
        """Note the patient of every study named in complete lines not yet read."""
        with self.path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = self._indexed
            if start is None or start > size:  # first read, or the file was replaced
                start = max(0, size - _PATIENT_SCAN_BYTES)
            f.seek(start)
            for line in f:
                if not line.endswith(b"\n"):  # still being written: read next time
                    break
                start += len(line)
                found = _PATIENT_IN_LINE.search(line)
                if found is None:
                    continue
                patient = _unescape(found.group(1))
                for study in _STUDIES_IN_LINE.findall(line):
                    self._patients[_unescape(study)] = patient
        self._indexed = start

    # -- events -----------------------------------------------------------------------------------
    def application_start(self) -> None:
        self._application(start=True)

    def application_stop(self) -> None:
        self._application(start=False)

    def _application(self, *, start: bool) -> None:
        if not self.enabled:
            return
        launcher = m.Participant(user_id=_user(), requestor=True, role=m.ROLE_APPLICATION_LAUNCHER)
        self.emit(
            m.application_activity(
                self.source,
                self.node(role=m.ROLE_APPLICATION),
                start=start,
                launcher=launcher,
            )
        )

    def security_alert(
        self,
        reason: str,
        peer: str | None,
        *,
        calling_ae: str | None = None,
        kind: str = "restricted-function",
        subject: str | None = None,
        outcome: str = m.OUTCOME_MINOR_FAILURE,
    ) -> None:
        """A Security Alert (110113): ``reason`` in words (no patient value), ``peer`` the
        remote address (``host`` or ``host:port``), ``kind`` one of ``node-authentication``
        (TLS handshake or certificate failures), ``restricted-function`` (a refused
        association), ``security-configuration``, ``software-configuration``,
        ``network-configuration``. ``subject``: a URI of what the alert concerns (default:
        this node's DICOM service)."""
        if not self.enabled:
            return
        try:
            performer = (
                self.peer(calling_ae, peer, requestor=True) if (peer or calling_ae) else None
            )
            message = m.security_alert(
                self.source,
                kind=kind,
                reason=reason,
                reporter=self.node(),
                performer=performer,
                subject=subject or f"dicom://{self.ae_title}@{self.hostname}",
                outcome=outcome,
            )
        except Exception as exc:
            log.error("audit message not built", event="Security Alert", error=type(exc).__name__)
            return
        self.emit(message)

    def on_security_event(self, event: Any) -> None:
        """The SCP's security events (:class:`dicomgate.scp._guard.SecurityEvent`: a failed
        TLS handshake, a rejected association, an authentication failure, a refused
        connection) as Security Alerts — ``ConnectionGate.on_event`` is set to this."""
        kind = str(getattr(event, "kind", ""))
        words = {
            "tls_handshake_failed": "TLS handshake failed",
            "association_rejected": "association rejected",
            "authentication_failed": "authentication failed, association rejected",
            "connection_refused": "connection refused",
        }.get(kind, kind.replace("_", " ") or "security event")
        reason = f"{words} on the {getattr(event, 'listener', '?')} listener: "
        reason += str(getattr(event, "reason", "") or "no reason given")
        reason += _rejection(getattr(event, "called_ae", None), getattr(event, "rj", None))
        subject = getattr(event, "tls_subject", None)
        if subject:
            reason += f"; client certificate {subject}"
        self.security_alert(
            reason,
            getattr(event, "peer", None),
            calling_ae=getattr(event, "calling_ae", None),
            kind="node-authentication"
            if kind in ("tls_handshake_failed", "authentication_failed")
            else "restricted-function",
        )

    def begin_receiving(
        self, *, calling_ae: str, peer: str, study_uid: str, tally: StudyTally | None
    ) -> None:
        """An association started sending a study (110102, the peer the source)."""
        if not self.enabled:
            return
        self._begin_transferring(
            study_uid,
            tally,
            sender=self.peer(calling_ae, peer, requestor=True, role=m.ROLE_SOURCE),
            receiver=self.node(role=m.ROLE_DESTINATION),
        )

    def received(
        self,
        *,
        calling_ae: str,
        peer: str,
        studies: Mapping[str, StudyTally],
        how: str = "released",
        refused: int = 0,
    ) -> None:
        """An association ended: one DICOM Instances Transferred (110104, action C) per study,
        with the instances received by SOP class, the calling AE and peer as the source and
        this node as the destination. ``how``: released | aborted | connection closed."""
        if not self.enabled:
            return
        for study_uid, tally in studies.items():
            try:
                study, patient = self._study(study_uid, tally, anonymized=False)
                ok = how == "released" and not refused
                description = f"{tally.count} instances received; association {how}"
                if refused:
                    description += f"; {refused} refused on this association"
                message = m.instances_transferred(
                    self.source,
                    action="C",
                    sender=self.peer(calling_ae, peer, requestor=True, role=m.ROLE_SOURCE),
                    receivers=[self.node(role=m.ROLE_DESTINATION)],
                    studies=[study],
                    patient=patient,
                    outcome=m.OUTCOME_SUCCESS if ok else m.OUTCOME_MINOR_FAILURE,
                    description=description,
                )
            except Exception as exc:
                log.error(
                    "audit message not built",
                    event="Instances Transferred",
                    error=type(exc).__name__,
                )
                continue
            self.emit(message)

    def begin_export(self, *, study_uid: str, destination: str, partners: Sequence[str]) -> None:
        """A manifest is about to be published (110102, this node the source)."""
        if not self.enabled:
            return
        self._begin_transferring(
            study_uid,
            None,
            sender=self.node(requestor=True, role=m.ROLE_SOURCE),
            receiver=_uri_participant(destination, m.ROLE_DESTINATION),
        )

    def _begin_transferring(
        self,
        study_uid: str,
        tally: StudyTally | None,
        *,
        sender: m.Participant,
        receiver: m.Participant,
    ) -> None:
        """110102 for one study (named without instance counts); never raises."""
        try:
            study, patient = self._study(study_uid, tally)
            message = m.begin_transferring(
                self.source,
                sender=sender,
                receiver=receiver,
                studies=[m.study_object(study.object_id)],
                patient=patient,
            )
        except Exception as exc:
            log.error(
                "audit message not built", event="Begin Transferring", error=type(exc).__name__
            )
            return
        self.emit(message)

    def exported(
        self,
        *,
        study_uid: str,
        sop_classes: Mapping[str, int],
        destination: str,
        partners: Sequence[str],
        manifest_version: int,
        quarantined: int = 0,
    ) -> None:
        """A manifest was published: Export (110106, the destination as the media) and DICOM
        Instances Transferred (110104, action R) with the partners — who the notification
        goes to, or the destination itself when no one is notified — as destinations."""
        if not self.enabled:
            return
        try:
            tally = StudyTally(sop_classes=Counter(sop_classes))
            study, patient = self._study(study_uid, None, anonymized=True)
            study = m.study_object(study.object_id, tally.sop_classes, anonymized=True)
            description = f"manifest v{manifest_version}: {tally.count} de-identified instances"
            if quarantined:
                description += f", {quarantined} quarantined (not exported)"
            media = _uri_participant(destination, m.ROLE_DESTINATION_MEDIA, media=True)
            receivers = [_uri_participant(p, m.ROLE_DESTINATION) for p in partners or [destination]]
            messages = [
                m.export(
                    self.source,
                    exporter=self.node(requestor=True, role=m.ROLE_SOURCE),
                    media=media,
                    studies=[study],
                    patient=patient,
                    description=description,
                ),
                m.instances_transferred(
                    self.source,
                    action="R",
                    sender=self.node(requestor=True, role=m.ROLE_SOURCE),
                    receivers=receivers,
                    studies=[study],
                    patient=patient,
                    description=description,
                ),
            ]
        except Exception as exc:
            log.error("audit message not built", event="Export", error=type(exc).__name__)
            return
        for message in messages:
            self.emit(message)

    def query(
        self,
        *,
        study: str,
        study_uid: str | None,
        what: str,
        outcome: str = m.OUTCOME_SUCCESS,
        description: str | None = None,
    ) -> None:
        """Someone asked this node for a study's links (``dicomgate links``): Query (110112).
        ``study_uid``: the original Study Instance UID when the study is known, else None (the
        argument ``study`` as typed is then named the way identifiers are, never as typed)."""
        if not self.enabled:
            return
        try:
            study_id = self.ids.study(study_uid if study_uid is not None else study)
            message = m.query(
                self.source,
                requestor=m.Participant(
                    user_id=_user(),
                    requestor=True,
                    role=m.ROLE_SOURCE,
                    access_point=self.hostname,
                    access_point_type=m.NAP_MACHINE_NAME,
                ),
                processor=self.node(role=m.ROLE_DESTINATION),
                query_text=f"{what} study={study_id}",
                studies=[m.study_object(study_id)],
                outcome=outcome,
                description=description,
            )
        except Exception as exc:
            log.error("audit message not built", event="Query", error=type(exc).__name__)
            return
        self.emit(message)

    def commitment(
        self,
        *,
        calling_ae: str,
        peer: str | None,
        studies: Mapping[str, int],
        failed: int = 0,
        description: str | None = None,
    ) -> None:
        """A storage commitment report went to ``calling_ae``: DICOM Instances Transferred
        (110104, action R, as dcm4chee-arc reports commitment), this node the source, the peer
        the destination, committed instances per study (original Study Instance UIDs ->
        count); outcome minor failure when ``failed`` instances could not be committed."""
        if not self.enabled:
            return
        try:
            objects = []
            patient = None
            for study_uid in studies:
                study, patient = self._study(study_uid, None)
                objects.append(m.study_object(study.object_id))
            words = description or (
                f"storage commitment: {sum(studies.values())} committed, {failed} failed"
            )
            message = m.instances_transferred(
                self.source,
                action="R",
                sender=self.node(requestor=False, role=m.ROLE_SOURCE),
                receivers=[self.peer(calling_ae, peer, requestor=True, role=m.ROLE_DESTINATION)],
                studies=objects,
                patient=patient,
                outcome=m.OUTCOME_MINOR_FAILURE if failed else m.OUTCOME_SUCCESS,
                description=words,
            )
        except Exception as exc:
            log.error("audit message not built", event="Commitment", error=type(exc).__name__)
            return
        self.emit(message)

    # -- the syslog sender ------------------------------------------------------------------------
    def _read_cursor(self) -> int:
        try:
            return int(self.cursor_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _write_cursor(self, offset: int) -> None:
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        with tmp.open("w") as f:
            f.write(f"{offset}\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.cursor_path)

    def _take_sender_role(self) -> bool:
        """One process per audit file sends (``serve --workers`` share the file)."""
        if self._sender_lock_fd is not None:
            return True
        lock = self.path.with_name(self.path.name + ".cursor.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._sender_lock_fd = fd
        return True

    def _pending(self, offset: int) -> tuple[list[bytes], int]:
        """Complete lines from ``offset`` (at most a batch) and the offset after them."""
        with self.path.open("rb") as f:
            f.seek(offset)
            chunk = f.read(_BATCH_BYTES)
        end = chunk.rfind(b"\n")
        if end < 0:
            if len(chunk) == _BATCH_BYTES:  # one line longer than a batch: never ours; skip
                return [], offset + len(chunk)
            return [], offset
        lines = chunk[: end + 1].split(b"\n")[:-1]
        return lines, offset + end + 1

    def _frames(self, lines: Iterable[bytes]) -> bytes:
        out = []
        pid = procid()
        for line in lines:
            if not (line.startswith(b"<AuditMessage") and line.endswith(b"</AuditMessage>")):
                if line.strip():
                    log.warning("audit file line is not a message; not sent", bytes=len(line))
                continue
            out.append(frame(syslog_message(line, hostname=self.hostname, procid=pid)))
        return b"".join(out)

    def _send_loop(self) -> None:
        target = self.syslog
        assert target is not None
        conn: SyslogConnection | None = None
        confirmed = sent = 0
        backoff = 1.0
        while True:
            stopping = self._stop.is_set()
            try:
                if not self._take_sender_role():
                    if stopping:
                        return
                    self._stop.wait(5.0)
                    continue
                if conn is None:
                    confirmed = sent = self._read_cursor()
                    self.sent_offset = confirmed
                    conn = SyslogConnection(target)
                    if self._outage_logged:
                        log.info("audit repository reachable again", repository=target.address)
                    self._outage_logged = False
                    backoff = 1.0
                if sent > confirmed and conn.delivered():
                    confirmed = sent
                    self._write_cursor(confirmed)
                    self.sent_offset = confirmed
                elif conn.closed_by_peer():
                    raise ConnectionResetError("the audit repository closed the connection")
                lines, end = self._pending(sent)
                if end > sent:
                    data = self._frames(lines)
                    if data:
                        conn.send(data)
                    sent = end
                    continue  # more may be queued; confirmation comes on a later pass
                if stopping:
                    self._final_confirmation(conn, sent, confirmed)
                    conn.close()
                    return
                self._wake_send.wait(0.25 if sent > confirmed else 2.0)
                self._wake_send.clear()
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                if conn is not None:
                    conn.close()
                    conn = None
                if not self._outage_logged:
                    log.warning(
                        "audit repository unreachable; messages stay queued in the audit file",
                        repository=target.address,
                        error=type(exc).__name__,
                    )
                    self._outage_logged = True
                if stopping:
                    return
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _final_confirmation(self, conn: SyslogConnection, sent: int, confirmed: int) -> None:
        """At stop: wait a moment for the repository to acknowledge the last bytes."""
        deadline = time.monotonic() + 3.0
        while sent > confirmed and time.monotonic() < deadline:
            if conn.closed_by_peer():
                return
            if conn.delivered():
                self._write_cursor(sent)
                self.sent_offset = sent
                return
            time.sleep(0.05)


class _NullTrail(AuditTrail):
    """Audit off (``audit_enabled = false``), or a component used without a node."""

    enabled = False

    def __init__(self) -> None:
        pass

    def open(self) -> AuditTrail:
        return self

    def close(self, timeout: float = 10.0) -> None:
        pass

    def flush(self) -> None:
        pass


#: does nothing; what components hold until a node gives them its trail
NULL_TRAIL: AuditTrail = _NullTrail()


def _rejection(called_ae: object, rj: Sequence[int] | None) -> str:
    """What a rejected association asked for and the RJ codes it got, to follow a reason."""
    words = f"; called AE title {str(called_ae).strip()}" if called_ae else ""
    if rj:
        words += f"; A-ASSOCIATE-RJ result {rj[0]}, source {rj[1]}, reason {rj[2]}"
    return words


def _user() -> str:
    """Who runs this process: the login name, else the uid."""
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def _unescape(value: bytes) -> str:
    """An attribute value as the audit file holds it -> the text."""
    return unescape(value.decode("utf-8", "replace"), {"&quot;": '"'})


def _uri_participant(uri: str, role: m.Code, *, media: bool = False) -> m.Participant:
    """A destination or partner named by a URI (already free of credentials and queries)."""
    return m.Participant(
        user_id=uri,
        requestor=False,
        role=role,
        access_point=uri,
        access_point_type=m.NAP_URI,
        media_type=m.MEDIA_URI if media else None,
    )
