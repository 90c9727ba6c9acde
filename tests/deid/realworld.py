"""A real-world corpus: pydicom's bundled test files and the ``pydicom-data`` collection.

These are the files a new user tries first: GE, Siemens, Philips and Toshiba CT and MR,
ultrasound, secondary captures, RT, SR, SEG, NM, ECG, in every transfer syntax pydicom decodes.
They carry (fake or long-public) identifying values of their own.  Files that are deliberately
broken (pydicom's parser tests) are left out by :func:`real_world_files`: the corpus is what a
PACS could plausibly send — parseable, with a SOP Class and SOP Instance UID.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pydicom
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

__all__ = ["corpus_dirs", "real_world_files"]


def corpus_dirs() -> list[Path]:
    """pydicom's test_files, and pydicom-data's files when the package is installed."""
    dirs = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # pydicom-data

        dirs.append(Path(data_store.__file__).parent / "data")
    except ImportError:  # pragma: no cover - it is a test dependency
        pass
    return dirs


@functools.cache
def real_world_files() -> tuple[Path, ...]:
    """Every parseable instance in :func:`corpus_dirs`, sorted by name."""
    found: list[Path] = []
    for d in corpus_dirs():
        for p in sorted(d.rglob("*")):
            if not p.is_file() or p.suffix.lower() not in (".dcm", ""):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ds = dcmread(p, stop_before_pixels=True)
                except (InvalidDicomError, Exception):
                    continue
            if "SOPInstanceUID" in ds and "SOPClassUID" in ds:
                found.append(p)
    return tuple(sorted(found, key=lambda p: p.name))
