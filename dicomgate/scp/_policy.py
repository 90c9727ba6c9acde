"""Who may associate: calling/called AE titles and peer networks, decided at A-ASSOCIATE time.

pynetdicom checks AE titles itself but cannot refuse by peer address with an A-ASSOCIATE-RJ;
:class:`PolicyACSE` runs our policy first and answers with the proper reason (PS3.8 Table 9-21),
then hands over to pynetdicom's own negotiation.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.transport import RequestHandler

from dicomgate._logging import get_logger
from dicomgate.scp import _fast
from dicomgate.scp._guard import (
    ASSOCIATION_REJECTED,
    AUTHENTICATION_FAILED,
    ConnectionGate,
    SecurityEvent,
)
from dicomgate.scp._tls import subject_matches, subject_string

__all__ = ["AccessPolicy", "PolicyACSE", "Rejection", "TunedRequestHandler"]

log = get_logger(__name__)

# A-ASSOCIATE-RJ (result, source, reason) — PS3.8 Table 9-21
RJ_PERMANENT = 0x01
RJ_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
SOURCE_PROVIDER_PRESENTATION = 0x03
REASON_NO_REASON = 0x01
REASON_CALLING_AE_NOT_RECOGNIZED = 0x03
REASON_CALLED_AE_NOT_RECOGNIZED = 0x07
REASON_LOCAL_LIMIT_EXCEEDED = 0x02  # with SOURCE_PROVIDER_PRESENTATION


@dataclass(frozen=True, slots=True)
class Rejection:
    result: int
    source: int
    reason: int
    why: str
    #: an authentication failure (certificate and AE title disagree), not only a refusal
    authentication: bool = False


@dataclass(frozen=True)
class AccessPolicy:
    """The node's association policy; empty lists mean "anyone"."""

    ae_title: str
    require_called_ae_title: bool = True
    allowed_calling_ae_titles: Sequence[str] = ()
    allowed_networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=tuple
    )
    #: calling AE title -> the certificate subject (CN or full subject) it must present
    ae_subjects: Mapping[str, str] = field(default_factory=dict)

    def check_certificate(
        self, *, calling_ae: str, tls: bool, cert: dict[str, Any] | None
    ) -> Rejection | None:
        """A calling AE title bound to a certificate subject must come over TLS with it."""
        required = self.ae_subjects.get(calling_ae.strip())
        if required is None:
            return None
        if not tls:
            why = "calling AE title is bound to a TLS certificate: plaintext refused"
        elif not subject_matches(cert, required):
            why = "client certificate subject does not match the calling AE title"
        else:
            return None
        return Rejection(
            RJ_PERMANENT,
            SOURCE_SERVICE_USER,
            REASON_CALLING_AE_NOT_RECOGNIZED,
            why,
            authentication=True,
        )

    def check(self, *, calling_ae: str, called_ae: str, peer_address: str) -> Rejection | None:
        if self.allowed_networks:
            try:
                addr = ipaddress.ip_address(peer_address.split("%")[0])
            except ValueError:
                addr = None
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            if addr is None or not any(addr in net for net in self.allowed_networks):
                # No reason code names "address not allowed"; permanent, no-reason-given.
                return Rejection(
                    RJ_PERMANENT, SOURCE_SERVICE_USER, REASON_NO_REASON, "peer network not allowed"
                )
        allowed_calling = self.allowed_calling_ae_titles
        if allowed_calling and calling_ae.strip() not in allowed_calling:
            return Rejection(
                RJ_PERMANENT,
                SOURCE_SERVICE_USER,
                REASON_CALLING_AE_NOT_RECOGNIZED,
                "calling AE title not allowed",
            )
        if self.require_called_ae_title and called_ae.strip() != self.ae_title:
            return Rejection(
                RJ_PERMANENT,
                SOURCE_SERVICE_USER,
                REASON_CALLED_AE_NOT_RECOGNIZED,
                "called AE title is not this node's",
            )
        return None


