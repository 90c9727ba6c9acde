"""Event-driven replacements for pynetdicom 3.0.x's polling loops (acceptor side only).

pynetdicom runs two threads per association and hands work between them by polling:

* ``DULServiceProvider.run_reactor`` (the DUL thread, which reads PDUs and sends the queued
  primitives) sleeps ``_run_loop_delay`` (1 ms) every time it finds nothing to do. A C-STORE
  response put on ``to_provider_queue`` therefore waits up to 1 ms (more on a busy machine)
  before it is sent, and a PDU that arrives while it sleeps waits as long to be read.
* ``Association._run_reactor`` (the association thread, which runs the handlers) sleeps 1 ms
  at the top of every loop before polling ``dimse.msg_queue``, so a fully received C-STORE
  request waits up to another millisecond before its handler runs.
* ``AssociationSocket.recv`` reads a PDU in 4 KiB ``recv()`` calls, appending each to a
  growing ``bytearray``.

With a synchronous sender (DCMTK ``storescu`` sends the next instance only after the previous
response) those waits are on the critical path of every instance: for 2,000 small instances they
add seconds. The classes here keep pynetdicom's logic and state machine untouched and change
only *how the threads wait*:

* :class:`FastDUL` waits in ``select()`` on the peer socket and a wake-up socket pair, with a
  timeout bounded by the ARTIM and idle timers. Every put on its ``event_queue`` or
  ``to_provider_queue`` from another thread, and every ``_kill_thread = True``, writes to the
  wake-up socket, so the DUL reacts at once.
* :class:`FastAssociation` waits on a :class:`threading.Event` that is set by every put on
  ``dimse.msg_queue`` and on the DUL's ``to_user_queue`` (A-RELEASE / A-ABORT), when the DUL
  thread ends, and on ``kill()``; the wait is bounded by the network (idle) timer, so the
  network timeout still fires.
* :class:`FastAssociationSocket` reads a PDU with ``recv_into`` straight into one buffer of the
  PDU's size.
* :func:`install_file_meta_fast_path` makes pynetdicom write the File Meta of each received
  C-STORE dataset from pre-packed bytes instead of building a pydicom ``FileMetaDataset`` and
  running pydicom's writer (~0.3 ms per instance, measured); the bytes are identical.
* :class:`FastDIMSE` encodes a plain C-STORE response (status, IDs, UIDs) with ``struct``
  instead of building and encoding a pydicom ``Dataset`` (~0.4 ms per response, measured), and
  hands anything else to pynetdicom.

Both waits are additionally capped at :data:`MAX_WAIT` s, so a wake-up we failed to foresee
costs at most that latency, never a hang.

These subclasses copy the bodies of ``DULServiceProvider.run_reactor`` and
``Association._run_reactor`` from pynetdicom 3.0.4 with only the waits changed. They are used
only when pynetdicom's version is one we checked (:data:`SUPPORTED`); otherwise the node falls
back to stock pynetdicom, with a warning. ``tests/scp/test_fast.py`` pins the source of every
replaced method, so an upgrade that changes them fails the tests instead of silently diverging.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import struct
import threading
import time
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import pynetdicom
from pydicom.filewriter import write_file_meta_info as _stock_write_file_meta_info
from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    dimse_messages,
    evt,
)
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom._handlers import standard_dimse_sent_handler
from pynetdicom.association import LOGGER as ASSOC_LOGGER
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta as _stock_create_file_meta
from pynetdicom.dul import LOGGER as DUL_LOGGER
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_P_ABORT, P_DATA
from pynetdicom.transport import AssociationSocket

if TYPE_CHECKING:
    from pynetdicom.timer import Timer
    from pynetdicom.transport import RequestHandler

__all__ = [
    "MAX_WAIT",
    "ON_THREAD_END_ATTR",
    "SUPPORTED",
    "FastAssociation",
    "FastDIMSE",
    "FastDUL",
    "create_association",
    "enabled",
    "encode_file_meta",
    "encode_store_rsp",
    "install_file_meta_fast_path",
]

#: pynetdicom versions whose internals these classes were written against (and tested with).
SUPPORTED = ("3.0.",)

#: The attribute the node sets on an association it tracks: called with the association when
#: its thread exits (dicomgate.scp._server.StoreSCP.register).
ON_THREAD_END_ATTR = "_dicomgate_on_thread_end"

#: Upper bound on any single wait (s): the worst-case latency of a wake-up we did not foresee.
MAX_WAIT = 0.05

#: PDUs up to this size are read into one preallocated buffer; bigger ones (only possible when
#: the advertised maximum PDU is unlimited) grow as data arrives, so a peer that lies about a
#: PDU's length cannot make us allocate gigabytes up front.
_PREALLOCATE_MAX = 4 << 20
_CHUNK = 1 << 20  # read size for PDUs above _PREALLOCATE_MAX (pynetdicom: 4096)
#: how far past its deadline a PDU read may end (see FastAssociationSocket._before)
_DEADLINE_SLACK = 0.05


def enabled() -> bool:
    """True if the installed pynetdicom is a version these replacements were checked against."""
    return pynetdicom.__version__.startswith(SUPPORTED)


def _bounded_wait(*timers: Timer) -> float:
    """Seconds to wait: :data:`MAX_WAIT`, or less if one of ``timers`` expires sooner."""
    wait = MAX_WAIT
    for timer in timers:
        if timer.timeout is not None and timer._start_time is not None and timer._end_time is None:
            wait = min(wait, max(0.0, timer.remaining))
    return wait


class _WakeQueue(queue.Queue):  # type: ignore[type-arg]
    """A ``queue.Queue`` calling ``wake()`` after every put (peeking at ``.queue`` still works)."""

    def __init__(self, wake: Any) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class FastAssociationSocket(AssociationSocket):
    """``AssociationSocket`` whose ``recv`` fills one buffer with ``recv_into``.

    Replaces pynetdicom 3.0.x ``AssociationSocket.recv`` (4 KiB ``recv`` calls appended to a
    ``bytearray``); same contract: blocks until ``nr_bytes`` arrived, returns fewer only if the
    connection closed, lets socket errors propagate to the DUL (which turns them into Evt17).
    """

    #: set by the request handler: the whole A-ASSOCIATE-RQ must have arrived by then
    #: (accept + ACSE timeout), however slowly a peer trickles its bytes in
    negotiation_deadline: float | None = None

    def _deadline(self) -> float | None:
        """When this read must be complete: a PDU (or its header) gets the network timeout
        from the moment the DUL starts reading it (the DUL reads only once data is there);
        before the association is established, no later than :attr:`negotiation_deadline`."""
        assoc = self.assoc
        timeout = assoc.network_timeout
        deadline = time.monotonic() + timeout if timeout else None
        negotiating = not (assoc.is_established or assoc.is_released or assoc.is_aborted)
        if negotiating and self.negotiation_deadline is not None:
            deadline = min(deadline or self.negotiation_deadline, self.negotiation_deadline)
        return deadline

    @staticmethod
    def _before(sock: socket.socket, deadline: float | None) -> None:
        """Bound the next blocking read by ``deadline`` (TimeoutError once it passed: the DUL
        takes it as a closed connection, Evt17)."""
        if deadline is None:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("PDU not received within the timeout")
        # settimeout() is a syscall (ioctl FIONBIO): narrow the socket's timeout only when it
        # would overrun the deadline by more than the slack. The first read of an established
        # association's PDU then costs none (the socket already has the network timeout).
        current = sock.gettimeout()
        if current is None or current > remaining + _DEADLINE_SLACK:
            sock.settimeout(remaining)

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        deadline = self._deadline()
        try:
            return self._recv(sock, nr_bytes, deadline)
        finally:
            timeout = self.assoc.network_timeout
            if deadline is not None and sock.gettimeout() != timeout:
                with contextlib.suppress(OSError):  # sends get the whole network timeout again
                    sock.settimeout(timeout)

    def _recv(self, sock: socket.socket, nr_bytes: int, deadline: float | None) -> bytearray:
        if nr_bytes > _PREALLOCATE_MAX:
            stream = bytearray()
            while len(stream) < nr_bytes:
                self._before(sock, deadline)
                chunk = sock.recv(min(_CHUNK, nr_bytes - len(stream)))
                if not chunk:
                    break
                stream += chunk
            return stream
        buf = bytearray(nr_bytes)
        nr_read = 0
        with memoryview(buf) as view:
            while nr_read < nr_bytes:
                self._before(sock, deadline)
                n = sock.recv_into(view[nr_read:], nr_bytes - nr_read)
                if not n:
                    break  # connection closed: return what arrived
                nr_read += n
        # (after the memoryview is released: a bytearray with an export cannot shrink)
        if nr_read < nr_bytes:
            del buf[nr_read:]
        return buf


def _ui(tag_element: int, value: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b"\0"
    return struct.pack("<HHI", 0x0000, tag_element, len(raw)) + raw


def _us(tag_element: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0x0000, tag_element, 2, value)


def encode_store_rsp(rsp: C_STORE) -> bytes | None:
    """The command set of a plain C-STORE response, encoded Implicit VR Little Endian.

    Byte-identical to pynetdicom 3.0.4's ``C_STORE_RSP.primitive_to_message`` +
    ``encode_msg`` (``tests/scp/test_fast.py`` compares them); ``None`` when the response carries
    anything else (Offending Element, Error Comment, ...) and must go the stock way.
    """
    if (
        rsp.MessageIDBeingRespondedTo is None
        or rsp.Status is None
        or rsp.OffendingElement is not None
        or rsp.ErrorComment is not None
    ):
        return None
    body = b""
    if rsp.AffectedSOPClassUID is not None:
        body += _ui(0x0002, str(rsp.AffectedSOPClassUID))
    body += _us(0x0100, 0x8001)  # CommandField: C-STORE-RSP
    body += _us(0x0120, int(rsp.MessageIDBeingRespondedTo))
    body += _us(0x0800, 0x0101)  # CommandDataSetType: no data set
    body += _us(0x0900, int(rsp.Status))
    if rsp.AffectedSOPInstanceUID is not None:
        body += _ui(0x1000, str(rsp.AffectedSOPInstanceUID))
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


class _FileMeta(NamedTuple):
    """What pynetdicom's ``create_file_meta`` was asked for, encoded only when written."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    implementation_uid: str
    implementation_version: str


