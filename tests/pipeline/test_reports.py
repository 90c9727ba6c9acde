"""What operators read about a study says what happened, and where (issue 11, item 13)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from pydicom import dcmread

from dicomgate.testing import write_ct_study
from tests.helpers import send_files, start_node, wait_for


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomgate", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_all_quarantined_study_is_not_reported_as_delivered(tmp_path: Path) -> None:
    """PHI check failures say where; a study with nothing delivered does not say "delivered"."""
    paths = write_ct_study(tmp_path / "s", 2, rows=16, columns=16)
    for path in paths:  # the patient's name typed into an attribute the profile keeps
        ds = dcmread(path)
        ds.Manufacturer = f"{ds.PatientName.family_name} MEDICAL"
        ds.save_as(path, enforce_file_format=True)
    first = dcmread(paths[0])
    uid, sop = str(first.StudyInstanceUID), str(first.SOPInstanceUID)
    data = tmp_path / "data"
    with start_node(data, pipeline=True, stable_after=0.3) as n:
        assert send_files(n.host, n.port, paths) == [0, 0]
        assert n.node.state is not None
        assert wait_for(lambda: n.node.state.study(uid).manifest_version == 1, timeout=30)  # type: ignore[union-attr]
        [study] = n.node.state.status_report(uid)["studies"]
        assert n.node.ops is not None
        ops_host, ops_port = n.node.ops.address
        with urllib.request.urlopen(f"http://{ops_host}:{ops_port}/studies") as response:
            public = response.read().decode()
    assert study["state"] == "quarantined"
    held = {q["instance"]: q for q in study["quarantined"]}
    assert held[sop]["stage"] == "verify"
    assert "from PatientName found in Manufacturer" in held[sop]["reason"]
    assert held[sop]["deid_instance"].startswith("2.25.") and held[sop]["deid_instance"] != sop
    # the ops endpoint names held-back instances by their pseudonymized UID only
    assert held[sop]["deid_instance"] in public and sop not in public and uid not in public

    out = _cli("status", uid, "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert "delivered as" not in out.stdout and "nothing delivered" in out.stdout
    assert "found in Manufacturer" in out.stdout


def test_links_of_a_file_destination_do_not_claim_to_expire(tmp_path: Path) -> None:
    """`dicomgate links` on a file:// destination prints paths, with no expiry."""
    paths = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    data = tmp_path / "data"
    with start_node(data, pipeline=True, stable_after=0.3) as n:
        assert send_files(n.host, n.port, paths) == [0]
        assert n.node.state is not None
        assert wait_for(lambda: n.node.state.study(uid).manifest_version == 1, timeout=30)  # type: ignore[union-attr]
    text = _cli("links", uid, "--data-dir", str(data))
    assert text.returncode == 0, text.stderr
    assert "expire " not in text.stdout and "do not expire" in text.stdout
    as_json = _cli("links", uid, "--json", "--data-dir", str(data))
    assert '"expires_at": null' in as_json.stdout
