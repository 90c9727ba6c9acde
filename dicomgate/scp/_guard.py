"""Limits on connections and associations, and the security events the audit trail records.

pynetdicom counts every live acceptor thread against ``maximum_associations`` — connections
still negotiating and threads whose peer is already gone included — and it accepts any number
of TCP connections, each with its own thread. A handful of silent connections would then hold
every slot until their ACSE timeout, and a flood would create threads without bound. Here:

* **association slots** (``max_associations``) count established associations only, both
  listeners together; the one over the limit gets A-ASSOCIATE-RJ (transient, service-provider
  presentation, local limit exceeded — PS3.8 Table 9-21: result 2, source 3, reason 2);
* **pending connections** (``max_pending_connections``) count connections not yet associated —
  TLS handshakes and peers that have not sent (all of) their A-ASSOCIATE-RQ; a connection over
  that limit is closed at once. Each pending connection is cut after ``acse_timeout`` (the TLS
  handshake and the whole A-ASSOCIATE-RQ must arrive within it), so a silent or slow peer
  never holds anything a real sender needs for longer.

Security events — a failed TLS handshake, a rejected association, an authentication failure (a
calling AE title bound to a certificate subject it did not present), a refused connection — are
logged under stable event names and handed to :attr:`ConnectionGate.on_event` (the audit
trail's hook, PS3.15 A.5 Security Alert).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dicomgate._logging import get_logger
from dicomgate._tracebacks import safe_traceback

__all__ = ["ConnectionGate", "SecurityEvent", "SecurityEventKind"]

log = get_logger(__name__)

#: kinds of :class:`SecurityEvent` (stable: the audit trail and log searches use them)
SecurityEventKind = str
TLS_HANDSHAKE_FAILED: SecurityEventKind = "tls_handshake_failed"
ASSOCIATION_REJECTED: SecurityEventKind = "association_rejected"
AUTHENTICATION_FAILED: SecurityEventKind = "authentication_failed"
CONNECTION_REFUSED: SecurityEventKind = "connection_refused"

#: the log line's event name of each kind
_LOG_EVENT = {
    TLS_HANDSHAKE_FAILED: "tls handshake failed",
    ASSOCIATION_REJECTED: "association rejected",
    AUTHENTICATION_FAILED: "association rejected",
    CONNECTION_REFUSED: "connection refused",
}


@dataclass(frozen=True)
class SecurityEvent:
    """Something the audit trail records as a Security Alert.

    ``listener``: ``"dicom"`` or ``"dicom-tls"``; ``peer``: ``host:port``; ``reason``: words
    (never a dataset value); ``rj``: the A-ASSOCIATE-RJ (result, source, reason) when one was
    sent; ``tls_subject``: the client certificate's subject when there was one.
    """

    kind: SecurityEventKind
    listener: str
    peer: str
    reason: str
    calling_ae: str | None = None
    called_ae: str | None = None
    rj: tuple[int, int, int] | None = None
    tls_subject: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConnectionGate:
    """Counts shared by the node's listeners (one AE): slots, pending connections, events."""

    max_associations: int
    max_pending: int
    #: the audit trail's hook; called in the thread where the event happened, must not block
    on_event: Callable[[SecurityEvent], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: accepted connections whose association thread has not started yet (TLS handshakes)
    _starting: int = 0
    #: slots taken by associations being accepted right now (not yet established)
    _reserved: int = 0

    # -- pending connections (accept thread) ------------------------------------------------------
    def admit(self, ae: Any) -> bool:
        """A connection was accepted: True if it may go on (counted as starting until
        :meth:`started`), False if too many connections are pending (close it)."""
        with self._lock:
            if self._starting + _negotiating(ae) >= self.max_pending:
                return False
            self._starting += 1
            return True

    def started(self) -> None:
        """The connection's association thread runs (or the connection is gone)."""
        with self._lock:
            self._starting -= 1

    def pending(self, ae: Any) -> int:
        with self._lock:
            return self._starting + _negotiating(ae)

    # -- association slots (association threads, at A-ASSOCIATE-RQ) ----------------------------
    def reserve_slot(self, ae: Any, assoc: Any) -> bool:
        """Take a slot for ``assoc`` (about to be accepted); False when all are in use."""
        with self._lock:
            if _established(ae, assoc) + self._reserved >= self.max_associations:
                return False
            self._reserved += 1
            return True

    def release_reservation(self) -> None:
        """The reserved association is established now (counted as such) or failed."""
        with self._lock:
            self._reserved -= 1

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: SecurityEvent) -> None:
        """Log ``event`` under its stable name and hand it to the audit hook."""
        fields: dict[str, Any] = {
            "security_event": event.kind,
            "listener": event.listener,
            "peer": event.peer,
            "reason": event.reason,
        }
        for name in ("calling_ae", "called_ae", "rj", "tls_subject"):
            value = getattr(event, name)
            if value is not None:
                fields[name] = value
        log.warning(_LOG_EVENT[event.kind], **fields, **event.extra)
        hook = self.on_event
        if hook is None:
            return
        try:
            hook(event)
        except Exception as exc:  # the audit trail failing must not take a connection down
            log.error(
                "security event hook failed",
                error=type(exc).__name__,
                traceback=safe_traceback(exc),
            )


def _acceptors(ae: Any) -> list[Any]:
    return [a for a in ae.active_associations if a.is_acceptor]


def _established(ae: Any, other_than: Any) -> int:
    return sum(1 for a in _acceptors(ae) if a.is_established and a is not other_than)


def _negotiating(ae: Any) -> int:
    """Association threads still waiting for (or reading) the A-ASSOCIATE-RQ, with a live
    connection: an acceptor thread whose peer is gone lingers until its ACSE timeout but holds
    no socket, and is not counted."""
    count = 0
    for a in _acceptors(ae):
        if a.is_established or a.is_released or a.is_aborted or a.is_rejected:
            continue
        dul = getattr(a, "dul", None)
        if dul is not None and dul.is_alive():
            count += 1
    return count