def _evr(tag_element: int, vr: bytes, value: bytes) -> bytes:
    """One group-0002 element, Explicit VR Little Endian, short (2-byte length) form."""
    return struct.pack("<HH2sH", 0x0002, tag_element, vr, len(value)) + value


def encode_file_meta(meta: _FileMeta) -> bytes | None:
    """The File Meta group as pydicom 3.0's ``write_file_meta_info`` writes it (after the
    preamble and ``DICM``); ``None`` for values it would treat differently (non-ASCII, odd
    padding) so that the stock writer handles them."""
    try:
        uids = [
            v.encode("ascii")
            for v in (
                meta.sop_class_uid,
                meta.sop_instance_uid,
                meta.transfer_syntax,
                meta.implementation_uid,
            )
        ]
        version = meta.implementation_version.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        return None
    if any(len(u) > 64 or u.endswith((b" ", b"\0")) for u in uids) or len(version) > 16:
        return None
    uids = [u + b"\0" if len(u) % 2 else u for u in uids]
    if len(version) % 2:
        version += b" "
    body = (
        struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2)
        + b"\x00\x01"
        + _evr(0x0002, b"UI", uids[0])
        + _evr(0x0003, b"UI", uids[1])
        + _evr(0x0010, b"UI", uids[2])
        + _evr(0x0012, b"UI", uids[3])
        + (_evr(0x0013, b"SH", version) if version else b"")
    )
    return _evr(0x0000, b"UL", struct.pack("<I", len(body))) + body


