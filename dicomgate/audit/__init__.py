"""The audit trail: DICOM audit messages (PS3.15 A.5, what IHE ATNA audit repositories read).

The node writes one message per event to a durable local file (``audit_file``, default
``<data_dir>/audit/audit.log``, one XML message per line) and, with ``audit_syslog_url =
tls://host:6514``, forwards each as RFC 5424 syslog over TLS (RFC 5425, octet counting, MSGID
``IHE+RFC-3881``), using the file as its disk queue (see :mod:`dicomgate.audit._trail`). The
schema every message validates against is ``data/audit-message.rng`` (PS3.15 A.5.1 in RELAX NG
XML syntax; :func:`schema_path`).

Events and where they come from:

* Application Activity (110100; 110120 start, 110121 stop) — :class:`~dicomgate.node.Node`.
* Security Alert (110113) — a rejected association, with the reason
  (``scp._server._handle_rejected``); TLS and authentication failures (see below).
* Begin Transferring DICOM Instances (110102) — an association's first instance of a study;
  a manifest about to be published.
* DICOM Instances Transferred (110104) — per association and study when the association ends
  (action C: received; counts by SOP class; the calling AE title and peer address the source,
  this node the destination); per manifest (action R: exported; the partners notified, or the
  destination, as the destination participants).
* Export (110106) — per manifest, the destination as the media (a URI, without credentials).
* Query (110112) — ``dicomgate links``.

Identifiers: participant objects name studies (110180 Study Instance UID) and patients (RFC 3881
"2", Patient Number) by the identifiers the partner receives — pseudonymized — unless
``audit_identifiers = original``, which is for sites whose audit repository sits inside the
hospital. No message ever carries a patient's name or any other value of a dataset.

API for other parts of the node. Components hold an :class:`AuditTrail` (``NULL_TRAIL`` until
the node gives them its own: ``StoreSCP.audit``, the ``_Server.audit`` of the listening socket,
``StudyPublisher.audit``); every method is thread-safe and never raises:

* ``trail.security_alert(reason, peer, calling_ae=None, kind="node-authentication")`` — a TLS
  handshake that failed, a client certificate from another CA, an AE title whose certificate
  subject does not match (``kind``: ``node-authentication`` for TLS/certificates,
  ``restricted-function`` for refused associations; ``reason`` in words, no patient value;
  ``peer`` ``"host"`` or ``"host:port"``).
* ``trail.commitment(calling_ae=..., peer=..., studies={study_uid: committed}, failed=n)`` — a
  storage commitment report sent (DICOM Instances Transferred, action R).
* ``trail.emit(message)`` — anything else: build it with :func:`dicomgate.audit.messages.build`
  (or a helper there), with ``trail.node()`` / ``trail.peer()`` as participants, ``trail.source``
  as the source and ``trail.ids.study(uid)`` / ``trail.ids.patient(key)`` for identifiers.
* :func:`current` — the trail of the node running in this process (``NULL_TRAIL`` if none), for
  code that has no object to hold one.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dicomgate.audit import _messages as messages
from dicomgate.audit._syslog import SyslogTarget, parse_syslog_url
from dicomgate.audit._trail import NULL_TRAIL, AuditTrail, Identifiers, StudyTally
from dicomgate.config import DeidOption, Settings
from dicomgate.pseudonym import Pseudonymizer

__all__ = [
    "NULL_TRAIL",
    "AuditTrail",
    "Identifiers",
    "StudyTally",
    "SyslogTarget",
    "audit_path",
    "current",
    "install",
    "messages",
    "schema_path",
    "trail_for",
]

_current: AuditTrail = NULL_TRAIL


def schema_path() -> Path:
    """The DICOM Audit Message Schema (PS3.15 A.5.1) as RELAX NG (XML syntax)."""
    return Path(str(resources.files("dicomgate.audit") / "data" / "audit-message.rng"))


def audit_path(settings: Settings) -> Path:
    """``audit_file``, or ``<data_dir>/audit/audit.log``."""
    if settings.audit_file is not None:
        return settings.audit_file
    return settings.data_dir / "audit" / "audit.log"


def trail_for(
    settings: Settings, pseudonymizer: Pseudonymizer, *, background: bool = True
) -> AuditTrail:
    """The trail ``settings`` describe (not yet opened); ``NULL_TRAIL`` when audit is off.
    ``background=False`` (a one-shot command): each message is fsync'd at once and nothing is
    sent from this process (the node's sender forwards what the command appended)."""
    if not settings.audit_enabled:
        return NULL_TRAIL
    syslog = None
    if settings.audit_syslog_url and background:
        host, port = parse_syslog_url(settings.audit_syslog_url)
        syslog = SyslogTarget(
            host,
            port,
            ca_file=settings.audit_syslog_ca_file,
            cert_file=settings.audit_syslog_cert_file,
            key_file=settings.audit_syslog_key_file,
        )
    return AuditTrail(
        audit_path(settings),
        identifiers=Identifiers(
            settings.audit_identifiers,
            pseudonymizer,
            retain_uids=DeidOption.RETAIN_UIDS in settings.deid_options,
        ),
        ae_title=settings.ae_title,
        node_id=settings.node_id,
        source_id=settings.audit_source_id,
        site_id=settings.audit_enterprise_site_id,
        syslog=syslog,
        background=background,
    )


def install(trail: AuditTrail) -> None:
    """Make ``trail`` what :func:`current` returns (the node does, at start and stop)."""
    global _current
    _current = trail


def current() -> AuditTrail:
    """The running node's trail, or ``NULL_TRAIL``."""
    return _current
