"""The ops HTTP endpoint: liveness, readiness, Prometheus metrics and study status.

``/healthz``  200 while the process serves HTTP at all (liveness).
``/readyz``   200 when the DICOM listener accepts associations and the spool has room;
              503 with the reason otherwise (a load balancer routes elsewhere while full).
``/metrics``  Prometheus text format.
``/studies``, ``/studies/<uid>``  study status as JSON — pseudonymized identifiers only
              (``<uid>`` may be the original or the pseudonymized Study Instance UID).

Bound to 127.0.0.1 by default; it is an operator's port, not the partner's.

Bounded (issue 12, item 4): at most ``max_connections`` requests are served at once, each
connection has ``request_timeout`` seconds in all to send its request and read the answer (a
client trickling one byte at a time is cut then, not only one idle for that long), and a
connection over the limit gets ``503`` at once (written without waiting, then closed) rather
than a thread. So a flood of slow clients costs at most ``max_connections`` threads and delays
``/healthz`` by at most ``request_timeout``, and is refused cleanly meanwhile.

A request path can hold the original Study Instance UID an operator typed, so what is logged of
a request is its route (``/studies/{uid}``), and a failure is logged as a safe traceback (types
and frames: exception messages quote values).  Requests are logged at debug level only: a load
balancer's health checks would otherwise be most of the log.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dicomgate._logging import get_logger
from dicomgate._tracebacks import safe_traceback
from dicomgate.ops.metrics import Metrics

__all__ = ["OpsServer", "route_of"]

log = get_logger(__name__)


def _public(study: dict[str, Any]) -> dict[str, Any]:
    """A study's status without original identifiers (the endpoint is not the spool)."""
    hidden = {"study"}
    public = {k: v for k, v in study.items() if k not in hidden}
    public["quarantined"] = [
        # the instance by its pseudonymized UID only
        {"instance": q.get("deid_instance"), "stage": q["stage"], "reason": q["reason"]}
        for q in study.get("quarantined", [])
    ]
    return public


_ROUTES = frozenset({"/", "/healthz", "/readyz", "/metrics", "/studies"})


def route_of(path: str) -> str:
    """What may be logged of a request path: its route template, never an identifier."""
    if path in _ROUTES:
        return path
    if path.startswith("/studies/"):
        return "/studies/{uid}"
    return "{unknown}"  # anything a client sent: not logged either


_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    max_connections = 16
    request_timeout = 10.0
    _slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accept loop: a thread for the connection if a slot is free, else 503."""
        if not self._slots.acquire(blocking=False):
            log.debug("ops connection refused: busy", max_connections=self.max_connections)
            with contextlib.suppress(OSError):
                request.setblocking(False)  # never wait on the client here
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The whole exchange within request_timeout: the socket's timeout bounds each wait,
        # and the timer shuts the connection down at the deadline, however the bytes trickle.
        deadline = threading.Timer(self.request_timeout, _cut, args=(request,))
        deadline.daemon = True
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escaped a request (socketserver prints a plain traceback to stderr)."""
        exc = sys.exc_info()[1]
        if exc is not None:
            log.error("ops request failed", error=type(exc).__name__, traceback=safe_traceback(exc))


def _cut(sock: socket.socket) -> None:
    """A connection past its deadline: wake the thread blocked on it (it then ends)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Metrics,
        ready: Callable[[], str | None],
        studies: Callable[[str | None], dict[str, Any]],
        max_connections: int = 16,
        request_timeout: float = 10.0,
    ) -> None:
        ops = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "dicomgate-ops"
            timeout = request_timeout  # each read and write on the connection

            def do_GET(self) -> None:
                ops._route(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # http.server's lines quote the raw request path: see OpsServer._route

        self._metrics = metrics
        self._ready = ready
        self._studies = studies
        self._httpd = _Server((host, port), Handler)
        self._httpd.max_connections = max_connections
        self._httpd.request_timeout = request_timeout
        self._httpd._slots = threading.BoundedSemaphore(max_connections)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="ops-http"
        )
        self._thread.daemon = True
        self._thread.start()
        host, port = self.address
        log.info("ops endpoint listening", host=host, port=port)

    def stop(self) -> None:
        # The node binds (constructor) before the DICOM listener and serves (start) after it;
        # shutdown() of a server that never served would wait forever, so only the socket goes.
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- routes -------------------------------------------------------------------------------
    def _route(self, h: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        path = h.path.split("?", 1)[0].rstrip("/") or "/"
        route = route_of(path)
        try:
            code, body, content_type = self._answer(path)
        except Exception as exc:
            log.error(
                "ops request failed",
                route=route,
                error=type(exc).__name__,
                traceback=safe_traceback(exc),
            )
            code, body, content_type = self._json_body(500, {"error": "internal error"})
        log.debug(
            "ops request",
            method=h.command,
            route=route,
            status=code,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        try:
            self._send(h, code, body, content_type)
        except OSError as exc:  # the client went away (timeout, reset): nothing to answer
            log.debug("ops client went away", route=route, error=type(exc).__name__)

    def _answer(self, path: str) -> tuple[int, bytes, str]:
        if path == "/healthz":
            return 200, b"ok\n", "text/plain"
        if path == "/readyz":
            why = self._ready()
            if why is None:
                return 200, b"ready\n", "text/plain"
            return 503, f"not ready: {why}\n".encode(), "text/plain"
        if path == "/metrics":
            return 200, generate_latest(self._metrics.registry), CONTENT_TYPE_LATEST
        if path == "/studies" or path.startswith("/studies/"):
            uid = path.removeprefix("/studies").strip("/") or None
            report = self._studies(uid)
            studies = [_public(s) for s in report["studies"]]
            if uid is not None and not studies:
                return self._json_body(404, {"error": "no such study"})
            if uid is not None:
                return self._json_body(200, studies[0])
            return self._json_body(200, {"studies": studies})
        return self._json_body(404, {"error": "not found"})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
        h.send_response(code)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    @staticmethod
    def _json_body(code: int, obj: Any) -> tuple[int, bytes, str]:
        return code, json.dumps(obj, indent=2).encode(), "application/json"