def _create_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    implementation_uid: str = PYNETDICOM_IMPLEMENTATION_UID,
    implementation_version: str = PYNETDICOM_IMPLEMENTATION_VERSION,
) -> _FileMeta:
    return _FileMeta(
        sop_class_uid,
        sop_instance_uid,
        transfer_syntax,
        implementation_uid,
        implementation_version,
    )


def _write_file_meta_info(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    if isinstance(file_meta, _FileMeta):
        encoded = encode_file_meta(file_meta) if enforce_standard else None
        if encoded is not None:
            fp.write(encoded)
            return
        file_meta = _stock_create_file_meta(**file_meta._asdict())
    _stock_write_file_meta_info(fp, file_meta, enforce_standard)


def install_file_meta_fast_path() -> None:
    """Rebind the two names ``pynetdicom.dimse_messages`` uses in ``decode_msg`` to write the
    File Meta of a received C-STORE dataset (pynetdicom 3.0.x). Only that module's names change;
    pydicom and ``pynetdicom.dsutils`` are untouched. Idempotent."""
    setattr(dimse_messages, "create_file_meta", _create_file_meta)  # noqa: B010
    setattr(dimse_messages, "write_file_meta_info", _write_file_meta_info)  # noqa: B010


class FastDIMSE(DIMSEServiceProvider):
    """DIMSE provider that sends plain C-STORE responses without pydicom encoding.

    Replaces pynetdicom 3.0.x ``DIMSEServiceProvider.send_msg`` for C-STORE-RSP only, and only
    while nothing but pynetdicom's standard (no-op for C-STORE-RSP) handler is bound to
    ``EVT_DIMSE_SENT``, since that event gets no message object on this path.
    """

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if type(primitive) is C_STORE and self._plain_dimse_sent():
            encoded = encode_store_rsp(primitive)
            max_pdu = self.maximum_pdu_size
            if encoded is not None and (not max_pdu or len(encoded) <= max_pdu - 6):
                pdata = P_DATA()
                # 0x03: command information, last fragment (PS3.8 E.2)
                pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)

    def receive_primitive(self, primitive: Any) -> None:
        """pynetdicom's, except that a command fragment arriving while a C-STORE's data set is
        being received is a protocol error (PS3.7 9.3.1: one command set, then its data set).
        pynetdicom would decode it as a new command and open a second temporary file in
        ``incoming/``, orphaning the first (found by fuzzing: a duplicated command fragment);
        raising here makes the DUL abort the association and remove the first.

        A P-DATA with several PDVs is taken one PDV at a time (pynetdicom decodes them in order
        anyway), so the check also sees a second command inside the same PDU."""
        if not isinstance(primitive, P_DATA):
            super().receive_primitive(primitive)
            return
        pdvs = primitive.presentation_data_value_list
        if len(pdvs) > 1:
            for pdv in pdvs:
                single = P_DATA()
                single.presentation_data_value_list = [pdv]
                self.receive_primitive(single)
            return
        streaming = getattr(self.message, "_data_set_file", None) is not None
        if streaming and any(data[:1] and data[0] & 1 for _, data in pdvs):
            raise ValueError("a command fragment inside a C-STORE data set")
        super().receive_primitive(primitive)

    def _plain_dimse_sent(self) -> bool:
        handlers = self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        return all(h[0] is standard_dimse_sent_handler for h in cast(list[Any], handlers))


