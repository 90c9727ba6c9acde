"""The one UID rule (PS3.5 9.1) and the places that must use it: keys and spool file names."""

from __future__ import annotations

import pytest

from dicomgate.delivery.layout import instance_key, validate_key, validate_uid
from dicomgate.spool import Spool
from dicomgate.uids import is_valid_uid, require_uid, strip_padding, uid_from_wire

GOOD = "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize(
    "text",
    [GOOD, "0", "1.0.2", "2.25.340282366920938463463374607431768211455", "1." + "2" * 62],
)
def test_valid_uids(text: str) -> None:
    assert is_valid_uid(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (GOOD + "\n", "trailing newline ('$' matches before it)"),
        ("1.2\n.3", "embedded newline"),
        (GOOD + "\r", "trailing carriage return"),
        (GOOD + "\t", "trailing tab"),
        (" " + GOOD, "leading space"),
        (GOOD + " ", "trailing space (padding is stripped before, not accepted here)"),
        (GOOD + "\x00", "trailing NUL (ditto)"),
        ("1." + "2" * 63, "65 characters"),
        ("1.02.3", "leading zero in a component"),
        ("01.2", "leading zero in the first component"),
        ("1..2", "empty component"),
        (".1.2", "leading dot"),
        ("1.2.", "trailing dot"),
        ("", "empty"),
        ("1.2.abc", "letters"),
        ("1.2.\u0663", "a non-ASCII digit (\\d would match it)"),
        ("1.2\\1.3", "two values"),
    ],
)
def test_invalid_uids(text: str, why: str) -> None:
    assert not is_valid_uid(text), why
    with pytest.raises(ValueError, match="not a valid DICOM UID"):
        require_uid(text)


def test_padding_is_one_nul_or_one_space() -> None:
    """PS3.5 6.2 pads UI to even length with one NUL; real senders use a space. Exactly one
    pad character is stripped; a newline is never padding."""
    assert strip_padding(GOOD + "\x00") == GOOD
    assert strip_padding(GOOD + " ") == GOOD
    assert uid_from_wire(GOOD + "\x00") == GOOD
    assert uid_from_wire(GOOD + " ") == GOOD
    assert uid_from_wire(GOOD) == GOOD
    assert uid_from_wire(GOOD + "\n") is None
    assert uid_from_wire(GOOD + "\n\x00") is None
    assert uid_from_wire(GOOD + "\x00\x00") is None
    assert uid_from_wire(GOOD + "  ") is None
    assert uid_from_wire("\x00") is None


def test_refusal_message_does_not_quote_the_value() -> None:
    """The value may be an original UID and messages reach logs (README promise 2)."""
    with pytest.raises(ValueError) as info:
        require_uid("1.2.999.12345\n", "SOP Instance UID")
    assert "12345" not in str(info.value)
    assert "SOP Instance UID" in str(info.value)


def test_layout_uses_the_rule() -> None:
    assert validate_uid(GOOD) == GOOD
    for bad in (GOOD + "\n", "1.02", "1." + "2" * 63):
        with pytest.raises(ValueError, match="not a valid DICOM UID"):
            validate_uid(bad)
        with pytest.raises(ValueError):
            instance_key(GOOD, GOOD, bad)
    with pytest.raises(ValueError, match="invalid object key"):
        validate_key(f"{GOOD}/{GOOD}.dcm\n")


def test_spool_file_name_refuses_invalid_uids() -> None:
    """The spool file name is made from the sender's UID: it must be a UID, nothing else."""
    assert Spool.file_name(GOOD, 2) == f"{GOOD}~v2.dcm"
    for bad in (GOOD + "\n", GOOD + "\x00", GOOD + " ", "../1.2", "1.2/3", "", "1." + "2" * 63):
        with pytest.raises(ValueError):
            Spool.file_name(bad, 1)
    with pytest.raises(ValueError):
        Spool.file_name(GOOD, 0)


def test_spool_file_name_round_trip() -> None:
    """Reconciliation reads names back with the same rule."""
    assert Spool.parse_file_name(Spool.file_name(GOOD, 7)) == (GOOD, 7)
    for bad in (
        f"{GOOD}~v1.dcm\n",  # '$' would have matched
        f"{GOOD}~v\u0661.dcm",  # a non-ASCII digit
        "1.02.3~v1.dcm",
        f"1.{'2' * 63}~v1.dcm",
        f"{GOOD}~v0.dcm",
        f"{GOOD}.dcm",
        "tmp1234.dcm",
    ):
        assert Spool.parse_file_name(bad) is None, bad
