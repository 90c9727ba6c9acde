"""Peer de-identifiers, run inside ``bench/.venv`` by ``bench/deidentify`` (not a project module).

Usage: python _deid_peers.py TOOL IN_DIR OUT_DIR  → prints one JSON line {"tool", "n", "seconds"}.
Each tool runs in one process with its documented default profile, file by file, reading from
IN_DIR and writing every instance to OUT_DIR, as its users would from Python.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path


def _pydicom(files: list[Path], out: Path) -> None:
    from pydicom import dcmread

    for f in files:
        dcmread(f).save_as(out / f.name)


def _dicognito(files: list[Path], out: Path) -> None:
    from dicognito.anonymizer import Anonymizer
    from pydicom import dcmread

    anonymizer = Anonymizer()
    for f in files:
        ds = dcmread(f)
        anonymizer.anonymize(ds)
        ds.save_as(out / f.name)


def _dicom_anonymizer(files: list[Path], out: Path) -> None:
    from dicomanonymizer import anonymize_dicom_file

    for f in files:
        anonymize_dicom_file(str(f), str(out / f.name))


def _deid(files: list[Path], out: Path) -> None:
    from deid.dicom import replace_identifiers

    for f in files:
        replace_identifiers(dicom_files=[str(f)], save=True, output_folder=str(out), overwrite=True)


TOOLS = {
    "pydicom": _pydicom,
    "dicognito": _dicognito,
    "dicom-anonymizer": _dicom_anonymizer,
    "deid": _deid,
}


def main() -> None:
    tool, src, dst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    files = sorted(src.glob("*.dcm"))
    dst.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    start = time.perf_counter()
    TOOLS[tool](files, dst)
    seconds = time.perf_counter() - start
    print(json.dumps({"tool": tool, "n": len(files), "seconds": seconds}))


if __name__ == "__main__":
    main()