class FastDUL(DULServiceProvider):
    """The DUL reactor, waiting in ``select()`` instead of sleeping 1 ms per idle loop."""

    def __init__(self, assoc: Association) -> None:
        # Created before super().__init__(): its __init__ assigns _kill_thread (our property).
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().__init__(assoc)
        # Every producer that is not the DUL thread itself wakes it up.
        self.event_queue = _WakeQueue(self._wake)
        self.to_provider_queue = _WakeQueue(self._wake)
        # Primitives for the association thread (A-ASSOCIATE/RELEASE/ABORT) wake it up.
        self.to_user_queue = _WakeQueue(self._wake_assoc)

    # -- wake-ups -------------------------------------------------------------------------------
    @property
    def _kill_thread(self) -> bool:
        return self.__kill_thread

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        self.__kill_thread = value
        if value:
            self._wake()

    def _wake(self) -> None:
        if threading.get_ident() == self.ident:
            return  # the DUL thread loops again by itself after producing an event
        # buffer full (a wake-up is pending anyway) or already closed: nothing to do
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _wake_assoc(self) -> None:
        wake = getattr(self.assoc, "_wake", None)
        if wake is not None:
            wake.set()

    def _idle_wait(self) -> None:
        """Wait until the peer sent data, another thread woke us, or a timer needs a look."""
        timeout = _bounded_wait(self.artim_timer, self._idle_timer)
        sock = self.socket
        raw = sock.socket if sock is not None and sock._is_connected else None
        try:
            if raw is None or raw.fileno() < 0:
                # Connection gone (e.g. Sta13 closed it): nothing to select on.
                select.select([self._wake_r], [], [], min(timeout, self._run_loop_delay))
            elif isinstance(raw, ssl.SSLSocket) and raw.pending():
                return  # TLS-buffered data select() cannot see
            else:
                select.select([raw, self._wake_r], [], [], timeout)
        except (OSError, ValueError):
            # The socket was closed under us by another thread: behave like pynetdicom.
            time.sleep(self._run_loop_delay)
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    # -- the reactor ----------------------------------------------------------------------------
    def run_reactor(self) -> None:
        """pynetdicom 3.0.4 ``DULServiceProvider.run_reactor`` with ``time.sleep`` → select."""
        try:
            self._run_reactor()
        finally:
            assoc = self.assoc
            never_asked = assoc.requestor.primitive is None and self.to_user_queue.empty()
            if assoc.is_acceptor and never_asked:
                # The connection ended before an A-ASSOCIATE-RQ arrived (a port probe, a peer
                # that gave up, one cut at its deadline). pynetdicom's association thread would
                # keep waiting for the request until its ACSE timeout, a thread per closed
                # connection: end that wait now (it sees an aborted association and returns).
                assoc.is_aborted = True
                self.to_user_queue.put(A_P_ABORT())
            self._wake_assoc()  # the association thread checks dul.is_alive()
            self._wake_r.close()
            self._wake_w.close()

    def _run_reactor(self) -> None:
        # Main DUL loop
        self._idle_timer.start()
        self.socket = cast("AssociationSocket", self.socket)
        sleep = False

        while True:
            # Let the assoc reactor off the leash
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True

            if sleep:
                # CHANGED: pynetdicom sleeps _run_loop_delay here
                self._idle_wait()

            if self._kill_thread:
                break

            # Check the ARTIM timer first so its event is placed on the queue
            #   ahead of any other events this loop
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")

            # Check the connection for incoming data
            try:
                # We can either encode and send a primitive **OR**
                #   receive and decode a PDU per loop of the reactor
                if self._process_recv_primitive():  # encode (sent by state machine)
                    pass
                elif self._is_transport_event():  # receive and decode PDU
                    self._idle_timer.restart()
            except Exception as exc:
                DUL_LOGGER.error("Exception in DUL.run(), aborting association")
                DUL_LOGGER.exception(exc)
                self._abort_hard()
                return

            # Check the event queue to see if there is anything to do
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue

            # CHANGED: pynetdicom lets an exception of the state machine end the thread (a
            # malformed DIMSE command set raises AttributeError/KeyError in decode_msg, an
            # unexpected PDU InvalidEventError: found by fuzzing); abort like a recv error.
            try:
                self.state_machine.do_action(event)
            except Exception as exc:
                DUL_LOGGER.error(
                    "Exception in the DUL state machine (%s), aborting association",
                    type(exc).__name__,
                )
                DUL_LOGGER.debug("state machine exception", exc_info=exc)
                self._abort_hard()
                return
            sleep = False

    def _abort_hard(self) -> None:
        """Bypass the state machine and send an A-ABORT (as pynetdicom does), then stop both
        reactors."""
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        with contextlib.suppress(OSError, AttributeError):
            cast("AssociationSocket", self.socket).send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        # Hard shutdown of the Association and DUL reactors
        self.assoc._kill = True
        self._kill_thread = True
        # CHANGED: pynetdicom fires no event here, so whatever tracks open associations (the
        # node's registry, its study holds) never heard of the end (found by fuzzing: every
        # such association stayed "open" and in memory); report it as the abort it is.
        with contextlib.suppress(Exception):
            evt.trigger(self.assoc, evt.EVT_ABORTED, {})
        # A C-STORE whose command set was decoded streams its dataset to a temporary file in
        # incoming/ (then decoding failed: a context that was not accepted, an unusable
        # character set): it was never acknowledged, so it goes — nobody else will see it.
        message = getattr(getattr(self.assoc, "dimse", None), "message", None)
        _discard(getattr(message, "_data_set_file", None))


