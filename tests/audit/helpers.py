"""Audit test helpers: the schema, certificates, and a syslog-over-TLS receiver (RFC 5425)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from dicomgate.audit import schema_path
from tests.tls_certs import CertAuthority

_SCHEMA: etree.RelaxNG | None = None


def schema() -> etree.RelaxNG:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = etree.RelaxNG(etree.parse(str(schema_path())))
    return _SCHEMA


def assert_valid(xml: str | bytes) -> etree._Element:
    """Parse one audit message and validate it against the PS3.15 A.5.1 schema."""
    doc = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    rng = schema()
    assert rng.validate(doc), f"{rng.error_log}\n{xml!r}"
    return doc


def audit_lines(path: Path) -> list[str]:
    return [line for line in path.read_text("utf-8").splitlines() if line]


def event_id(doc: etree._Element) -> str:
    return str(doc.find("EventIdentification/EventID").get("csd-code"))


# -- certificates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate for 127.0.0.1 / localhost, signed by it (the same test
    PKI as the DICOM TLS tests)."""
    ca = CertAuthority(directory, name="dicomgate test audit CA")
    server = ca.issue("server", "audit.test", server=True)
    return Pki(ca.cert, server.cert, server.key)


# -- the receiver ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyslogFrame:
    """One received syslog message, split per RFC 5424 (structured data "-" assumed)."""

    raw: bytes

    @property
    def fields(self) -> list[bytes]:
        # PRI+VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
        return self.raw.split(b" ", 7)

    @property
    def header(self) -> list[str]:
        return [f.decode() for f in self.fields[:7]]

    @property
    def msg(self) -> str:
        return self.fields[7].decode("utf-8")


class SyslogReceiver:
    """An RFC 5425 receiver on 127.0.0.1: TLS, octet-counted frames. ``stop()`` closes the
    listener and every connection (as a repository going down); ``start()`` again listens on
    the same port."""

    def __init__(self, pki: Pki, port: int = 0) -> None:
        self.pki = pki
        self.port = port
        self.frames: list[SyslogFrame] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._running = False

    def start(self) -> SyslogReceiver:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.pki.cert_file), str(self.pki.key_file))
        self._ctx = ctx
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(8)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._running = True
        t = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        t.start()
        self._threads.append(t)
        return self

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def _accept(self, sock: socket.socket) -> None:
        while self._running:
            try:
                raw, _ = sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self._ctx.wrap_socket(raw, server_side=True)
        except OSError as exc:
            self.errors.append(f"handshake: {exc}")
            raw.close()
            return
        with self._lock:
            self._conns.append(conn)
        buf = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while True:
                    space = buf.find(b" ")
                    if space < 0:
                        break
                    length = int(buf[:space])
                    if len(buf) < space + 1 + length:
                        break
                    with self._lock:
                        self.frames.append(SyslogFrame(buf[space + 1 : space + 1 + length]))
                    buf = buf[space + 1 + length :]
        except (OSError, ValueError):
            return
        finally:
            conn.close()

    @property
    def listening(self) -> bool:
        probe = socket.socket()
        try:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0
        finally:
            probe.close()

    def messages(self) -> list[str]:
        with self._lock:
            return [f.msg for f in self.frames]

    def stop(self) -> None:
        self._running = False
        if self._sock is not None:
            # shutdown wakes the thread blocked in accept(); close alone leaves it listening
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
