"""``dicomgate echo`` as a container health check runs it: beside the node, with its settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import start_node


def _echo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``dicomgate echo ARGS`` with only the given DICOMGATE_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("DICOMGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "dicomgate", "echo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_health_check_on_a_node_with_a_calling_ae_allow_list(tmp_path: Path) -> None:
    """With the node's allow-list in the environment, a rejected echo says which AE title to
    use and how; DICOMGATE_ECHO_AET (or --aet) set to a listed title succeeds."""
    node_env = {"DICOMGATE_ALLOWED_CALLING_AE_TITLES": json.dumps(["PACS", "HEALTH"])}
    with start_node(tmp_path / "data", allowed_calling_ae_titles=["PACS", "HEALTH"]) as n:
        refused = _echo(n.host, str(n.port), env=node_env)
        assert refused.returncode == 1
        assert "rejected" in refused.stderr
        assert "DICOMGATE_SCU is not in allowed_calling_ae_titles (PACS, HEALTH)" in refused.stderr
        assert "--aet" in refused.stderr and "DICOMGATE_ECHO_AET" in refused.stderr
        assert "Traceback" not in refused.stderr

        ok = _echo(n.host, str(n.port), env={**node_env, "DICOMGATE_ECHO_AET": "HEALTH"})
        assert ok.returncode == 0, ok.stderr
        assert "success" in ok.stdout
        assert "warning" not in ok.stderr  # DICOMGATE_ECHO_AET is not an unknown variable

        flag = _echo(n.host, str(n.port), "--aet", "PACS", env=node_env)
        assert flag.returncode == 0, flag.stderr


def test_called_ae_title_defaults_to_the_nodes_setting(tmp_path: Path) -> None:
    """A node whose AE title is not DICOMGATE answers the health check run with its settings
    (DICOMGATE_AE_TITLE); --aec still wins."""
    with start_node(tmp_path / "data", ae_title="GATE2") as n:
        ok = _echo(n.host, str(n.port), env={"DICOMGATE_AE_TITLE": "GATE2"})
        assert ok.returncode == 0, ok.stderr
        assert "C-ECHO to GATE2@" in ok.stdout
        wrong = _echo(n.host, str(n.port), "--aec", "OTHER", env={"DICOMGATE_AE_TITLE": "GATE2"})
        assert wrong.returncode == 1
        assert "rejected" in wrong.stderr


def test_rejection_is_printed_in_words(tmp_path: Path) -> None:
    """The A-ASSOCIATE-RJ result, source and reason are words (PS3.8 Table 9-21)."""
    with start_node(tmp_path / "data", allowed_calling_ae_titles=["PACS"]) as n:
        calling = _echo(n.host, str(n.port), "--aet", "NOBODY")
        called = _echo(n.host, str(n.port), "--aet", "PACS", "--aec", "ELSEWHERE")
    assert "Rejected Permanent by Service User: Calling AE title not recognised" in calling.stderr
    assert "Called AE title not recognised" in called.stderr


def test_state_init_and_migrate(tmp_path: Path) -> None:
    """``state migrate`` keeps a schema-1 store's rows; ``state init`` creates a missing store."""
    from click.testing import CliRunner

    from dicomgate.cli import main
    from tests.state.test_sqlite import _schema_1_store

    runner = CliRunner()
    old = tmp_path / "old"
    old.mkdir()
    missing = runner.invoke(main, ["state", "migrate", "--data-dir", str(old)])
    assert missing.exit_code == 1 and "no state store" in missing.output
    _schema_1_store(old / "state.sqlite3")
    migrated = runner.invoke(main, ["state", "migrate", "--data-dir", str(old)])
    assert migrated.exit_code == 0, migrated.output
    assert "3 instances kept" in migrated.output
    status = runner.invoke(main, ["status", "--json", "--data-dir", str(old)])
    assert status.exit_code == 0 and len(json.loads(status.output)["studies"]) == 1
    new = runner.invoke(main, ["state", "init", "--data-dir", str(tmp_path / "new")])
    assert new.exit_code == 0 and "0 studies" in new.output
    assert (tmp_path / "new" / "state.sqlite3").exists()
