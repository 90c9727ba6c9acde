"""RFC 5424 syslog over TLS (RFC 5425) for audit messages, as IHE ITI-20 asks.

Each audit message (one line of the local audit file) becomes one syslog message::

    <85>1 2026-03-01T10:15:00.123Z host dicomgate 4242 IHE+RFC-3881 - <AuditMessage>...

(facility 10 security/authorization, severity 5 notice; structured data "-"; the MSG is the
XML in UTF-8 without a BOM), sent with octet-counting framing: ``LEN SP MSG``.

There is no acknowledgement in RFC 5425. :class:`SyslogConnection` gets as close as TCP
allows: :meth:`~SyslogConnection.delivered` is true once the peer's TCP stack has acknowledged
every byte sent (the socket's send queue is empty, ``TIOCOUTQ``) and the connection is still
open (no EOF or reset on a non-blocking peek). The sender only moves its cursor past what was
delivered in that sense, and resends from the cursor after a reconnection: at least once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import socket
import ssl
import struct
import termios
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["SyslogConnection", "SyslogTarget", "frame", "parse_syslog_url", "syslog_message"]

#: facility 10 (security/authorization messages) * 8 + severity 5 (notice)
PRI = 10 * 8 + 5
APP_NAME = "dicomgate"
MSGID = "IHE+RFC-3881"
DEFAULT_PORT = 6514

_EVENT_TIME = re.compile(rb'EventDateTime="([^"]+)"')


@dataclass(frozen=True, slots=True)
class SyslogTarget:
    """Where audit messages go: ``tls://host:port`` with the TLS material to reach it."""

    host: str
    port: int
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    connect_timeout: float = 10.0

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def context(self) -> ssl.SSLContext:
        """TLS 1.2+ with the system's (or ``ca_file``'s) trust and host name checking; a client
        certificate when one is configured (most audit repositories ask for one)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            ctx.load_cert_chain(
                str(self.cert_file), str(self.key_file) if self.key_file is not None else None
            )
        return ctx


def parse_syslog_url(url: str) -> tuple[str, int]:
    """``tls://host[:port]`` -> (host, port); anything else is a ValueError naming the form."""
    parts = urlsplit(url)
    if parts.scheme != "tls" or not parts.hostname:
        raise ValueError(f"expected tls://host[:port] (RFC 5425, port {DEFAULT_PORT}), got {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"the port of {url!r} is not a number") from None
    return parts.hostname, port


def syslog_message(xml_line: bytes, *, hostname: str, procid: str) -> bytes:
    """The RFC 5424 message for one audit message; its TIMESTAMP is the event's time."""
    match = _EVENT_TIME.search(xml_line)
    stamp = match.group(1).decode("ascii", "replace") if match else "-"
    header = f"<{PRI}>1 {stamp} {hostname or '-'} {APP_NAME} {procid or '-'} {MSGID} - "
    return header.encode("ascii", "replace") + xml_line


def frame(message: bytes) -> bytes:
    """RFC 5425 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


class SyslogConnection:
    """One TLS connection to the audit repository."""

    def __init__(self, target: SyslogTarget) -> None:
        raw = socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
        try:
            self.sock = target.context().wrap_socket(raw, server_hostname=target.host)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(30.0)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _unacknowledged(self) -> int:
        """Bytes the peer's TCP stack has not acknowledged yet (Linux ``TIOCOUTQ``); 0 where
        the platform cannot say."""
        try:
            buf = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", buf)[0])

    def closed_by_peer(self) -> bool:
        """The repository closed or reset the connection (it never sends data otherwise)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable and not self.sock.pending():
            return False
        self.sock.settimeout(0)
        try:
            data = self.sock.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False  # a TLS record with no data (a TLS 1.3 session ticket)
        except OSError:
            return True
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(30.0)
        return data == b""

    def delivered(self) -> bool:
        """Every byte sent was acknowledged by the peer and the connection is still open."""
        return not self.closed_by_peer() and self._unacknowledged() == 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def local_hostname() -> str:
    """The HOSTNAME field: this machine's name (RFC 5424 allows a plain host name)."""
    return socket.gethostname() or "-"


def procid() -> str:
    return str(os.getpid())
