"""The DICOM listener: a pynetdicom AE serving Verification and every storage SOP class.

Handlers are thin (STYLE 2-3): they turn pynetdicom events into a :class:`StoreRequest` and a
DIMSE status, bind the association's log context, and never touch S3.
"""

from __future__ import annotations

import functools
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pynetdicom
import structlog
from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomgate._logging import get_logger
from dicomgate.audit import NULL_TRAIL, AuditTrail, StudyTally
from dicomgate.commitment import STORAGE_COMMITMENT, CommitmentService
from dicomgate.config import Settings
from dicomgate.ingest import Ingest, StoreRequest
from dicomgate.mpps import MPPS, MppsService
from dicomgate.ops.metrics import Metrics
from dicomgate.scp import _fast
from dicomgate.scp._guard import (
    CONNECTION_REFUSED,
    TLS_HANDSHAKE_FAILED,
    ConnectionGate,
    SecurityEvent,
)
from dicomgate.scp._policy import AccessPolicy, TunedRequestHandler
from dicomgate.scp._tls import certificate_summary, server_context
from dicomgate.status import Status

__all__ = ["TRANSFER_SYNTAXES", "AssociationInfo", "StoreSCP"]

log = get_logger(__name__)

#: Attribute of a pynetdicom ``Association`` holding its :class:`AssociationInfo`.
_INFO_ATTR = "_dicomgate_info"
#: set on an association once its end was reported (whichever event came first)
_ENDED_ATTR = "_dicomgate_ended"
#: called by the association's thread as it exits (dicomgate.scp._fast.FastAssociation)
ON_THREAD_END_ATTR = _fast.ON_THREAD_END_ATTR

#: Accepted for every storage SOP class. Compressed pixel data is stored as received.
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
]


#: for the normalized services (N-ACTION, N-CREATE, N-SET)
_N_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]


@dataclass
class AssociationInfo:
    """What the node knows of one open association (for logs and the study tracker)."""

    assoc_id: str
    calling_ae: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    refused: int = 0
    #: set when the association ended (the registry forgot it): no new study holds after that
    closed: bool = False
    #: the pynetdicom association (a storage commitment report may go back on it)
    assoc: Any = None
    #: instances received per study (original Study Instance UID): the studies it carries
    #: (``studies_in_flight``, study holds) and the audit trail's counts
    received: dict[str, StudyTally] = field(default_factory=dict)


#: the listeners' names (logs, security events)
PLAINTEXT, TLS = "dicom", "dicom-tls"

#: pynetdicom's own association count (every live acceptor thread, negotiating ones too) is
#: switched off with this; ConnectionGate counts slots and pending connections instead
_NO_PYNETDICOM_LIMIT = 1_000_000


def _peer(address: Any) -> str:
    try:
        return f"{address[0]}:{address[1]}"
    except (TypeError, IndexError):
        return str(address)


