"""A webhook receiver on 127.0.0.1 for tests: records every notification and checks its HMAC."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET = "webhook-secret-for-tests-0123456789"


@dataclass
class Webhook:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def versions(self, study: str | None = None) -> list[int]:
        with self.lock:
            return [
                n["manifest_version"]
                for n in self.received
                if study is None or n["study_instance_uid"] == study
            ]

    def latest(self) -> dict[str, Any]:
        with self.lock:
            return self.received[-1]


@contextlib.contextmanager
def webhook_server() -> Iterator[Webhook]:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            with hook.lock:
                if hmac.compare_digest(expected, self.headers.get("X-Dicomgate-Signature", "")):
                    hook.received.append(json.loads(body))
                else:
                    hook.bad_signatures += 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
