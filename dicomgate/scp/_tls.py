"""DICOM TLS (PS3.15 Annex B): the listener's SSL context, the client's, and certificate subjects.

The server context follows BCP 195 (RFC 9325): TLS 1.2 or 1.3 only; in TLS 1.2 only ECDHE key
exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305) — no CBC, no static RSA key exchange,
no compression, no renegotiation; TLS 1.3 suites are all AEAD. With ``tls_ca_file`` the client
must present a certificate issued by one of those CAs (mutual TLS).

A new context is built for every reload (SIGHUP): the listener hands it to new connections
only, and open connections keep the context (and certificate) they were accepted with.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "TLS12_CIPHERS",
    "TlsConfigError",
    "certificate_summary",
    "client_context",
    "server_context",
    "subject_matches",
    "subject_string",
]

#: TLS 1.2 suites of BCP 195 (RFC 9325 4.2): ECDHE + AEAD only (OpenSSL names)
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)

#: getpeercert() attribute names -> RFC 4514 short names
_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
    "emailAddress": "EMAILADDRESS",
    "serialNumber": "SERIALNUMBER",
}


class TlsConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the setting."""


def _hardened(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(cert_file: Path, key_file: Path, ca_file: Path | None = None) -> ssl.SSLContext:
    """The TLS listener's context; raises :class:`TlsConfigError` naming the bad file."""
    ctx = _hardened(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"cannot load the TLS certificate {cert_file} and key {key_file} "
            f"(DICOMGATE_TLS_CERT_FILE, DICOMGATE_TLS_KEY_FILE): {why(exc)}"
        ) from None
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot load the TLS CA file {ca_file} (DICOMGATE_TLS_CA_FILE): {why(exc)}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """A client context with the same protocol floor and suites (``dicomgate echo --tls``)."""
    ctx = _hardened(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if verify:
        if ca_file is not None:
            ctx.load_verify_locations(cafile=str(ca_file))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    return ctx


def why(exc: BaseException) -> str:
    """What went wrong loading a TLS file, in a few words (no path: the caller names it)."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return (exc.strerror or type(exc).__name__).lower()
    return type(exc).__name__


def _rdns(subject: Iterable[Any]) -> list[tuple[str, str]]:
    """getpeercert()'s subject as (SHORT NAME, value) pairs, in certificate order."""
    return [(_SHORT.get(k, k).upper(), str(v)) for rdn in subject for k, v in rdn]


def subject_string(cert: dict[str, Any] | None) -> str:
    """A certificate's subject as an RFC 4514-like string (most significant first, as written
    by operators: ``CN=ct1,O=Hospital``); empty without a certificate."""
    if not cert:
        return ""
    pairs = _rdns(cert.get("subject", ()))
    return ",".join(f"{k}={v}" for k, v in reversed(pairs))


def _parse_subject(text: str) -> list[tuple[str, str]]:
    """``CN=a,O=b\\,c`` -> [("CN", "a"), ("O", "b,c")] (RFC 4514 escaping of ',' '+' '\\')."""
    parts: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",+":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    pairs = []
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{text!r}: {part!r} is not TYPE=value")
        pairs.append((key.strip().upper(), value.strip()))
    return pairs


def subject_matches(cert: dict[str, Any] | None, required: str) -> bool:
    """Whether the peer certificate has the required subject: a full subject (``CN=a,O=b``;
    the same attributes, in any order) or, without ``=``, its common name."""
    if not cert:
        return False
    have = _rdns(cert.get("subject", ()))
    if "=" not in required:
        return any(k == "CN" and v == required for k, v in have)
    try:
        want = _parse_subject(required)
    except ValueError:
        return False
    return sorted(have) == sorted(want)


def certificate_summary(cert_file: Path) -> dict[str, str]:
    """Subject and expiry of the leaf certificate in ``cert_file`` (for the log)."""
    try:
        info = ssl._ssl._test_decode_cert(str(cert_file))  # type: ignore[attr-defined]
    except (OSError, ssl.SSLError, AttributeError):
        return {}
    return {
        "subject": subject_string(info),
        "not_after": str(info.get("notAfter", "")),
    }
