"""``dicomgate deidentify`` end to end (click's CliRunner, real files, real process pool)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread

from dicomgate.cli import main
from dicomgate.testing import CT_PHI, write_ct_study


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


def test_options_and_quarantine_reported(tree: Path, tmp_path: Path) -> None:
    """--option is applied; a burned-in instance and a non-DICOM file make the exit status 1."""
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
    assert "quarantined study2/CT00001.dcm: burned-in annotation" in text
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
