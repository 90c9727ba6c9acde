"""``dicomgate deidentify`` end to end (click's CliRunner, real files, real process pool)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread

from dicomgate.cli import main
from dicomgate.testing import CT_PHI, write_ct_study

KEY = "k" * 40


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    write_ct_study(root / "study1" / "series1", 3, rows=8, columns=8)
    write_ct_study(root / "study2", 2, rows=8, columns=8)
    return root


def _run(*args: str, tmp_path: Path) -> tuple[int, str]:
    runner = CliRunner()
    env = {"DICOMGATE_SECRET_KEY": None, "DICOMGATE_CONFIG": None}
    result = runner.invoke(
        main, ["deidentify", *args, "--data-dir", str(tmp_path / "data")], env=env
    )
    return result.exit_code, result.output


def test_tree_is_mirrored_and_clean(tree: Path, tmp_path: Path) -> None:
    """Every file lands at the same relative path, de-identified; exit status 0."""
    out = tmp_path / "out"
    code, text = _run(str(tree), str(out), "--jobs", "2", tmp_path=tmp_path)
    assert code == 0, text
    assert "5 written, 0 quarantined, 0 failed" in text
    inputs = sorted(p.relative_to(tree) for p in tree.rglob("*.dcm"))
    assert sorted(p.relative_to(out) for p in out.rglob("*.dcm")) == inputs
    for rel in inputs:
        data = (out / rel).read_bytes()
        for value in (CT_PHI["PatientName"], CT_PHI["PatientID"], CT_PHI["InstitutionName"]):
            assert value.encode() not in data
    key = tmp_path / "data" / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_same_key_same_pseudonyms_across_runs(tree: Path, tmp_path: Path) -> None:
    """Two runs with the generated key give identical output (key kept in the data dir)."""
    _run(str(tree), str(tmp_path / "a"), "-j", "1", tmp_path=tmp_path)
    _run(str(tree), str(tmp_path / "b"), "-j", "2", tmp_path=tmp_path)
    for path in (tmp_path / "a").rglob("*.dcm"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def test_options_and_quarantine_reported(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--option is applied; a burned-in instance (under burned_in_policy = quarantine) and a
    non-DICOM file make the exit status 1."""
    monkeypatch.setenv("DICOMGATE_BURNED_IN_POLICY", "quarantine")
    ds = dcmread(tree / "study2" / "CT00001.dcm")
    ds.BurnedInAnnotation = "YES"
    ds.save_as(tree / "study2" / "CT00001.dcm")
    (tree / "notes.txt").write_text("not dicom")
    out = tmp_path / "out"
    code, text = _run(
        str(tree), str(out), "--option", "retain_longitudinal_modified_dates", tmp_path=tmp_path
    )
    assert code == 1
    assert "4 written, 1 quarantined, 1 failed" in text
    assert "quarantined study2/CT00001.dcm: burned-in: BurnedInAnnotation is YES (" in text
    assert not (out / "study2" / "CT00001.dcm").exists()
    kept = dcmread(out / "study2" / "CT00002.dcm")
    assert kept.LongitudinalTemporalInformationModified == "MODIFIED"


def test_bad_option_combination_exits_2(tree: Path, tmp_path: Path) -> None:
    """Contradictory options stop before any work, with a message."""
    code, text = _run(
        str(tree),
        str(tmp_path / "out"),
        "--option", "retain_longitudinal_full_dates",
        "--option", "retain_longitudinal_modified_dates",
        tmp_path=tmp_path,
    )  # fmt: skip
    assert code == 2
    assert "exclude each other" in text


# -- pseudonymized output names, and a loud word about a new key (issue 11, items 3 and 9) -------
def _cli(*args: str, cwd: Path, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """``dicomgate ARGS`` as an operator runs it in ``cwd``, with no DICOMGATE_* variable but
    the key given."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DICOMGATE_")}
    if key is not None:
        env["DICOMGATE_SECRET_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "dicomgate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_generated_key_is_announced_loudly(tree: Path, tmp_path: Path) -> None:
    """Without --data-dir the command makes ./dicomgate-data/secret.key; it says so on stderr
    and how to use a node's key instead; a second run (key loaded) does not."""
    first = _cli("deidentify", str(tree), str(tmp_path / "a"), "-j", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "dicomgate-data" / "secret.key").is_file()
    assert "generated a new secret key in dicomgate-data/secret.key" in first.stderr
    assert "--data-dir" in first.stderr and "DICOMGATE_SECRET_KEY_FILE" in first.stderr
    second = _cli("deidentify", str(tree), str(tmp_path / "b"), "-j", "1", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "secret key" not in second.stderr


def test_rename_names_output_by_pseudonymized_uids(tmp_path: Path) -> None:
    """--rename: OUT is <study>/<series>/<instance>.dcm by the UIDs each output carries, and
    nothing printed (summary, per-file failures and quarantines) quotes an input name."""
    root = tmp_path / "in"
    paths = write_ct_study(root / "study", 4, rows=8, columns=8)
    originals = []
    for p in paths:  # input files named by their SOP Instance UIDs, as PACS exports are
        uid = str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        originals.append(uid)
        p.rename(p.with_name(f"{uid}.dcm"))
    cut = root / "study" / f"{originals[0]}.dcm"  # Pixel Data cut short: held back
    cut.write_bytes(cut.read_bytes()[:-40])
    (root / "1.2.826.0.1.3680043.99.notdicom.dcm").write_text("not dicom")
    out = tmp_path / "out"
    result = _cli("deidentify", str(root), str(out), "--rename", "-j", "2", cwd=tmp_path, key=KEY)
    assert result.returncode == 1  # one quarantined, one failed
    assert "3 written, 1 quarantined, 1 failed (of 5 files)" in result.stdout
    assert "quarantined input #" in result.stderr and "failed input #" in result.stderr
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 3
    for path in written:
        d = dcmread(path, stop_before_pixels=True)
        rel = path.relative_to(out).as_posix()
        assert rel == f"{d.StudyInstanceUID}/{d.SeriesInstanceUID}/{d.SOPInstanceUID}.dcm"
        assert rel.startswith("2.25.")
    printed = result.stdout + result.stderr
    for uid in originals:
        assert uid not in printed
        assert not any(uid in str(p) for p in out.rglob("*"))
    assert "notdicom" not in printed and "study/" not in printed


def test_names_are_kept_by_default(tree: Path, tmp_path: Path) -> None:
    """Without --rename the tree is mirrored (the default) and --keep-names says so."""
    code, text = _run(str(tree), str(tmp_path / "out"), "--keep-names", tmp_path=tmp_path)
    assert code == 0, text
    assert (tmp_path / "out" / "study1" / "series1" / "CT00001.dcm").is_file()


def test_truncated_pixel_data_is_never_written(tmp_path: Path) -> None:
    """The node's door check runs offline too: a CT cut short is held back, with the reason."""
    [ct] = write_ct_study(tmp_path / "in", 1, rows=64, columns=64)
    data = ct.read_bytes()
    ct.write_bytes(data[:-100])
    code, output = _run(str(tmp_path / "in"), str(tmp_path / "out"), tmp_path=tmp_path)
    assert code == 1, output
    assert "runs past the end" in output or "shorter than" in output
    assert not list((tmp_path / "out").rglob("*.dcm"))
