"""Settings: environment names operators rely on, TOML, flag precedence, clear errors."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dicomgate.config import SettingsError, load_settings, unknown_environment


def test_defaults() -> None:
    """The embedded defaults are the documented ones."""
    s = load_settings()
    assert (s.host, s.port, s.ae_title) == ("0.0.0.0", 11112, "DICOMGATE")
    assert s.data_dir == Path("./dicomgate-data")
    assert s.allowed_calling_ae_titles == [] and s.allowed_networks == []
    assert s.require_called_ae_title is True


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """DICOMGATE_* variables set the settings; lists are JSON."""
    monkeypatch.setenv("DICOMGATE_HOST", "127.0.0.2")
    monkeypatch.setenv("DICOMGATE_PORT", "11113")
    monkeypatch.setenv("DICOMGATE_AE_TITLE", "GATE2")
    monkeypatch.setenv("DICOMGATE_DATA_DIR", "/srv/gate")
    monkeypatch.setenv("DICOMGATE_ALLOWED_CALLING_AE_TITLES", '["CT1", "PACS"]')
    monkeypatch.setenv("DICOMGATE_ALLOWED_NETWORKS", '["10.0.0.0/8"]')
    monkeypatch.setenv("DICOMGATE_SPOOL_LIMIT", "2GB")
    s = load_settings()
    assert (s.host, s.port, s.ae_title, s.data_dir) == (
        "127.0.0.2",
        11113,
        "GATE2",
        Path("/srv/gate"),
    )
    assert s.allowed_calling_ae_titles == ["CT1", "PACS"]
    assert s.allowed_networks == [ipaddress.ip_network("10.0.0.0/8")]
    assert int(s.spool_limit) == 2_000_000_000


def test_toml_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flags override the environment, which overrides the TOML file."""
    toml = tmp_path / "gate.toml"
    toml.write_text('port = 2000\nae_title = "FROMTOML"\nhost = "127.0.0.3"\n')
    monkeypatch.setenv("DICOMGATE_PORT", "3000")
    s = load_settings(toml, ae_title=None)
    assert (s.port, s.ae_title, s.host) == (3000, "FROMTOML", "127.0.0.3")
    s = load_settings(toml, port=4000)
    assert s.port == 4000


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("DICOMGATE_PORT", "seventy", "DICOMGATE_PORT"),
        ("DICOMGATE_PORT", "70000", "DICOMGATE_PORT"),
        ("DICOMGATE_AE_TITLE", "A_TITLE_LONGER_THAN_16", "DICOMGATE_AE_TITLE"),
        ("DICOMGATE_ALLOWED_NETWORKS", '["10.0.0.0/33"]', "DICOMGATE_ALLOWED_NETWORKS"),
        ("DICOMGATE_ALLOWED_CALLING_AE_TITLES", "CT1", "DICOMGATE_ALLOWED_CALLING_AE_TITLES"),
        ("DICOMGATE_MAX_PDU_SIZE", "100", "DICOMGATE_MAX_PDU_SIZE"),
        ("DICOMGATE_SECRET_KEY", "short", "DICOMGATE_SECRET_KEY"),
    ],
)
def test_invalid_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    """An invalid value raises SettingsError naming the environment variable."""
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    """A misspelt key in the TOML file stops start-up instead of being ignored."""
    toml = tmp_path / "gate.toml"
    toml.write_text("prot = 11112\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings(toml)


def test_missing_config_file(tmp_path: Path) -> None:
    """A --config file that does not exist is reported as such."""
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_serve_refuses_to_start_on_invalid_setting(tmp_path: Path) -> None:
    """``dicomgate serve`` with a bad setting exits 2 and names it on stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "dicomgate", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DICOMGATE_PORT": "not-a-port", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "DICOMGATE_PORT" in result.stderr


def test_example_config_files_load() -> None:
    """Every example file under config/ is a valid settings file."""
    examples = sorted(Path(__file__).parent.parent.joinpath("config").glob("*.toml"))
    assert examples, "config/ should hold example files"
    for example in examples:
        load_settings(example)


# -- errors name what the operator typed (issue 11, item 10) --------------------------------------
def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``dicomgate ARGS`` with only the given DICOMGATE_* variables (none from this session)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("DICOMGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "dicomgate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_unknown_environment_variable_warns_with_the_closest_name() -> None:
    """A misspelt DICOMGATE_* variable is named with the closest valid one; the variables the
    project reads outside the settings model are not "unknown"."""
    warnings = unknown_environment(
        {
            "DICOMGATE_AE_TITEL": "GATE",
            "dicomgate_stable_aftr": "5",
            "DICOMGATE_CONFIG": "/etc/dicomgate.toml",
            "DICOMGATE_ECHO_AET": "HEALTH",
            "DICOMGATE_PORT": "11112",
            "HOME": "/root",
        }
    )
    assert warnings == [
        "unknown environment variable DICOMGATE_AE_TITEL is ignored; "
        "did you mean DICOMGATE_AE_TITLE?",
        "unknown environment variable dicomgate_stable_aftr is ignored; "
        "did you mean DICOMGATE_STABLE_AFTER?",
    ]
    [far] = unknown_environment({"DICOMGATE_XYZZY": "1"})
    assert "did you mean" not in far and "DICOMGATE_XYZZY" in far


def test_unknown_environment_variable_is_reported_by_the_command(tmp_path: Path) -> None:
    """``dicomgate status`` with DICOMGATE_AE_TITEL set says so on stderr (and still works)."""
    result = _cli("status", "--data-dir", str(tmp_path), env={"DICOMGATE_AE_TITEL": "GATE"})
    assert "DICOMGATE_AE_TITEL is ignored; did you mean DICOMGATE_AE_TITLE?" in result.stderr
    assert "no state store" in result.stderr  # the command itself ran


def test_unknown_toml_key_names_file_and_key(tmp_path: Path) -> None:
    """A misspelt TOML key is reported as FILE:key with the closest key, and a [dicomgate]
    table as a table, never as a DICOMGATE_* variable."""
    toml = tmp_path / "gate.toml"
    toml.write_text("stable_afterr = 5\n[dicomgate]\nport = 11113\n")
    with pytest.raises(SettingsError) as err:
        load_settings(toml)
    message = str(err.value)
    assert f"{toml}:stable_afterr: unknown setting; did you mean stable_after?" in message
    assert f"{toml}:dicomgate: unknown table [dicomgate]" in message
    assert "DICOMGATE_" not in message


def test_bad_toml_value_names_file_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value from the file names FILE:key; the same key from the environment (which wins)
    names the variable."""
    monkeypatch.delenv("DICOMGATE_PORT", raising=False)
    toml = tmp_path / "gate.toml"
    toml.write_text('port = "eleven"\n')
    with pytest.raises(SettingsError, match=rf"^invalid setting {re.escape(str(toml))}:port: "):
        load_settings(toml)
    monkeypatch.setenv("DICOMGATE_PORT", "twelve")
    with pytest.raises(SettingsError, match=r"^invalid setting DICOMGATE_PORT \(port\): "):
        load_settings(toml)


@pytest.mark.parametrize(
    ("network", "says"),
    [
        ("10.0.0.0/33", "'10.0.0.0/33' is not a network in CIDR notation"),
        ("10.20.0.1/16", "'10.20.0.1/16' has host bits set; the network is 10.20.0.0/16"),
        ("CT-room", "'CT-room' is not a network in CIDR notation"),
    ],
)
def test_bad_cidr_is_one_plain_sentence(
    monkeypatch: pytest.MonkeyPatch, network: str, says: str
) -> None:
    """A bad network is one line naming the variable and the value, without pydantic's
    validator names (``lax-or-strict[lax=function-plain[ip_v4_network_validator()]...``)."""
    monkeypatch.setenv("DICOMGATE_ALLOWED_NETWORKS", json.dumps(["192.168.0.0/24", network]))
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith("invalid setting DICOMGATE_ALLOWED_NETWORKS (allowed_networks)")
    assert "item 1" in message and says in message
    assert "\n" not in message and "lax" not in message and "[" not in message.split(":")[0]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "99999"], "--port (port)"),
        (["--ae-title", "A_TITLE_LONGER_THAN_16"], "--ae-title (ae_title)"),
        (["--destination", "ftp://nowhere"], "--destination (destination)"),
    ],
)
def test_flag_value_error_names_the_flag(tmp_path: Path, args: list[str], named: str) -> None:
    """A bad flag value is reported under the flag, not the environment variable; exit 2,
    no traceback."""
    result = _cli("serve", "--data-dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert f"dicomgate: invalid setting {named}:" in result.stderr
    assert "DICOMGATE_" not in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reports_a_bad_config_file_key(tmp_path: Path) -> None:
    """``serve --config`` with a typo stops with FILE:key, exit 2, no traceback."""
    toml = tmp_path / "gate.toml"
    toml.write_text("stable_afterr = 5\n")
    result = _cli("serve", "--config", str(toml), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert f"dicomgate: {toml}:stable_afterr: unknown setting" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data").exists()