class _WakingCheckpoint(threading.Event):
    """pynetdicom's ``_reactor_checkpoint``: a ``send_*()`` from another thread (a storage
    commitment report on the requester's association) clears it and then spins until the
    reactor says it paused — so clearing it wakes the reactor, which would otherwise sit in
    its wait for up to :data:`MAX_WAIT`."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake_reactor = wake
        self.set()

    def clear(self) -> None:
        super().clear()
        self._wake_reactor.set()


def _discard(partial: Any) -> None:
    """Close and remove a C-STORE's streamed data set file (``None``: there is none)."""
    if partial is not None:
        with contextlib.suppress(OSError):
            partial.close()
            Path(partial.name).unlink(missing_ok=True)


def _discard_dataset_file(msg: Any) -> None:
    """Close and remove a received C-STORE's streamed data set file, if it is still there."""
    _discard(getattr(msg, "_dataset_file", None))


class FastAssociation(Association):
    """An acceptor ``Association`` whose reactor waits on an event instead of sleeping 1 ms."""

    def __init__(self, ae: Any, mode: str) -> None:
        self._wake = threading.Event()
        super().__init__(ae, mode)
        self._reactor_checkpoint = _WakingCheckpoint(self._wake)
        # Replace the (never started) stock DUL and DIMSE providers with ours, then re-apply the
        # timeouts: pynetdicom's setters copy them into the providers (acse_timeout into the
        # DUL's ARTIM timer, network_timeout into its idle timer, dimse_timeout into DIMSE).
        self.dul = FastDUL(self)
        self.dimse = FastDIMSE(self)
        self.acse_timeout = self.acse_timeout
        self.dimse_timeout = self.dimse_timeout
        self.network_timeout = self.network_timeout
        self.dimse.msg_queue = _WakeQueue(self._wake.set)

    def run_reactor(self) -> None:
        """pynetdicom's; then the data set files of C-STOREs received but never served (the
        association ended with them still queued: found by fuzzing) are removed."""
        try:
            super().run_reactor()
        finally:
            # the node's backstop: an association whose end no event reported is forgotten
            # when its thread exits (set by StoreSCP.register; absent for associations it
            # never tracked)
            on_end = getattr(self, ON_THREAD_END_ATTR, None)
            if on_end is not None:
                try:
                    on_end(self)
                except Exception:  # the state store or audit trail failing: still drain below
                    ASSOC_LOGGER.exception("ending the association's tracking failed")
            pending = getattr(self.dimse, "msg_queue", None)
            while pending is not None:
                try:
                    _, msg = pending.get(block=False)
                except queue.Empty:
                    break
                _discard_dataset_file(msg)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        """pynetdicom's, then the C-STORE's streamed data set file goes if it is still there.

        pynetdicom deletes it only after a handler ran; on its other paths — an unknown SOP
        Class UID in the command, a rejected context, a request during release — the file
        stayed in ``incoming/`` (found by fuzzing). A handler that kept the instance moved it
        into the spool already, so this never removes an acknowledged instance.
        """
        try:
            super()._serve_request(msg, context_id)
        finally:
            _discard_dataset_file(msg)

    @property
    def _kill(self) -> bool:
        return self.__kill

    @_kill.setter
    def _kill(self, value: bool) -> None:
        self.__kill = value
        if value:
            self._wake.set()

    def _wait_for_work(self) -> None:
        self._wake.wait(_bounded_wait(self.dul._idle_timer))
        # Cleared before the checks below: anything that arrives after this is seen in this
        # loop's checks or wakes the next wait.
        self._wake.clear()

    def _run_reactor(self) -> None:
        """pynetdicom 3.0.4 ``Association._run_reactor`` with ``time.sleep(0.001)`` → event."""
        self._is_paused = False
        while not self._kill:
            # CHANGED: pynetdicom sleeps 1 ms here
            self._wait_for_work()

            # Pausable by the send_*() methods (see pynetdicom)
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                # More work may be queued already: look again without waiting
                self._wake.set()

            # Check for release request from the peer
            if self.is_established and self.acse.is_release_requested():
                # CHANGED: flagged before the response goes out — the peer closes the
                # connection as soon as it has it, and the EVT_CONN_CLOSE handler (DUL thread)
                # must see a release, not an unexplained close
                self.is_released = True
                self.acse.send_release(is_response=True)
                ASSOC_LOGGER.info("Association Released")
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            # Check for abort from either locally or the peer
            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                ASSOC_LOGGER.info(log_msg)
                # Ensure that EVT_ACSE_RECV fires for subscribers
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            # Check if the DULServiceProvider thread is still running
            if not self.dul.is_alive():
                self.kill()
                return

            # Check if network_timeout has expired
            if self.dul.idle_timer_expired():
                ASSOC_LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()

                self.kill()
                return


