"""Pseudonyms: a pure function of (value, secret key) — PS3.15 Annex E "U" and the logs.

No lookup table: the same UID, patient ID or name maps to the same pseudonym in every process on
every node that holds the same key, and to an unrelated one under another key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from dicomgate.config import Settings

__all__ = [
    "Pseudonymizer",
    "SecretKey",
    "key_for",
    "load_key",
    "load_or_create_key",
    "secret_key_for",
]

KEY_FILE_NAME = "secret.key"


class Pseudonymizer:
    """Keyed, deterministic pseudonyms (HMAC-SHA256 under domain-separated labels)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the pseudonymization key must be at least 32 bytes")
        self._key = key

    def digest(self, domain: str, value: str | bytes) -> bytes:
        """HMAC-SHA256 of ``value`` under ``domain`` (so a UID and a patient ID never collide)."""
        data = value.encode("utf-8") if isinstance(value, str) else value
        return hmac.new(self._key, domain.encode("ascii") + b"\x00" + data, hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """Map a UID to ``2.25.<n>``, where n is a UUID (RFC 9562 version 8) made from the HMAC.

        PS3.5 B.2: a 2.25 UID is the integer value of a UUID; setting the version and variant
        bits keeps it a well-formed UUID while staying a pure function of (uid, key).
        """
        n = int.from_bytes(self.digest("uid", uid.strip().rstrip("\x00"))[:16], "big")
        n &= ~(0xF000 << 64)
        n |= 0x8000 << 64  # version 8 (custom)
        n &= ~(0xC000 << 48)
        n |= 0x8000 << 48  # variant 10
        return f"2.25.{n}"

    def token(self, domain: str, value: str, length: int = 16) -> str:
        """A short upper-case hex token for IDs and log fields."""
        return self.digest(domain, value).hex()[:length].upper()

    def log_id(self, uid: str) -> str:
        """How a raw UID appears in logs: the pseudonymized UID the partner will see."""
        return self.uid(uid)


KeyOrigin = Literal["setting", "key_file", "secrets_manager", "data_dir", "generated"]


@dataclass(frozen=True, slots=True)
class SecretKey:
    """The key and where it came from, so start-up can say which (and what to back up).

    ``origin``: ``setting`` (``secret_key``, from the environment or the config file),
    ``key_file`` (``secret_key_file``), ``secrets_manager`` (``secret_key_arn``), ``data_dir``
    (loaded from ``<data_dir>/secret.key``) or ``generated`` (just written there).  ``path`` is
    the file for ``key_file``, ``data_dir`` and ``generated``.
    """

    value: bytes = field(repr=False)
    origin: KeyOrigin
    path: Path | None = None

    @property
    def explicit(self) -> bool:
        """Given by the operator (setting, file, secret), not kept in one node's data dir.

        Nodes sharing a state store must all use one key (pseudonyms are a pure function of
        value and key): a key each node generated for itself would split one patient in two.
        """
        return self.origin in ("setting", "key_file", "secrets_manager")

    @property
    def fingerprint(self) -> str:
        """A public name for the key: HMAC of a fixed label, so it reveals nothing of the key.

        Stored in a shared state store by the first node; a node whose key has another
        fingerprint refuses to join (its pseudonyms would differ).
        """
        return hmac.new(self.value, b"dicomgate key fingerprint v1", hashlib.sha256).hexdigest()[
            :16
        ]


def _secret_from_aws(arn: str) -> bytes:
    """The key from AWS Secrets Manager (SecretString, or SecretBinary), credentials and region
    from boto3's chain.  boto3 is imported here: the receiving path never needs it."""
    import boto3

    answer = boto3.client("secretsmanager").get_secret_value(SecretId=arn)
    raw = answer.get("SecretString")
    data = raw.encode("utf-8") if raw is not None else bytes(answer["SecretBinary"])
    return data.strip()


def load_key(
    *, key: str | None, key_file: Path | None, data_dir: Path, key_arn: str | None = None
) -> SecretKey:
    """Return the key from settings, a file or AWS Secrets Manager, or generate one kept in
    ``data_dir``.

    A generated key is written once with mode 0600: losing it means new pseudonyms for the same
    patients, so it lives beside the state it belongs to.
    """
    if key is not None:
        return SecretKey(key.encode("utf-8"), "setting")
    if key_file is not None:
        data = key_file.read_bytes().strip()
        if len(data) < 32:
            raise ValueError(f"secret key file {key_file} holds fewer than 32 bytes")
        return SecretKey(data, "key_file", key_file)
    if key_arn is not None:
        data = _secret_from_aws(key_arn)
        if len(data) < 32:
            raise ValueError("the secret named by secret_key_arn holds fewer than 32 bytes")
        return SecretKey(data, "secrets_manager")
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        return SecretKey(path.read_bytes().strip(), "data_dir", path)
    data_dir.mkdir(parents=True, exist_ok=True)
    new = secrets.token_hex(32).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, new + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return SecretKey(new, "generated", path)


def load_or_create_key(*, key: str | None, key_file: Path | None, data_dir: Path) -> bytes:
    """:func:`load_key`, the bytes only."""
    return load_key(key=key, key_file=key_file, data_dir=data_dir).value


def secret_key_for(settings: Settings) -> SecretKey:
    """The key the node and ``dicomgate deidentify`` use under ``settings`` (one source),
    with its origin."""
    return load_key(
        key=settings.secret_key.get_secret_value() if settings.secret_key else None,
        key_file=settings.secret_key_file,
        data_dir=settings.data_dir,
        key_arn=settings.secret_key_arn,
    )


def key_for(settings: Settings) -> bytes:
    """:func:`secret_key_for`, the bytes only."""
    return secret_key_for(settings).value
