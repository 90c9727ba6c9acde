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


def test_status_groups_quarantined_instances_by_rule(tmp_path: Path) -> None:
    """``status`` prints a line per rule with its count, then that rule's instances; ``--json``
    names the rule of each quarantined instance and counts them per study."""
    from click.testing import CliRunner
    from pydicom import dcmread

    from dicomgate.cli import main
    from dicomgate.testing import write_ct_study
    from tests.helpers import send_files, wait_for

    paths = write_ct_study(tmp_path / "s", 4, rows=16, columns=16)
    burned = dcmread(paths[1])
    burned.BurnedInAnnotation = "YES"
    burned.save_as(paths[1], enforce_file_format=True)
    for p in paths[2:]:
        lacking = dcmread(p)
        del lacking.StudyDescription
        lacking.save_as(p, enforce_file_format=True)
    uid = str(burned.StudyInstanceUID)
    data = tmp_path / "data"
    with start_node(
        data,
        pipeline=True,
        stable_after=0.2,
        burned_in_policy="quarantine",
        require_attributes=["StudyDescription"],
    ) as n:
        assert send_files(n.host, n.port, paths) == [0, 0, 0, 0]
        assert wait_for(lambda: (s := n.node.state.study(uid)) is not None and s.manifest_version)  # type: ignore[union-attr]

    runner = CliRunner()
    as_json = runner.invoke(main, ["status", uid, "--json", "--data-dir", str(data)])
    assert as_json.exit_code == 0, as_json.output
    [study] = json.loads(as_json.output)["studies"]
    assert study["quarantined_by_rule"] == {"burned-in": 1, "invalid": 2}
    rules = {q["instance"]: q["rule"] for q in study["quarantined"]}
    lacking_uids = {str(dcmread(p).SOPInstanceUID) for p in paths[2:]}
    assert rules == {str(burned.SOPInstanceUID): "burned-in"} | dict.fromkeys(
        lacking_uids, "invalid"
    )

    text = runner.invoke(main, ["status", uid, "--data-dir", str(data)])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    start = lines.index("    burned-in: 1 quarantined")
    assert lines[start + 1].startswith(f"        {burned.SOPInstanceUID} (delivered name ")
    assert lines[start + 1].endswith("): burned-in: BurnedInAnnotation is YES "
                                     "(burned_in_policy is quarantine)")  # fmt: skip
    assert lines[start + 2] == "    invalid: 2 quarantined"
    held = lines[start + 3 : start + 5]
    assert {line.split()[0] for line in held} == lacking_uids
    assert all(
        line.endswith("validate): required attribute StudyDescription is missing or empty")
        for line in held
    )
    assert len(lines) == start + 5  # nothing else quarantined, nothing after
