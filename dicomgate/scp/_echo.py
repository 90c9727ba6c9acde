"""C-ECHO client for ``dicomgate echo`` (and the container health check)."""

from __future__ import annotations

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

__all__ = ["echo"]


def echo(
    host: str, port: int, *, calling_ae: str, called_ae: str, timeout: float = 10.0
) -> tuple[bool, str]:
    """Send one C-ECHO; return (success, a one-line description)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if assoc.is_rejected and assoc.acceptor.primitive is not None:
        rj = assoc.acceptor.primitive
        # PS3.8 Table 9-21 in words (pynetdicom's), with the numbers for a search engine
        return False, (
            f"association rejected by {host}:{port}: {rj.result_str} by {rj.source_str}: "
            f"{rj.reason_str} (PS3.8 Table 9-21: result {rj.result}, "
            f"source {rj.result_source}, reason {rj.diagnostic})"
        )
    if not assoc.is_established:
        return False, f"no association with {host}:{port} (connection failed or aborted)"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and status.get("Status") == 0x0000:
        return True, f"C-ECHO to {called_ae}@{host}:{port}: success"
    code = f"0x{status.Status:04X}" if status and "Status" in status else "no response"
    return False, f"C-ECHO to {called_ae}@{host}:{port} failed: {code}"
