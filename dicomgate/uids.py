"""The one rule for what a DICOM UID is (PS3.5 9.1), used everywhere the node checks one.

A UID is 1 to 64 characters of components made of the digits 0-9 separated by ``.``; a
component is ``0`` or has no leading zero, and none is empty. Nothing else: no letters, no
whitespace, and — unlike ``re.match(...$)`` or pydicom's ``UID.is_valid`` — no trailing
newline, which would otherwise reach a spool file name or an object key.

On the wire a UI value is padded to even length with a single trailing NUL (PS3.5 6.2);
real senders also pad with a space. :func:`strip_padding` removes exactly that one character;
any other whitespace is part of the value and makes it invalid.
"""

from __future__ import annotations

import re

__all__ = ["MAX_UID_LENGTH", "is_valid_uid", "require_uid", "strip_padding", "uid_from_wire"]

#: PS3.5 9.1: "the total length of a UID shall not exceed 64 characters".
MAX_UID_LENGTH = 64

# [0-9], not \d: \d also matches non-ASCII digits. Used with fullmatch only.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_PADDING = ("\x00", " ")


def is_valid_uid(text: str) -> bool:
    """True if ``text`` is exactly a UID (no padding, no whitespace), PS3.5 9.1."""
    return 0 < len(text) <= MAX_UID_LENGTH and _UID.fullmatch(text) is not None


def strip_padding(value: str) -> str:
    """``value`` without its one trailing pad character (NUL per PS3.5 6.2, or a space).

    Only one: padding exists to reach an even length, so a second pad character (or a newline,
    tab, ...) is not padding and stays, to be refused by :func:`is_valid_uid`.
    """
    return value[:-1] if value.endswith(_PADDING) else value


def uid_from_wire(value: str) -> str | None:
    """The UID a received (possibly padded) UI value carries, or ``None`` if it is not one."""
    text = strip_padding(value)
    return text if is_valid_uid(text) else None


def require_uid(uid: str, what: str = "UID") -> str:
    """Return ``uid`` if it is exactly a valid UID, else raise ``ValueError``.

    The message names ``what`` but never quotes the value: it may be an original UID, and
    exception messages end up in logs (README promise 2).
    """
    if not is_valid_uid(uid):
        raise ValueError(f"{what} is not a valid DICOM UID (PS3.5 9.1)")
    return uid