def _tls_socket(assoc: Any) -> ssl.SSLSocket | None:
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    return sock if isinstance(sock, ssl.SSLSocket) else None


class PolicyACSE(ACSE):
    """pynetdicom's ACSE with our access policy and association slots checked before
    negotiation (pynetdicom's own count of ``maximum_associations`` is switched off: see
    :mod:`dicomgate.scp._guard`)."""

    policy: AccessPolicy
    gate: ConnectionGate

    def _negotiate_as_acceptor(self) -> None:
        rq = self.requestor.primitive
        if not isinstance(rq, A_ASSOCIATE):  # the connection ended first (see _fast.FastDUL)
            self.assoc.kill()
            return
        peer = str(self.requestor.address)
        calling_ae = str(rq.calling_ae_title).strip()
        tls = _tls_socket(self.assoc)
        cert = tls.getpeercert() if tls is not None else None
        rejection = self.policy.check(
            calling_ae=calling_ae,
            called_ae=str(rq.called_ae_title),
            peer_address=peer,
        ) or self.policy.check_certificate(calling_ae=calling_ae, tls=tls is not None, cert=cert)
        if rejection is None:
            if not self.gate.reserve_slot(self.assoc.ae, self.assoc):
                rejection = Rejection(
                    RJ_TRANSIENT,
                    SOURCE_PROVIDER_PRESENTATION,
                    REASON_LOCAL_LIMIT_EXCEEDED,
                    "too many associations (max_associations)",
                )
            else:
                try:
                    super()._negotiate_as_acceptor()
                except Exception as exc:
                    # pynetdicom raises on some malformed request items (an abstract syntax
                    # that is not a UID, found by fuzzing): abort, never a dead thread
                    log.warning(
                        "malformed association request, aborted",
                        peer=peer,
                        calling_ae=calling_ae,
                        error=type(exc).__name__,
                    )
                    self.send_ap_abort(0x06)  # invalid PDU parameter value
                    self.assoc.kill()
                finally:
                    self.gate.release_reservation()
                return
        self.gate.emit(
            SecurityEvent(
                kind=AUTHENTICATION_FAILED if rejection.authentication else ASSOCIATION_REJECTED,
                listener="dicom-tls" if tls is not None else "dicom",
                peer=f"{peer}:{self.requestor.port}",
                reason=rejection.why,
                calling_ae=calling_ae,
                called_ae=str(rq.called_ae_title).strip(),
                rj=(rejection.result, rejection.source, rejection.reason),
                tls_subject=subject_string(cert) if tls is not None else None,
            )
        )
        self.send_reject(rejection.result, rejection.source, rejection.reason)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()


class TunedRequestHandler(RequestHandler):
    """pynetdicom's request handler plus TCP_NODELAY, socket timeouts, our policy-aware ACSE
    and (on the pynetdicom versions it was checked against) the event-driven reactors of
    :mod:`._fast`."""

    def _create_association(self) -> Any:
        sock = self.request
        ae = self.server.ae
        if isinstance(sock, socket.socket):
            # Without this, every C-STORE response waits ~40 ms for Nagle/delayed-ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # No read or write blocks forever: a peer that stops sending (or reading) in the
            # middle of a PDU is cut after the network timeout (the fast socket also bounds a
            # whole PDU, see _fast.FastAssociationSocket).
            sock.settimeout(ae.network_timeout)
        fast = _fast.enabled()
        assoc = _fast.create_association(self) if fast else super()._create_association()
        if fast:
            # the A-ASSOCIATE-RQ must have arrived whole within the ACSE timeout of the accept
            accepted = getattr(self.server, "accepted_at", time.monotonic)()
            fast_socket = cast(_fast.FastAssociationSocket, assoc.dul.socket)
            fast_socket.negotiation_deadline = accepted + (ae.acse_timeout or 30.0)
        acse = PolicyACSE(assoc)
        acse.policy = self.server.policy  # type: ignore[attr-defined]
        acse.gate = self.server.gate  # type: ignore[attr-defined]
        assoc.acse = acse
        return assoc
