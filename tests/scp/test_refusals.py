"""Door checks: each bad instance gets its own DIMSE status and leaves nothing behind."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.uid import MRImageStorage, generate_uid

from dicomgate.status import Status
from dicomgate.testing import write_ct_study
from tests.helpers import NodeHandle, associate, dataset_bytes, send_files


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    [path] = write_ct_study(tmp_path / "ct", 1, rows=16, columns=16)
    return path


def _rewrite(src: Path, dst: Path, edit: object) -> Path:
    """Edit a dataset and save it keeping its File Meta as set (the request comes from it)."""
    ds = dcmread(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values on purpose
        edit(ds)  # type: ignore[operator]
        ds.save_as(dst, enforce_file_format=False)
    return dst


def _assert_nothing_kept(node: NodeHandle) -> None:
    assert node.spool_files == []
    assert node.incoming_files == []
    assert node.node.state is not None
    assert node.node.state.instances() == []
    # and the node still serves
    assoc = associate(node.host, node.port)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_sop_class_mismatch_is_a900(node: NodeHandle, ct_file: Path, tmp_path: Path) -> None:
    """A request for MR Image Storage carrying a CT dataset gets 0xA900."""

    def edit(ds: object) -> None:
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage  # type: ignore[attr-defined]

    bad = _rewrite(ct_file, tmp_path / "bad.dcm", edit)
    assert send_files(node.host, node.port, [bad]) == [Status.DATASET_DOES_NOT_MATCH_SOP_CLASS]
    _assert_nothing_kept(node)


def test_missing_sop_class_is_a900(node: NodeHandle, ct_file: Path, tmp_path: Path) -> None:
    """A dataset without SOP Class UID gets 0xA900."""
    bad = _rewrite(ct_file, tmp_path / "bad.dcm", lambda ds: delattr(ds, "SOPClassUID"))
    assert send_files(node.host, node.port, [bad]) == [0xA900]
    _assert_nothing_kept(node)


def test_sop_instance_mismatch_is_c002(node: NodeHandle, ct_file: Path, tmp_path: Path) -> None:
    """A request whose SOP Instance UID differs from the dataset's gets 0xC002."""

    def edit(ds: object) -> None:
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # type: ignore[attr-defined]

    bad = _rewrite(ct_file, tmp_path / "bad.dcm", edit)
    assert send_files(node.host, node.port, [bad]) == [Status.INSTANCE_UID_MISMATCH]
    _assert_nothing_kept(node)


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID"])
def test_missing_required_uid_is_c001(
    node: NodeHandle, ct_file: Path, tmp_path: Path, keyword: str
) -> None:
    """An instance without Study or Series Instance UID gets 0xC001."""
    bad = _rewrite(ct_file, tmp_path / "bad.dcm", lambda ds: delattr(ds, keyword))
    assert send_files(node.host, node.port, [bad]) == [Status.INVALID_UID]
    _assert_nothing_kept(node)


def test_malformed_uid_is_c001(node: NodeHandle, ct_file: Path, tmp_path: Path) -> None:
    """A Study Instance UID that is not a UID (letters, too long) gets 0xC001."""

    def edit(ds: object) -> None:
        ds["StudyInstanceUID"] = DataElement(0x0020000D, "UI", "1.2.840.abc.99")  # type: ignore[index]

    bad = _rewrite(ct_file, tmp_path / "bad.dcm", edit)
    assert send_files(node.host, node.port, [bad]) == [Status.INVALID_UID]
    _assert_nothing_kept(node)


def test_unparseable_dataset_is_c000(node: NodeHandle, ct_file: Path, tmp_path: Path) -> None:
    """A dataset whose elements run past its end gets 0xC000."""
    good = ct_file.read_bytes()
    meta_end = len(good) - len(dataset_bytes(ct_file))
    # keep the File Meta, then a SOP Class UID element claiming 65,280 bytes that are not there
    garbage = good[:meta_end] + b"\x08\x00\x16\x00UI\x00\xff" + b"1.2"
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(garbage)
    assert send_files(node.host, node.port, [bad]) == [Status.CANNOT_UNDERSTAND]
    _assert_nothing_kept(node)


def test_real_world_meta_mismatch_file(node: NodeHandle) -> None:
    """pydicom's rtplan.dcm, whose File Meta names another instance, is refused with 0xC002."""
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("rtplan.dcm"))
    assert send_files(node.host, node.port, [path]) == [0xC002]
    _assert_nothing_kept(node)


def test_good_instance_after_bad_ones(node: NodeHandle, ct_file: Path, tmp_path: Path) -> None:
    """Refusals do not disturb the association: a good instance after bad ones is stored."""
    bad = _rewrite(ct_file, tmp_path / "bad.dcm", lambda ds: delattr(ds, "StudyInstanceUID"))
    assert send_files(node.host, node.port, [bad, ct_file, bad]) == [0xC001, 0, 0xC001]
    assert len(node.spool_files) == 1


def _truncated_ct(ct_file: Path, tmp_path: Path) -> Path:
    cut = tmp_path / "ct_cut.dcm"
    cut.write_bytes(ct_file.read_bytes()[:-100])  # inside Pixel Data, the last element
    return cut


def _mr_truncated(ct_file: Path, tmp_path: Path) -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("MR_truncated.dcm"))  # 8,130 of 8,192 Pixel Data bytes


def _jpeg_without_delimiter(ct_file: Path, tmp_path: Path) -> Path:
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("JPEG-lossy.dcm")).read_bytes()
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")  # (FFFE,E0DD), length 0
    cut = tmp_path / "jpeg_cut.dcm"
    cut.write_bytes(data[:-8])
    return cut


@pytest.mark.parametrize("make", [_truncated_ct, _mr_truncated, _jpeg_without_delimiter])
def test_truncated_pixel_data_is_c000(
    node: NodeHandle, ct_file: Path, tmp_path: Path, make: object
) -> None:
    """Pixel Data cut short (native or encapsulated), sent as raw bytes, gets 0xC000: the
    final element is checked against the data that arrived, not hidden by the header parse."""
    bad = make(ct_file, tmp_path)  # type: ignore[operator]
    assert send_files(node.host, node.port, [bad]) == [Status.CANNOT_UNDERSTAND]
    _assert_nothing_kept(node)


def test_sop_instance_uid_with_trailing_newline_is_c001(
    node: NodeHandle, ct_file: Path, tmp_path: Path
) -> None:
    """A SOP Instance UID ending in a newline is not a UID: 0xC001, not accepted after a
    strip and filed under a cleaned-up name.

    The newline is in the dataset and in the File Meta the request is made from; pydicom's
    ``UID()`` strips whitespace from every UID it decodes (the sender's File Meta, and the
    node's received command set), so the request itself always arrives stripped: the
    dataset's raw value is what the node must judge.
    """
    # bytes, since pydicom would strip it: the value field keeps its length, its last byte
    # becomes "\n", in the File Meta and in the dataset.
    uid = str(dcmread(ct_file).SOPInstanceUID)
    field = (uid + "\x00" * (len(uid) % 2)).encode()
    newline = (uid + "\n" if len(uid) % 2 else uid[:-1] + "\n").encode()
    data = ct_file.read_bytes()
    assert data.count(field) == 2
    bad = tmp_path / "newline.dcm"
    bad.write_bytes(data.replace(field, newline))
    assert bad.read_bytes().count(newline) == 2
    assert send_files(node.host, node.port, [bad]) == [Status.INVALID_UID]
    _assert_nothing_kept(node)
