"""Validity: dciodvfy reports no error on the output that it did not report on the input.

The corpus is the whole real-world set (:func:`tests.deid.realworld.real_world_files`: pydicom's
test files and pydicom-data), every file walked (burned-in handling is not what is tested here,
so the profile delivers every instance).  dciodvfy (dicom3tools) runs two at a time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from dicomgate.config import DeidOption
from dicomgate.deid import deidentify
from tests.deid.helpers import profile, pseudonymizer
from tests.deid.realworld import real_world_files

pytestmark = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools missing")

# Values inside an error line (UIDs, quoted values) change by design; the error does not.
_VALUE_SPANS = (
    (re.compile(r"UID [0-9.]+"), "UID <uid>"),
    (re.compile(r"(?<![=\w])(?<!attribute )<[^<>]*>"), "<value>"),
    (re.compile(r'"[^"]*"'), '"value"'),
    (re.compile(r"values are \S+"), "values are <value>"),
)


def _normalised(line: str) -> str:
    line = " ".join(line.split())
    for pattern, replacement in _VALUE_SPANS:
        line = pattern.sub(replacement, line)
    return line


def _errors(path: Path) -> set[str]:
    """dciodvfy's error lines for a DICOM file, normalised for values."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, check=False)
    lines = (run.stdout + run.stderr).decode("utf-8", "replace").splitlines()
    return {_normalised(x) for x in lines if x.startswith("Error")}


def test_normalisation_keeps_names_and_drops_values() -> None:
    """The comparison ignores values, never which attribute or module an error names."""
    a = "Error - Unrecognized enumerated value <FOO> for value 1 of attribute <Rescale Type>"
    b = "Error - Unrecognized enumerated value <BAR> for value 1 of attribute <Rescale Type>"
    assert _normalised(a) == _normalised(b)
    missing = (
        "Error - Missing attribute Type 1 Required Element=<{}> Module=<EnhancedGeneralEquipment>"
    )
    assert _normalised(missing.format("DeviceSerialNumber")) != _normalised(
        missing.format("StationName")
    )


OPTION_SETS = {
    "basic": [],
    "modified-dates+cleaning": [
        DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        DeidOption.CLEAN_DESCRIPTORS,
        DeidOption.CLEAN_STRUCTURED_CONTENT,
        DeidOption.CLEAN_GRAPHICS,
        DeidOption.RETAIN_PATIENT_CHARACTERISTICS,
        DeidOption.RETAIN_SAFE_PRIVATE,
    ],
}


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_real_world_corpus_has_no_new_dciodvfy_errors(
    options: list[DeidOption], tmp_path: Path
) -> None:
    """Every real-world file: the output has no dciodvfy error the input lacked.

    When dciodvfy cannot read the input whole (a truncated file: "... read failed"), the
    baseline also counts the errors of the input as pydicom reads and writes it back: what
    pydicom salvaged from a broken file is not de-identification's doing.
    """
    prof = profile(options)
    jobs: list[tuple[Path, Path, pydicom.Dataset]] = []
    unreadable = []
    for i, source in enumerate(real_world_files()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(source)
            if "SOPInstanceUID" not in ds:  # pydicom read nothing of it: not an instance
                unreadable.append(source.name)
                continue
            result = deidentify(ds, prof, pseudonymizer())
            assert result.dataset is not None, (source.name, result.quarantine_reason)
            target = tmp_path / f"{i:03d}.dcm"
            result.dataset.save_as(target, enforce_file_format=True)
        jobs.append((source, target, ds))
    assert len(unreadable) <= 2, unreadable
    assert len(jobs) >= 210

    def compare(job: tuple[Path, Path, pydicom.Dataset]) -> tuple[str, set[str]]:
        source, target, ds = job
        before = _errors(source)
        if any("read failed" in line for line in before):
            rewritten = target.with_suffix(".rewritten")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.save_as(rewritten, enforce_file_format=True)
            before |= _errors(rewritten)
        return source.name, _errors(target) - before

    with ThreadPoolExecutor(max_workers=2) as pool:
        new = {name: extra for name, extra in pool.map(compare, jobs) if extra}
    assert not new, new