def _handshake_failure(exc: BaseException) -> str | None:
    """Words for a failed TLS handshake; None when the peer just went away (a port probe, a
    load balancer's TCP health check), which is no security event."""
    if isinstance(exc, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError):
        return None
    if isinstance(exc, TimeoutError):
        return "handshake timed out (acse_timeout)"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.library or "tls error").lower().replace("_", " ")
    return type(exc).__name__


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the TLS handshake moved off the accept loop and
    connections counted by the node's :class:`ConnectionGate`.

    pynetdicom wraps each accepted socket with ``ssl_context.wrap_socket()`` inside
    ``get_request()`` — the TLS handshake then runs on the accept loop, where one silent peer
    stops the listener and a failed handshake goes unlogged. Here the accept loop only wraps
    (no I/O) with the context current at that moment, and the connection's own thread does
    the handshake, bounded by the ACSE timeout. Swapping :attr:`ssl_context` (a SIGHUP reload)
    therefore changes the certificate of new connections only.
    """

    policy: AccessPolicy
    gate: ConnectionGate
    listener: str = PLAINTEXT
    _conn: threading.local

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock = cast(socket.socket, self.socket)
        client, address = sock.accept()
        ctx = self.ssl_context
        if ctx is not None:
            client = ctx.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def accepted_at(self) -> float:
        """When the connection served by the calling thread began (its deadlines count
        from then)."""
        return float(getattr(self._conn, "accepted_at", time.monotonic()))

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accept loop: admit the connection or close it at once."""
        if not self.gate.admit(self.ae):
            self.gate.emit(
                SecurityEvent(
                    kind=CONNECTION_REFUSED,
                    listener=self.listener,
                    peer=_peer(client_address),
                    reason="too many connections not yet associated (max_pending_connections)",
                )
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # a thread per connection
        except BaseException:
            self.gate.started()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self._conn.accepted_at = time.monotonic()
        try:
            if isinstance(request, ssl.SSLSocket) and not self._handshake(request, client_address):
                self.shutdown_request(request)
                return
            super().process_request_thread(request, client_address)
        finally:
            self.gate.started()

    def _handshake(self, sock: ssl.SSLSocket, client_address: Any) -> bool:
        try:
            sock.settimeout(self.ae.acse_timeout)
            sock.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            why = _handshake_failure(exc)
            if why is None:
                log.debug("tls connection closed before the handshake", peer=_peer(client_address))
            else:
                self.gate.emit(
                    SecurityEvent(
                        kind=TLS_HANDSHAKE_FAILED,
                        listener=self.listener,
                        peer=_peer(client_address),
                        reason=why,
                    )
                )
            return False
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escaped a connection's set-up (socketserver prints to stderr)."""
        exc = sys.exc_info()[1]
        log.error(
            "connection failed",
            listener=self.listener,
            peer=_peer(client_address),
            error=type(exc).__name__ if exc is not None else "?",
        )


class _SharedPortServer(_Server):
    """Several node processes on one port (``serve --workers``): each binds with SO_REUSEPORT
    and the kernel hands each new connection to one of them (Linux spreads by a hash of the
    peer's address and port)."""

    def server_bind(self) -> None:
        # pynetdicom's server_bind sets SO_REUSEADDR only (socketserver's allow_reuse_port is
        # not consulted there): set SO_REUSEPORT first, then bind as pynetdicom does.
        sock = cast(socket.socket, self.socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _InheritedServer(_Server):
    """``serve --workers``: every worker accepts on the one listening socket the supervisor
    made and handed down (:mod:`dicomgate.supervisor`), instead of binding its own.

    The kernel wakes every waiting worker for a connection and one ``accept()`` wins; a busy
    worker's listener thread waits for its GIL, so an idle worker tends to win — new
    associations go where there is room, which SO_REUSEPORT's hash of the peer's address and
    port cannot do (four associations can hash to one worker). The socket is non-blocking: a
    worker that loses the race gets ``EAGAIN``, which socketserver ignores. It is never
    ``shutdown()``: that would stop it for every worker; a stopping worker only closes its own
    descriptor.
    """

    inherited: socket.socket  # set on a per-socket subclass by StoreSCP._server_class

    def server_bind(self) -> None:
        cast(socket.socket, self.socket).close()  # the one socketserver made, never bound
        self.socket = self.inherited
        self.socket.settimeout(0.0)  # non-blocking: a lost accept race returns at once
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Already listening (the supervisor called ``listen()``)."""

    def server_close(self) -> None:
        cast(socket.socket, self.socket).close()


class StoreSCP:
    """Owns the AE, the listening server and the registry of open associations."""

    #: the node's audit trail (PS3.15 A.5 messages); the node sets it before :meth:`start`
    audit: AuditTrail = NULL_TRAIL

    def __init__(
        self,
        settings: Settings,
        ingest: Ingest,
        metrics: Metrics | None = None,
        on_open_count: Callable[[int], None] | None = None,
        commitments: CommitmentService | None = None,
        mpps: MppsService | None = None,
        listen_sockets: Mapping[str, socket.socket] | None = None,
    ) -> None:
        self.settings = settings
        self.ingest = ingest
        self.metrics = metrics
        #: Storage Commitment (N-ACTION) and MPPS (N-CREATE, N-SET), when the node serves them
        self.commitments = commitments
        self.mpps = mpps
        #: serve --workers: listener name -> the listening socket the supervisor made, shared
        #: by every worker (accepted here instead of binding one)
        self._inherited = dict(listen_sockets or {})
        #: told the number of open associations whenever it changes (serve --workers' host share)
        self._on_open_count = on_open_count
        self._associations: dict[int, AssociationInfo] = {}
        self._lock = threading.Lock()
        #: listener name (PLAINTEXT, TLS) -> its server and serving thread
        self._servers: dict[str, _Server] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._accepting = False
        #: slots, pending connections and security events of both listeners; the audit
        #: trail sets ``gate.on_event``
        self.gate = ConnectionGate(
            max_associations=settings.max_associations,
            max_pending=settings.max_pending_connections,
        )
        self.ae = self._make_ae()

    # -- set-up ---------------------------------------------------------------------------------
    def _make_ae(self) -> AE:
        s = self.settings
        # Stream each dataset to a file instead of memory (flat RSS for gigabyte instances).
        _config.STORE_RECV_CHUNKED_DATASET = True
        if _fast.enabled():
            # Same File Meta bytes, written without pydicom (see dicomgate.scp._fast).
            _fast.install_file_meta_fast_path()
        else:
            log.warning(
                "pynetdicom version not checked for the fast reactors; using stock pynetdicom",
                pynetdicom=pynetdicom.__version__,
                supported=_fast.SUPPORTED,
            )
        ae = AE(ae_title=s.ae_title)
        ae.maximum_associations = _NO_PYNETDICOM_LIMIT  # the gate counts (see _guard)
        ae.maximum_pdu_size = s.max_pdu_size
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        # Our PolicyACSE decides AE-title and network rules (with reasons in the log).
        ae.require_called_aet = False
        ae.require_calling_aet = []
        ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
        # what senders say: normalized SOP classes, uncompressed syntaxes (PS3.4 J, F.7)
        if self.commitments is not None:
            ae.add_supported_context(STORAGE_COMMITMENT, _N_SYNTAXES)
        if self.mpps is not None:
            ae.add_supported_context(MPPS, _N_SYNTAXES)
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
        return ae

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def _server(self) -> _Server | None:
        """The plaintext listener's server (the TLS one's on a TLS-only node)."""
        return self._servers.get(PLAINTEXT) or self._servers.get(TLS)

    def _address_of(self, listener: str) -> tuple[str, int] | None:
        server = self._servers.get(listener)
        if server is None:
            return None
        host, port = server.server_address[:2]
        return str(host), int(port)

    @property
    def address(self) -> tuple[str, int]:
        """The plaintext listener's address (the TLS one's on a TLS-only node)."""
        address = self._address_of(PLAINTEXT) or self._address_of(TLS)
        if address is None:
            raise RuntimeError("the SCP is not listening")
        return address

    @property
    def plaintext_address(self) -> tuple[str, int] | None:
        return self._address_of(PLAINTEXT)

    @property
    def tls_address(self) -> tuple[str, int] | None:
        return self._address_of(TLS)

    def _tls_context(self) -> ssl.SSLContext:
        s = self.settings
        assert s.tls_cert_file is not None and s.tls_key_file is not None
        return server_context(s.tls_cert_file, s.tls_key_file, s.tls_ca_file)

    def reload_tls(self) -> bool:
        """Read the certificate, key and CA files again (SIGHUP): new connections get the new
        context, open ones keep theirs. On an error the old context stays; False."""
        server = self._servers.get(TLS)
        if server is None:
            return False
        try:
            ctx = self._tls_context()
        except ValueError as exc:  # TlsConfigError: names the file and the setting
            log.error("tls reload failed", error=str(exc))
            return False
        server.ssl_context = ctx
        assert self.settings.tls_cert_file is not None
        log.info("tls certificates reloaded", **certificate_summary(self.settings.tls_cert_file))
        return True

    def start(self) -> tuple[str, int]:
        """Bind the listeners (plaintext, TLS: as configured) and serve each in a background
        thread; return the plaintext listener's (host, port), else the TLS one's.

        Raises ``OSError`` for a port that cannot be bound (``.listener`` says which one)
        and ``ValueError`` (TlsConfigError) for unusable TLS files.
        """
        s = self.settings
        ctx = self._tls_context() if s.tls_enabled else None
        wanted = ([(PLAINTEXT, s.port, None)] if s.plaintext else []) + (
            [(TLS, s.tls_port, ctx)] if ctx is not None else []
        )
        for listener, port, context in wanted:
            try:
                self._listen(listener, port, context)
            except OSError as exc:
                exc.listener = listener  # type: ignore[attr-defined]
                self.stop_accepting()
                raise
        self._accepting = True
        for listener, server in self._servers.items():
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"{listener}-listener",
                daemon=True,
            )
            self._threads[listener] = thread
            thread.start()
            host, port = server.server_address[:2]
            fields: dict[str, Any] = {"host": host, "port": port, "ae_title": s.ae_title}
            if listener == TLS:
                assert s.tls_cert_file is not None
                fields |= {
                    "tls": True,
                    "mutual_tls": s.tls_ca_file is not None,
                    **certificate_summary(s.tls_cert_file),
                }
            log.info("listening", **fields)
        return self.address

    def _server_class(self, listener: str) -> type[_Server]:
        inherited = self._inherited.get(listener)
        if inherited is not None:
            return type("_Inherited", (_InheritedServer,), {"inherited": inherited})
        return _SharedPortServer if self.settings.reuse_port else _Server

    def _listen(self, listener: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        s = self.settings
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, _handle_echo),
            (evt.EVT_C_STORE, _handle_store, [self]),
            (evt.EVT_N_ACTION, _handle_n_action, [self]),
            (evt.EVT_N_CREATE, _handle_n_create, [self]),
            (evt.EVT_N_SET, _handle_n_set, [self]),
            (evt.EVT_ESTABLISHED, _handle_established, [self]),
            (evt.EVT_REJECTED, _handle_rejected, [self]),
            (evt.EVT_RELEASED, _handle_closed, [self, "released"]),
            (evt.EVT_ABORTED, _handle_closed, [self, "aborted"]),
            (evt.EVT_CONN_CLOSE, _handle_closed, [self, "connection closed"]),
        ]
        server = cast(
            _Server,
            self.ae.make_server(
                (s.host, port),
                evt_handlers=handlers,
                ssl_context=ssl_context,
                server_class=self._server_class(listener),
                request_handler=TunedRequestHandler,
            ),
        )
        server.listener = listener
        server._conn = threading.local()
        server.gate = self.gate
        server.policy = AccessPolicy(
            ae_title=s.ae_title,
            require_called_ae_title=s.require_called_ae_title,
            allowed_calling_ae_titles=tuple(s.allowed_calling_ae_titles),
            allowed_networks=tuple(s.allowed_networks),
            ae_subjects=dict(s.tls_ae_subjects),
        )
        self.ae._servers.append(server)
        self._servers[listener] = server

    # -- shutdown -------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        """Close the listening sockets; open associations carry on."""
        self._accepting = False
        for listener, server in list(self._servers.items()):
            thread = self._threads.pop(listener, None)
            if getattr(server, "_stopped", False):
                continue
            server._stopped = True  # type: ignore[attr-defined]
            if thread is not None:
                server.shutdown()  # stops serve_forever, closes the listening socket
                thread.join(timeout=5)
            else:  # bound, never served (a later listener failed to bind)
                server.server_close()
                if server in self.ae._servers:
                    self.ae._servers.remove(server)

    def open_associations(self) -> list[Any]:
        """Associations that can still carry data (established, or with a live connection).

        An acceptor thread whose connection is gone lingers until its ACSE timeout; it
        holds nothing and is not waited for.
        """
        return [
            a
            for server in self._servers.values()
            for a in server.active_associations
            if a.is_alive() and (a.is_established or a.dul.is_alive())
        ]

    def wait_for_associations(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for open associations to end; True if none remain."""
        deadline = time.monotonic() + timeout
        while self.open_associations():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    @staticmethod
    def _drop(assoc: Any) -> None:
        """Close the connection of an association that is not established (nothing to abort)."""
        sock = getattr(assoc.dul, "socket", None)
        if sock is not None:
            sock.close()

    def stop(self, timeout: float) -> None:
        """Stop accepting, give open associations ``timeout`` s, then abort the rest."""
        # 1. no new associations
        self.stop_accepting()
        # 2. peers still negotiating have sent nothing we could lose: drop them now
        for assoc in self.open_associations():
            if not assoc.is_established:
                self._drop(assoc)
        # 3. let established associations finish their work, within a bound
        if not self.wait_for_associations(timeout):
            remaining = self.open_associations()
            log.warning("aborting associations still open at shutdown", count=len(remaining))
            # 4. A-ABORT the rest; their unacknowledged instances are not kept
            for assoc in remaining:
                if assoc.is_established:
                    assoc.abort()
                else:
                    self._drop(assoc)
            self.wait_for_associations(5)

    # -- association registry -------------------------------------------------------------------
    @staticmethod
    def _new_info(assoc: Any, *, closed: bool = False) -> AssociationInfo:
        return AssociationInfo(
            assoc_id=uuid.uuid4().hex[:12],
            calling_ae=str(assoc.requestor.ae_title).strip(),
            peer=f"{assoc.requestor.address}:{assoc.requestor.port}",
            closed=closed,
        )

    def register(self, assoc: Any) -> AssociationInfo:
        """Start tracking an association that was just established.

        Its end may already have been reported: EVT_CONN_CLOSE comes from the DUL thread and
        can overtake EVT_ESTABLISHED in the association thread (a peer that closes right after
        its A-ASSOCIATE-RQ; found by fuzzing under load). Such an association is not tracked:
        no later event would remove it, and ``busy()`` would say "receiving" for ever.
        """
        info = self._new_info(assoc)
        info.assoc = assoc
        setattr(assoc, _INFO_ATTR, info)  # the handlers' lock-free lookup
        with self._lock:
            if getattr(assoc, _ENDED_ATTR, False):
                info.closed = True
                return info
            self._associations[id(assoc)] = info
            if self._on_open_count is not None:
                self._on_open_count(len(self._associations))
        # whatever way the association ends, its thread's exit ends the tracking too
        setattr(assoc, ON_THREAD_END_ATTR, functools.partial(_end, self, how="thread ended"))
        return info

    def info(self, assoc: Any) -> AssociationInfo:
        """The association's info (set at establishment).

        Never re-registers an association already forgotten: a peer that drops the connection
        right after a C-STORE gets EVT_CONN_CLOSE (DUL thread) before that store's handler
        (association thread) runs, and re-registering it then would leave an entry no event
        removes — ``busy()`` and ``studies_in_flight()`` would report it forever.
        """
        info = getattr(assoc, _INFO_ATTR, None)
        return info if isinstance(info, AssociationInfo) else self._new_info(assoc, closed=True)

    def add_study(
        self,
        info: AssociationInfo,
        study_instance_uid: str,
        sop_class_uid: str,
        patient_key: str | None,
    ) -> tuple[bool, bool]:
        """The association carried an instance of this study: counted for the audit trail,
        the study known locally (``studies_in_flight``) and, the first time, held in the shared
        state store, so no node publishes the study while this association is open (issue 8,
        item 2). Returns (first of its study on this association, association already ended
        — its end message is written, so this one instance gets its own).

        A store handler can run after its association's close event (see :meth:`info`): a hold
        taken then would outlive the association, so it is taken only while the association is
        registered, and given back if the association ended while it was being written; nor is
        the instance counted then (the end message may be reading the counts).
        """
        with self._lock:  # studies_in_flight() and received_so_far() read under the lock
            tally = info.received.get(study_instance_uid)
            first = tally is None
            if info.closed:
                return first, True
            if tally is None:
                tally = info.received[study_instance_uid] = StudyTally()
            tally.add(sop_class_uid, patient_key)
        if first:
            self.ingest.hold(study_instance_uid, info.assoc_id)
            with self._lock:
                ended_meanwhile = info.closed
            if ended_meanwhile:
                self.ingest.release(info.assoc_id)
        return first, False

    def forget(self, assoc: Any) -> AssociationInfo | None:
        """The association ended: stop tracking it and give back its study holds."""
        with self._lock:
            setattr(assoc, _ENDED_ATTR, True)
            info = self._associations.pop(id(assoc), None)
            if info is not None:
                info.closed = True
            if self._on_open_count is not None:
                self._on_open_count(len(self._associations))
        if info is not None and info.received:
            self.ingest.release(info.assoc_id)
        return info

    def report_association(self, assoc_id: str, calling_ae: str) -> Any:
        """An open association to send a storage commitment report on: the one with id
        ``assoc_id`` if it is still established, else any established one from ``calling_ae``
        that accepted the Storage Commitment context; None if there is none."""
        with self._lock:
            infos = list(self._associations.values())
        ordered = sorted(infos, key=lambda i: i.assoc_id != assoc_id)
        for info in ordered:
            if info.assoc_id != assoc_id and info.calling_ae != calling_ae:
                continue
            assoc = info.assoc
            if assoc is None or not assoc.is_established or info.closed:
                continue
            if any(cx.abstract_syntax == STORAGE_COMMITMENT for cx in assoc.accepted_contexts):
                return assoc
        return None

    def received_so_far(self, info: AssociationInfo) -> dict[str, StudyTally]:
        with self._lock:
            return dict(info.received)

    def busy(self) -> bool:
        """Whether any association is open (cheap; polled by the pipeline)."""
        with self._lock:
            return bool(self._associations)

    def studies_in_flight(self) -> set[str]:
        """Study Instance UIDs that some open association has sent instances of."""
        with self._lock:
            return set().union(*(i.received for i in self._associations.values()))


