"""Who may associate: calling/called AE titles and peer networks, decided at A-ASSOCIATE time.

pynetdicom checks AE titles itself but cannot refuse by peer address with an A-ASSOCIATE-RJ;
:class:`PolicyACSE` runs our policy first and answers with the proper reason (PS3.8 Table 9-21),
then hands over to pynetdicom's own negotiation.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.transport import RequestHandler

from dicomgate._logging import get_logger
from dicomgate.scp import _fast

__all__ = ["AccessPolicy", "PolicyACSE", "Rejection", "TunedRequestHandler"]

log = get_logger(__name__)

# A-ASSOCIATE-RJ (result, source, reason) — PS3.8 Table 9-21
RJ_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
REASON_NO_REASON = 0x01
REASON_CALLING_AE_NOT_RECOGNIZED = 0x03
REASON_CALLED_AE_NOT_RECOGNIZED = 0x07


@dataclass(frozen=True, slots=True)
class Rejection:
    result: int
    source: int
    reason: int
    why: str


@dataclass(frozen=True)
class AccessPolicy:
    """The node's association policy; empty lists mean "anyone"."""

    ae_title: str
    require_called_ae_title: bool = True
    allowed_calling_ae_titles: Sequence[str] = ()
    allowed_networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=tuple
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


class PolicyACSE(ACSE):
    """pynetdicom's ACSE with our access policy run before negotiation."""

    policy: AccessPolicy

    def _negotiate_as_acceptor(self) -> None:
        rq = self.requestor.primitive
        assert isinstance(rq, A_ASSOCIATE)  # set by pynetdicom before negotiation
        peer = str(self.requestor.address)
        rejection = self.policy.check(
            calling_ae=str(rq.calling_ae_title),
            called_ae=str(rq.called_ae_title),
            peer_address=peer,
        )
        if rejection is None:
            super()._negotiate_as_acceptor()
            return
        log.warning(
            "association rejected",
            reason=rejection.why,
            calling_ae=str(rq.calling_ae_title),
            called_ae=str(rq.called_ae_title),
            peer=peer,
            rj=(rejection.result, rejection.source, rejection.reason),
        )
        self.send_reject(rejection.result, rejection.source, rejection.reason)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()


class TunedRequestHandler(RequestHandler):
    """pynetdicom's request handler plus TCP_NODELAY, our policy-aware ACSE and (on the
    pynetdicom versions it was checked against) the event-driven reactors of :mod:`._fast`."""

    def _create_association(self) -> Any:
        sock = self.request
        if isinstance(sock, socket.socket):
            # Without this, every C-STORE response waits ~40 ms for Nagle/delayed-ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fast = _fast.enabled()
        assoc = _fast.create_association(self) if fast else super()._create_association()
        acse = PolicyACSE(assoc)
        acse.policy = self.server.policy  # type: ignore[attr-defined]
        assoc.acse = acse
        return assoc
