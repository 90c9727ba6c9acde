"""Pseudonyms are a pure function of (value, key); the local key is generated once, 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydicom.uid import UID

from dicomgate.pseudonym import Pseudonymizer, load_key, load_or_create_key


def test_uid_pseudonym_is_stable_valid_and_keyed() -> None:
    """Same key → same 2.25 UID (a valid UUIDv8); another key → another UID."""
    a, b = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32)
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    assert a.uid(uid) == a.uid(uid)
    assert a.uid(uid) != b.uid(uid)
    assert a.uid(uid) != a.uid(uid + "1")
    out = a.uid(uid)
    assert out.startswith("2.25.") and UID(out).is_valid
    n = int(out.removeprefix("2.25."))
    assert (n >> 76) & 0xF == 8  # UUID version 8
    assert (n >> 62) & 0b11 == 0b10  # RFC variant


def test_short_key_refused() -> None:
    """Keys shorter than 32 bytes are refused."""
    with pytest.raises(ValueError, match="32 bytes"):
        Pseudonymizer(b"short")


def test_generated_key_is_kept_with_mode_0600(tmp_path: Path) -> None:
    """Without a configured key one is generated once, kept 0600, and reused."""
    first = load_or_create_key(key=None, key_file=None, data_dir=tmp_path)
    mode = stat.S_IMODE((tmp_path / "secret.key").stat().st_mode)
    assert mode == 0o600
    assert load_or_create_key(key=None, key_file=None, data_dir=tmp_path) == first
    assert len(first) >= 32


def test_configured_key_and_key_file_win(tmp_path: Path) -> None:
    """A configured key, or a key file, is used instead of a generated one."""
    assert load_or_create_key(key="x" * 40, key_file=None, data_dir=tmp_path) == b"x" * 40
    f = tmp_path / "k"
    f.write_text("y" * 40 + "\n")
    assert load_or_create_key(key=None, key_file=f, data_dir=tmp_path) == b"y" * 40
    f.write_text("tiny")
    with pytest.raises(ValueError, match="fewer than 32"):
        load_or_create_key(key=None, key_file=f, data_dir=tmp_path)


def test_key_from_secrets_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DICOMGATE_SECRET_KEY_ARN: the key is read from AWS Secrets Manager (moto), not generated."""
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        import boto3

        sm = boto3.client("secretsmanager")
        arn = sm.create_secret(Name="dicomgate/key", SecretString="s" * 40 + "\n")["ARN"]
        short = sm.create_secret(Name="dicomgate/short", SecretString="tiny")["ARN"]
        key = load_key(key=None, key_file=None, data_dir=tmp_path, key_arn=arn)
        assert key.value == b"s" * 40 and key.origin == "secrets_manager" and key.explicit
        assert not (tmp_path / "secret.key").exists()
        with pytest.raises(ValueError, match="fewer than 32 bytes"):
            load_key(key=None, key_file=None, data_dir=tmp_path, key_arn=short)


def test_fingerprint_names_the_key_without_revealing_it(tmp_path: Path) -> None:
    a = load_key(key="a" * 32, key_file=None, data_dir=tmp_path)
    b = load_key(key="b" * 32, key_file=None, data_dir=tmp_path)
    again = load_key(key="a" * 32, key_file=None, data_dir=tmp_path)
    assert a.fingerprint == again.fingerprint != b.fingerprint
    assert len(a.fingerprint) == 16 and "a" * 8 not in a.fingerprint
    generated = load_key(key=None, key_file=None, data_dir=tmp_path)
    assert generated.origin == "generated" and not generated.explicit and a.explicit