# -- event handlers (run in pynetdicom's association threads) -------------------------------------
def _handle_echo(event: Any) -> int:
    return int(Status.SUCCESS)


def _handle_rejected(event: Any, scp: StoreSCP) -> None:
    if scp.metrics is not None:
        scp.metrics.associations.labels("rejected").inc()


def _handle_established(event: Any, scp: StoreSCP) -> None:
    if scp.metrics is not None:
        scp.metrics.associations.labels("accepted").inc()
    info = scp.register(event.assoc)
    # Bound in the association's own thread: every later log line of this association has it.
    structlog.contextvars.bind_contextvars(assoc_id=info.assoc_id, calling_ae=info.calling_ae)
    log.info("association established", peer=info.peer)
    if info.closed:  # its end was reported before it was established (see StoreSCP.register)
        _record_end(scp, info, _how_it_ended(event.assoc, "connection closed"))


def _discard_partial_dataset(assoc: Any) -> None:
    """Remove the temporary file of a C-STORE cut off mid-dataset (abort, dropped link).

    pynetdicom deletes that file only after a handler ran; a dataset that never finished
    arriving was never acknowledged, and nothing half-written may stay in the spool.
    """
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    tmp = getattr(message, "_data_set_file", None)
    if tmp is None:
        return
    try:
        tmp.close()
        Path(tmp.name).unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove a partial dataset file", exc_info=True)


