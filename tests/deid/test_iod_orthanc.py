"""Against a peer: what Orthanc's Basic Profile anonymizer removes or empties, we do not keep.

Orthanc (Debian ``orthanc``) runs with its own configuration in a private network namespace
(``unshare -n``, loopback only: nothing is reachable from outside, and its fixed HTTP port cannot
collide with anything), DICOM listener off; each file is ``POST /instances`` then
``POST /instances/{id}/anonymize``.  For every top-level attribute of the input that Orthanc's
output lacks or has emptied, ours is absent, empty, or replaced (never the original value):
where the instance's IOD requires the attribute we may keep it present with a dummy or empty
value (PS3.15 E.1.1), which Orthanc does not do, but the original value is gone either way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest

from dicomgate.deid import deidentify
from tests.deid.helpers import profile, pseudonymizer
from tests.deid.realworld import real_world_files

pytestmark = pytest.mark.skipif(
    shutil.which("Orthanc") is None or shutil.which("unshare") is None,
    reason="orthanc or unshare missing",
)

# A handful of real-world files: CT, MR, enhanced MR, US, SR, RT, a multi-frame.
NAMES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "emri_small.dcm",
    "US1_J2KR.dcm",
    "rtplan.dcm",
    "test-SR.dcm",
    "liver.dcm",
)
PORT = 8042  # inside the private namespace only

_SCRIPT = r"""
ip link set lo up
Orthanc "$1/orthanc.json" > "$1/orthanc.log" 2>&1 &
pid=$!
up=""
for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:{port}/system" > /dev/null; then up=1; break; fi
    sleep 0.1
done
if [ -n "$up" ]; then
    for f in "$1"/in/*.dcm; do
        id=$(curl -sf -X POST --data-binary "@$f" "http://127.0.0.1:{port}/instances" \
             | "$2" -c 'import json, sys; print(json.load(sys.stdin)["ID"])')
        curl -sf -X POST -d '{{}}' "http://127.0.0.1:{port}/instances/$id/anonymize" \
             -o "$1/out/$(basename "$f")"
    done
fi
kill "$pid"
wait "$pid"
"""


def _orthanc_anonymize(work: Path, files: list[Path]) -> dict[str, Path]:
    (work / "in").mkdir()
    (work / "out").mkdir()
    (work / "db").mkdir()
    for f in files:
        shutil.copy(f, work / "in" / f.name)
    (work / "orthanc.json").write_text(
        "{"
        f'"Name": "dicomgate-test", "HttpPort": {PORT}, "DicomServerEnabled": false, '
        '"RemoteAccessAllowed": false, "AuthenticationEnabled": false, "Plugins": [], '
        f'"StorageDirectory": "{work / "db"}", "IndexDirectory": "{work / "db"}"'
        "}"
    )
    script = _SCRIPT.replace("{port}", str(PORT)).replace("{{}}", "{}")
    subprocess.run(
        ["unshare", "-n", "sh", "-c", script, "sh", str(work), sys.executable],
        check=True,
        timeout=120,
        capture_output=True,
    )
    return {p.name: p for p in (work / "out").glob("*.dcm") if p.stat().st_size}


def _value(elem: pydicom.DataElement) -> object:
    value = elem.value
    if isinstance(value, pydicom.sequence.Sequence):
        return [str(item) for item in value]
    return str(value)


def test_what_orthanc_removes_or_empties_we_do_not_keep(tmp_path: Path) -> None:
    by_name = {p.name: p for p in real_world_files()}
    files = [by_name[n] for n in NAMES if n in by_name]
    assert len(files) >= 5
    theirs = _orthanc_anonymize(tmp_path, files)
    assert len(theirs) == len(files), sorted(theirs)
    kept: dict[str, list[str]] = {}
    compared = 0
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            original = pydicom.dcmread(f)
            peer = pydicom.dcmread(theirs[f.name])
            result = deidentify(original, profile(), pseudonymizer())
        ours = result.dataset
        assert ours is not None
        for elem in original:
            tag = elem.tag
            if tag.is_private or tag.group == 2 or (elem.VR == "SQ" and not elem.value):
                continue
            if elem.value in (None, "", b""):
                continue
            if tag in peer and peer[tag].value not in (None, "", b"") and elem.VR != "SQ":
                continue  # Orthanc keeps a value: not what this test compares
            if tag in peer and elem.VR == "SQ" and peer[tag].value:
                continue
            compared += 1
            if tag in ours and _value(ours[tag]) == _value(elem):
                kept.setdefault(f.name, []).append(elem.keyword or str(tag))
    assert compared >= 50
    assert not kept, kept
