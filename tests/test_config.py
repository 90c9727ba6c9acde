"""Settings: environment names operators rely on, TOML, flag precedence, clear errors."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from dicomgate.config import SettingsError, load_settings


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