def _how_it_ended(assoc: Any, event_says: str) -> str:
    """One answer for one ending. The association thread (EVT_RELEASED, EVT_ABORTED) and the
    DUL thread (EVT_CONN_CLOSE) race to report it; whichever comes first reads the flags."""
    if getattr(assoc, "is_released", False):
        return "released"
    acse = getattr(assoc, "acse", None)
    if getattr(assoc, "is_aborted", False) or (acse is not None and acse.is_aborted()):
        return "aborted"
    return event_says


def _handle_closed(event: Any, scp: StoreSCP, how: str) -> None:
    _end(scp, event.assoc, how)


def _end(scp: StoreSCP, assoc: Any, how: str) -> None:
    """The association ended (an event, or its thread's exit): stop tracking it, once."""
    how = _how_it_ended(assoc, how)
    # Released too: a peer may release with a data set still unfinished (its last fragment
    # never came; found by fuzzing). A finished one is no longer the DIMSE's current message.
    _discard_partial_dataset(assoc)
    info = scp.forget(assoc)
    if info is not None:
        _record_end(scp, info, how)


def _record_end(scp: StoreSCP, info: AssociationInfo, how: str) -> None:
    """The audit record and the log line of an association's end."""
    scp.audit.received(
        calling_ae=info.calling_ae,
        peer=info.peer,
        studies=scp.received_so_far(info),
        how=how,
        refused=info.refused,
    )
    log.info(
        "association ended",
        how=how,
        assoc_id=info.assoc_id,
        calling_ae=info.calling_ae,
        stored=info.stored,
        refused=info.refused,
        seconds=round(time.monotonic() - info.started, 3),
    )


