"""The ops HTTP endpoint: liveness, readiness, Prometheus metrics and study status.

``/healthz``  200 while the process serves HTTP at all (liveness).
``/readyz``   200 when the DICOM listener accepts associations and the spool has room;
              503 with the reason otherwise (a load balancer routes elsewhere while full).
``/metrics``  Prometheus text format.
``/studies``, ``/studies/<uid>``  study status as JSON — pseudonymized identifiers only
              (``<uid>`` may be the original or the pseudonymized Study Instance UID).

Bound to 127.0.0.1 by default; it is an operator's port, not the partner's.

A request path can hold the original Study Instance UID an operator typed, so what is logged of
a request is its route (``/studies/{uid}``), and a failure is logged as a safe traceback (types
and frames: exception messages quote values).  Requests are logged at debug level only: a load
balancer's health checks would otherwise be most of the log.
"""

from __future__ import annotations

import json
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escaped a request (socketserver prints a plain traceback to stderr)."""
        exc = sys.exc_info()[1]
        if exc is not None:
            log.error("ops request failed", error=type(exc).__name__, traceback=safe_traceback(exc))


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Metrics,
        ready: Callable[[], str | None],
        studies: Callable[[str | None], dict[str, Any]],
    ) -> None:
        ops = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "dicomgate-ops"

            def do_GET(self) -> None:
                ops._route(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # http.server's lines quote the raw request path: see OpsServer._route

        self._metrics = metrics
        self._ready = ready
        self._studies = studies
        self._httpd = _Server((host, port), Handler)
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
