"""C-ECHO client for ``dicomgate echo`` (and the container health check)."""

from __future__ import annotations

import ssl
from typing import Any

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

__all__ = ["echo"]


def echo(
    host: str,
    port: int,
    *,
    calling_ae: str,
    called_ae: str,
    timeout: float = 10.0,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> tuple[bool, str]:
    """Send one C-ECHO (over TLS with the client context ``tls``, checking the server's
    certificate against ``server_name``, else ``host``); return (success, one line)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs["tls_args"] = (tls, server_name or host)
    assoc = ae.associate(host, port, ae_title=called_ae, **kwargs)
    if assoc.is_rejected and assoc.acceptor.primitive is not None:
        rj = assoc.acceptor.primitive
        # PS3.8 Table 9-21 in words (pynetdicom's), with the numbers for a search engine
        return False, (
            f"association rejected by {host}:{port}: {rj.result_str} by {rj.source_str}: "
            f"{rj.reason_str} (PS3.8 Table 9-21: result {rj.result}, "
            f"source {rj.result_source}, reason {rj.diagnostic})"
        )
    if not assoc.is_established:
        how = "TLS handshake failed, " if tls is not None else ""
        return False, f"no association with {host}:{port} ({how}connection failed or aborted)"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and status.get("Status") == 0x0000:
        return True, f"C-ECHO to {called_ae}@{host}:{port}: success"
    code = f"0x{status.Status:04X}" if status and "Status" in status else "no response"
    return False, f"C-ECHO to {called_ae}@{host}:{port} failed: {code}"