def _decoded(decode: Callable[[], Any]) -> Any:
    """A request's dataset, or None when it cannot be decoded (answered as a failure)."""
    try:
        return decode()
    except Exception:
        return _UNDECODABLE


_UNDECODABLE = object()


def _undecodable() -> Dataset:
    ds = Dataset()
    ds.Status = 0x0110
    ds.ErrorComment = "the dataset could not be decoded"
    return ds


def _handle_n_action(event: Any, scp: StoreSCP) -> tuple[Any, None]:
    service = scp.commitments
    if service is None:  # not served: the context is not offered either
        return 0x0112, None
    info = scp.info(event.assoc)
    req = event.request
    ds = _decoded(lambda: event.action_information)
    if ds is _UNDECODABLE:
        return _undecodable(), None
    status = service.request(
        action_type=req.ActionTypeID,
        requested_instance=str(req.RequestedSOPInstanceUID or ""),
        dataset=ds,
        calling_ae=info.calling_ae,
        association_id=info.assoc_id,
    )
    return status, None


def _handle_n_create(event: Any, scp: StoreSCP) -> tuple[Any, Any]:
    service = scp.mpps
    if service is None:
        return 0x0118, None
    info = scp.info(event.assoc)
    ds = _decoded(lambda: event.attribute_list)
    if ds is _UNDECODABLE:
        return _undecodable(), None
    uid = event.request.AffectedSOPInstanceUID
    return service.create(instance_uid=str(uid) if uid else None, ds=ds, calling_ae=info.calling_ae)


