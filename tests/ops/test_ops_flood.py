"""The ops endpoint under a flood of slow clients (issue 12, item 4): bounded threads, a clean
503 while full, and /healthz answering again once the slow clients are cut."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from dicomgate.ops import Metrics, OpsServer
from tests.helpers import wait_for


@pytest.fixture
def ops() -> Iterator[OpsServer]:
    server = OpsServer(
        "127.0.0.1",
        0,
        metrics=Metrics(),
        ready=lambda: None,
        studies=lambda uid: {"studies": []},
        max_connections=3,
        request_timeout=2,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _get(server: OpsServer, path: str) -> tuple[int, bytes]:
    host, port = server.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as rsp:
            return rsp.status, rsp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _slow_clients(server: OpsServer, n: int) -> list[socket.socket]:
    """Clients that send half a request line and then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(server.address, timeout=30)
        s.sendall(b"GET /heal")
        socks.append(s)
    return socks


def test_flood_of_slow_clients_is_refused_cleanly_then_healthz_answers(ops: OpsServer) -> None:
    slow = _slow_clients(ops, 3)
    try:
        # every slot busy: refused at once with a complete 503, not left hanging
        assert wait_for(lambda: _get(ops, "/healthz") == (503, b"busy\n"), timeout=10)
        # the slow ones are cut at request_timeout; /healthz answers again
        assert wait_for(lambda: _get(ops, "/healthz") == (200, b"ok\n"), timeout=30)
        for s in slow:  # each one was closed by the server
            while s.recv(4096):
                pass
    finally:
        for s in slow:
            s.close()


def test_trickling_client_is_cut_at_the_deadline(ops: OpsServer) -> None:
    """A client sending one byte at a time is cut after request_timeout in all (not only
    after that long without a byte)."""
    with socket.create_connection(ops.address, timeout=30) as s:
        request = b"GET /healthz HTTP/1.0\r\n" + b"X-Slow: " + b"a" * 200
        closed = False
        for byte in request:
            try:
                s.send(bytes([byte]))
            except OSError:
                closed = True
                break
            s.settimeout(0.5)
            try:
                if s.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed
    assert _get(ops, "/healthz") == (200, b"ok\n")
