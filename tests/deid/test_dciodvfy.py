"""Validity: dciodvfy reports no error on the output that it did not report on the input."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files

from dicomgate.config import DeidOption
from dicomgate.deid import deidentify
from tests.deid.helpers import profile, pseudonymizer

pytestmark = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools missing")


def _test_files() -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "download failures": only the bundled files are used
        files = get_testdata_files("*.dcm")
    # Truncated files are broken input: dciodvfy stops early on them, so the comparison is moot.
    return sorted(Path(f) for f in files if "truncated" not in Path(f).name)


@functools.cache
def _errors(path: Path) -> set[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    # UIDs are replaced by design: compare the messages without them.
    return {
        re.sub(r"UID [0-9.]+", "UID <uid>", " ".join(x.split()))
        for x in lines
        if x.startswith("Error")
    }


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
def test_no_new_dciodvfy_errors(options: list[DeidOption], tmp_path: Path) -> None:
    """pydicom's bundled test files: the output has no dciodvfy error the input lacked."""
    prof = profile(options)  # burned-in check off: the SC test files say nothing about it
    new: dict[str, set[str]] = {}
    checked = 0
    for source in _test_files():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(source)
                result = deidentify(ds, prof, pseudonymizer())
                assert result.dataset is not None
                target = tmp_path / source.name
                result.dataset.save_as(target, enforce_file_format=True)
        except (pydicom.errors.InvalidDicomError, ValueError, NotImplementedError):
            continue  # files without File Meta, or that pydicom cannot encode
        checked += 1
        extra = _errors(target) - _errors(source)
        if extra:
            new[source.name] = extra
    assert checked >= 60
    assert not new, new