def _handle_n_set(event: Any, scp: StoreSCP) -> tuple[Any, None]:
    service = scp.mpps
    if service is None:
        return 0x0118, None
    ds = _decoded(lambda: event.modification_list)
    if ds is _UNDECODABLE:
        return _undecodable(), None
    uid = event.request.RequestedSOPInstanceUID
    return service.set(instance_uid=str(uid) if uid else None, ds=ds), None


def _audit_store(
    scp: StoreSCP,
    info: AssociationInfo,
    study_uid: str,
    sop_class: str,
    patient_key: str | None,
) -> None:
    """Count the instance for the association (its audit messages, its study hold); the first
    of a study begins a transfer (110102); one stored after its association ended is reported
    on its own."""
    first, late = scp.add_study(info, study_uid, sop_class, patient_key)
    if late:
        tally = StudyTally(patient_key=patient_key)
        tally.add(sop_class)
        scp.audit.received(
            calling_ae=info.calling_ae,
            peer=info.peer,
            studies={study_uid: tally},
            how="connection closed",
        )
    elif first:
        scp.audit.begin_receiving(
            calling_ae=info.calling_ae,
            peer=info.peer,
            study_uid=study_uid,
            tally=StudyTally(patient_key=patient_key),
        )


def _handle_store(event: Any, scp: StoreSCP) -> int:
    started = time.perf_counter()
    info = scp.info(event.assoc)
    req = event.request
    sop_class = str(req.AffectedSOPClassUID)
    outcome = scp.ingest.store(
        StoreRequest(
            path=Path(event.dataset_path),
            sop_class_uid=sop_class,
            sop_instance_uid=str(req.AffectedSOPInstanceUID),
            calling_ae=info.calling_ae,
            peer_address=info.peer,
            association_id=info.assoc_id,
        )
    )
    if outcome.status == Status.SUCCESS:
        info.stored += 1
        if outcome.record is not None:
            study = outcome.record.study_instance_uid
            _audit_store(scp, info, study, sop_class, outcome.patient_key)
    else:
        info.refused += 1
    if scp.metrics is not None:
        scp.metrics.store_seconds.observe(time.perf_counter() - started)
        scp.metrics.stores.labels(outcome.status.name.lower()).inc()
        if outcome.record is not None and not outcome.duplicate:
            scp.metrics.stored_bytes.inc(outcome.record.size)
    return int(outcome.status)