def create_association(handler: RequestHandler) -> Association:
    """pynetdicom 3.0.4 ``RequestHandler._create_association`` building our fast classes."""
    ae = handler.ae
    server = cast(Any, handler.server)
    assoc = FastAssociation(ae, MODE_ACCEPTOR)
    assoc._server = server

    timestamp = datetime.strftime(datetime.now(), "%Y%m%d%H%M%S")
    assoc.name = f"AcceptorThread@{timestamp}"

    sock = FastAssociationSocket(assoc, client_socket=handler.request)
    assoc.set_socket(sock)

    # Association Acceptor object -> local AE
    assoc.acceptor.maximum_length = ae.maximum_pdu_size
    assoc.acceptor.ae_title = server.ae_title
    assoc.acceptor.address_info = handler.local
    assoc.acceptor.implementation_class_uid = ae.implementation_class_uid
    assoc.acceptor.implementation_version_name = ae.implementation_version_name
    assoc.acceptor.supported_contexts = deepcopy(server.contexts)

    # Association Requestor object -> remote AE
    assoc.requestor.address_info = handler.remote

    # Bind events to handlers
    for event in server._handlers:
        if event.is_intervention and server._handlers[event]:
            assoc.bind(event, *server._handlers[event])
        elif isinstance(event, evt.NotificationEvent):
            for handler_ in server._handlers[event]:
                handler_ = cast(evt._HandlerBase, handler_)
                assoc.bind(event, handler_[0], handler_[1])

    return assoc
