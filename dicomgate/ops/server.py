"""The ops HTTP endpoint: liveness, readiness, Prometheus metrics and study status.

``/healthz``  200 while the process serves HTTP at all (liveness).
``/readyz``   200 when the DICOM listener accepts associations and the spool has room;
              503 with the reason otherwise (a load balancer routes elsewhere while full).
``/metrics``  Prometheus text format.
``/studies``, ``/studies/<uid>``  study status as JSON — pseudonymized identifiers only
              (``<uid>`` may be the original or the pseudonymized Study Instance UID).

Bound to 127.0.0.1 by default; it is an operator's port, not the partner's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dicomgate._logging import get_logger
from dicomgate.ops.metrics import Metrics

__all__ = ["OpsServer"]

log = get_logger(__name__)


def _public(study: dict[str, Any]) -> dict[str, Any]:
    """A study's status without original identifiers (the endpoint is not the spool)."""
    hidden = {"study"}
    public = {k: v for k, v in study.items() if k not in hidden}
    public["quarantined"] = [
        {"stage": q["stage"], "reason": q["reason"]} for q in study.get("quarantined", [])
    ]
    return public


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
                pass  # requests are not worth a log line each; metrics count what matters

        self._metrics = metrics
        self._ready = ready
        self._studies = studies
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
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
        path = h.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/healthz":
                self._send(h, 200, b"ok\n", "text/plain")
            elif path == "/readyz":
                why = self._ready()
                if why is None:
                    self._send(h, 200, b"ready\n", "text/plain")
                else:
                    self._send(h, 503, f"not ready: {why}\n".encode(), "text/plain")
            elif path == "/metrics":
                self._send(h, 200, generate_latest(self._metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/studies" or path.startswith("/studies/"):
                uid = path.removeprefix("/studies").strip("/") or None
                report = self._studies(uid)
                studies = [_public(s) for s in report["studies"]]
                if uid is not None and not studies:
                    self._json(h, 404, {"error": "no such study"})
                elif uid is not None:
                    self._json(h, 200, studies[0])
                else:
                    self._json(h, 200, {"studies": studies})
            else:
                self._json(h, 404, {"error": "not found"})
        except Exception:
            log.exception("ops request failed", path=path)
            self._json(h, 500, {"error": "internal error"})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
        h.send_response(code)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _json(self, h: BaseHTTPRequestHandler, code: int, obj: Any) -> None:
        self._send(h, code, json.dumps(obj, indent=2).encode(), "application/json")
