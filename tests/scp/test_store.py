"""C-STORE: every transfer syntax stored byte-for-byte, duplicates and new versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    HTJ2K,
    CTImageStorage,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEGLSNearLossless,
)
from pynetdicom import AE

from dicomgate.spool import sha256_file
from dicomgate.state import InstanceState
from dicomgate.testing import write_ct_study
from tests.helpers import NodeHandle, dataset_bytes, send_files, storescu

# One file per transfer syntax family, from pydicom's bundled test data.
TEST_FILES = {
    "implicit VR LE": "MR_small_implicit.dcm",
    "explicit VR LE": "CT_small.dcm",
    "explicit VR BE": "MR_small_bigendian.dcm",
    "deflated": "image_dfl.dcm",
    "JPEG baseline": "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG extended": "JPEG-lossy.dcm",
    "JPEG lossless SV1": "SC_rgb_jpeg_gdcm.dcm",
    "JPEG-LS lossless": "MR_small_jpeg_ls_lossless.dcm",
    "JPEG 2000 lossless": "MR_small_jp2klossless.dcm",
    "JPEG 2000": "JPEG2000.dcm",
    "RLE": "MR_small_RLE.dcm",
}


def _stored_file(node: NodeHandle, sop_instance_uid: str) -> Path:
    assert node.node.state is not None
    [rec] = node.node.state.versions(sop_instance_uid)
    assert rec.spool_path is not None
    return node.data_dir / "spool" / rec.spool_path


@pytest.mark.parametrize("label", sorted(TEST_FILES))
def test_transfer_syntax_stored_byte_for_byte(node: NodeHandle, label: str) -> None:
    """Each transfer syntax is accepted and its dataset bytes are kept exactly as sent."""
    path = Path(get_testdata_file(TEST_FILES[label]))
    [status] = send_files(node.host, node.port, [path])
    assert status == 0x0000
    original = dcmread(path, stop_before_pixels=True)
    stored = _stored_file(node, str(original.SOPInstanceUID))
    assert dataset_bytes(stored) == dataset_bytes(path)
    assert dcmread(stored).file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def test_compressed_syntaxes_without_sample_files_are_negotiated(node: NodeHandle) -> None:
    """HTJ2K and JPEG-LS near-lossless contexts are accepted for storage SOP classes."""
    ae = AE(ae_title="NEGOTIATE")
    for ts in (HTJ2K, HTJ2KLossless, HTJ2KLosslessRPCL, JPEGLSNearLossless):
        ae.add_requested_context(CTImageStorage, ts)
    assoc = ae.associate(node.host, node.port, ae_title="DICOMGATE")
    assert assoc.is_established
    accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == {HTJ2K, HTJ2KLossless, HTJ2KLosslessRPCL, JPEGLSNearLossless}


def test_storescu_folder_recorded_with_association_details(
    node: NodeHandle, dcmtk: dict[str, str], tmp_path: Path
) -> None:
    """storescu +sd +r of a folder: every instance gets success and a state row."""
    paths = write_ct_study(tmp_path / "study", 12, rows=64, columns=64)
    result = storescu(dcmtk, node.port, tmp_path / "study", host=node.host, aet="MODALITY1")
    assert result.returncode == 0, result.stderr
    assert node.node.state is not None
    records = node.node.state.instances()
    assert len(records) == 12
    assert {r.calling_ae for r in records} == {"MODALITY1"}
    assert {r.state for r in records} == {InstanceState.RECEIVED}
    assert len({r.association_id for r in records}) == 1
    assert all(r.peer_address.startswith("127.0.0.1:") for r in records)
    by_uid = {str(dcmread(p).SOPInstanceUID): p for p in paths}
    for r in records:
        assert r.size == (node.data_dir / "spool" / str(r.spool_path)).stat().st_size
        assert dataset_bytes(node.data_dir / "spool" / str(r.spool_path)) == dataset_bytes(
            by_uid[r.sop_instance_uid]
        )
    assert node.incoming_files == []


def test_resent_duplicate_is_not_stored_twice(node: NodeHandle, tmp_path: Path) -> None:
    """The same instance sent twice answers success both times and is kept once."""
    [path] = write_ct_study(tmp_path / "s", 1, rows=32, columns=32)
    assert send_files(node.host, node.port, [path]) == [0]
    assert send_files(node.host, node.port, [path, path]) == [0, 0]
    assert node.node.state is not None
    assert len(node.node.state.instances()) == 1
    assert len(node.spool_files) == 1


def test_different_bytes_same_uid_kept_as_new_version(node: NodeHandle, tmp_path: Path) -> None:
    """Different content under the same SOP Instance UID is kept as version 2."""
    [first] = write_ct_study(tmp_path / "a", 1, rows=32, columns=32)
    ds = dcmread(first)
    ds.ImageComments = "corrected re-send"
    second = tmp_path / "second.dcm"
    ds.save_as(second, enforce_file_format=True)
    assert send_files(node.host, node.port, [first, second, second]) == [0, 0, 0]
    assert node.node.state is not None
    versions = node.node.state.versions(str(ds.SOPInstanceUID))
    assert [v.version for v in versions] == [1, 2]
    assert len(node.spool_files) == 2
    assert dataset_bytes(node.data_dir / "spool" / str(versions[1].spool_path)) == dataset_bytes(
        second
    )


def test_resending_an_earlier_content_makes_it_newest(node: NodeHandle, tmp_path: Path) -> None:
    """A, then B, then A again under one SOP Instance UID: A is stored again as version 3."""
    [a] = write_ct_study(tmp_path / "a", 1, rows=32, columns=32)
    ds = dcmread(a)
    ds.ImageComments = "B"
    b = tmp_path / "b.dcm"
    ds.save_as(b, enforce_file_format=True)
    assert send_files(node.host, node.port, [a, b, a, a]) == [0, 0, 0, 0]
    assert node.node.state is not None
    versions = node.node.state.versions(str(ds.SOPInstanceUID))
    assert [v.version for v in versions] == [1, 2, 3]
    assert dataset_bytes(node.data_dir / "spool" / str(versions[2].spool_path)) == dataset_bytes(a)


def test_resent_after_its_spool_copy_is_gone(node: NodeHandle, tmp_path: Path) -> None:
    """Version 1 delivered (its spool file gone): the node proposes version 1 without asking
    the store first; the store's answer (a conflict) still makes a re-send of the same bytes a
    duplicate and different bytes version 2 — and no spool file or spool byte is left over."""
    [a] = write_ct_study(tmp_path / "a", 1, rows=32, columns=32)
    ds = dcmread(a)
    ds.ImageComments = "B"
    b = tmp_path / "b.dcm"
    ds.save_as(b, enforce_file_format=True)
    state, spool = node.node.state, node.node.spool
    assert state is not None and spool is not None
    assert send_files(node.host, node.port, [a]) == [0]
    [v1] = state.versions(str(ds.SOPInstanceUID))
    assert v1.spool_path is not None
    # what processing and delivery do: record the raw copy's digest, then let the copy go
    state.set_sha256(v1.key, sha256_file(spool.path_of(v1.spool_path))[0])
    spool.remove(v1.spool_path)
    state.set_spool_path(v1.key, None)
    assert spool.usage().bytes_used == 0

    assert send_files(node.host, node.port, [a, a]) == [0, 0]
    assert [v.version for v in state.versions(str(ds.SOPInstanceUID))] == [1]
    assert node.spool_files == []
    assert spool.usage().bytes_used == 0

    assert send_files(node.host, node.port, [b]) == [0]
    versions = state.versions(str(ds.SOPInstanceUID))
    assert [v.version for v in versions] == [1, 2]
    [kept] = node.spool_files
    assert kept.name == f"{ds.SOPInstanceUID}~v2.dcm"
    assert dataset_bytes(kept) == dataset_bytes(b)
    assert spool.usage().bytes_used == kept.stat().st_size
