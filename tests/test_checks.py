"""The door check's positional part: Pixel Data and what follows it fit the data that arrived.

Files here are pydicom's bundled test files and dicomgate.testing's synthetic instances, cut
or edited the ways a broken sender or a broken link would.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit

from dicomgate.checks import HeaderUIDs, Refusal, check_header
from dicomgate.status import Status
from dicomgate.testing import write_ct_study, write_large_instance


def _bundled(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def _check(path: Path) -> HeaderUIDs | Refusal:
    return check_header(path, request_sop_class_uid=None, request_sop_instance_uid=None)


def _refused(path: Path, status: Status = Status.CANNOT_UNDERSTAND) -> str:
    result = _check(path)
    assert isinstance(result, Refusal), f"{path.name} was accepted"
    assert result.status == status, result
    return result.reason


@pytest.fixture
def ct(tmp_path: Path) -> Path:
    [path] = write_ct_study(tmp_path / "ct", 1, rows=16, columns=16)
    return path


def _edited(src: Path, dst: Path, edit: Callable[[Dataset], None], **save: object) -> Path:
    ds = dcmread(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edit(ds)
        ds.save_as(dst, **save)  # type: ignore[arg-type]
    return dst


# Valid files of every encoding the node accepts: native LE/BE, implicit, deflated, RLE, JPEG,
# JPEG 2000, JPEG-LS, 1-bit, YBR_FULL_422, 32-bit multi-frame, trailing padding after Pixel
# Data, odd-length native data, a VR-less Pixel Data header, no Pixel Data at all.
VALID = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",  # (FFFC,FFFC) after Pixel Data
    "MR_small_RLE.dcm",  # encapsulated, then (FFFC,FFFC)
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG-lossy.dcm",
    "JPEG2000.dcm",
    "JPEG2000-embedded-sequence-delimiter.dcm",  # E0DD bytes inside a fragment
    "SC_rgb_jpeg.dcm",  # Pixel Data header written without a VR
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_small_odd.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "liver_1frame.dcm",  # Bits Allocated 1
    "rtdose.dcm",  # implicit VR, 15 frames of 32 bits
    "rtdose_expb.dcm",
    "examples_jpeg2k.dcm",
    "examples_ybr_color.dcm",
    "waveform_ecg.dcm",  # no Pixel Data
]


@pytest.mark.parametrize("name", VALID)
def test_valid_bundled_files_pass(name: str) -> None:
    assert isinstance(_check(_bundled(name)), HeaderUIDs)


def test_mr_truncated_is_refused() -> None:
    """pydicom's MR_truncated.dcm: Pixel Data declares 8,192 bytes, 8,130 are there."""
    assert "(7FE0,0010) runs past the end" in _refused(_bundled("MR_truncated.dcm"))


def test_rtplan_truncated_is_still_refused() -> None:
    assert "runs past the end" in _refused(_bundled("rtplan_truncated.dcm"))


@pytest.mark.parametrize("cut", [1, 2, 100, 511])
def test_ct_with_its_end_cut_is_refused(ct: Path, tmp_path: Path, cut: int) -> None:
    cut_file = tmp_path / "cut.dcm"
    cut_file.write_bytes(ct.read_bytes()[:-cut])
    assert "(7FE0,0010) runs past the end" in _refused(cut_file)


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm"])
def test_truncated_native_in_other_encodings(name: str, tmp_path: Path) -> None:
    cut_file = tmp_path / name
    cut_file.write_bytes(_bundled(name).read_bytes()[:-30])
    assert "(7FE0,0010) runs past the end" in _refused(cut_file)


def test_cut_inside_the_pixel_data_header(ct: Path, tmp_path: Path) -> None:
    """Fewer than 8 bytes of a header left: pydicom ends the dataset there without a word."""
    data = ct.read_bytes()
    header_at = data.rindex(b"\xe0\x7f\x10\x00OW")
    for keep in (1, 4, 7):
        cut_file = tmp_path / f"cut{keep}.dcm"
        cut_file.write_bytes(data[: header_at + keep])
        assert "ends inside an element header" in _refused(cut_file)
    cut_file = tmp_path / "cut9.dcm"  # inside the 4-byte length after "OW\0\0": pydicom fails
    cut_file.write_bytes(data[: header_at + 9])
    assert "cannot be parsed" in _refused(cut_file)


def test_native_pixel_data_shorter_than_the_image(ct: Path, tmp_path: Path) -> None:
    """Consistent lengths, but 16 × 16 × 16-bit needs 512 bytes: 412 is not an image."""

    def shorten(ds: Dataset) -> None:
        ds.PixelData = ds.PixelData[:-100]

    reason = _refused(_edited(ct, tmp_path / "short.dcm", shorten))
    assert "has 412 bytes" in reason and "needs 512" in reason


def test_multi_frame_counts_every_frame(ct: Path, tmp_path: Path) -> None:
    one = dcmread(ct).PixelData

    def frames(n: int) -> Callable[[Dataset], None]:
        def edit(ds: Dataset) -> None:
            ds.NumberOfFrames = 3
            ds.PixelData = one * n

        return edit

    assert "needs 1536" in _refused(_edited(ct, tmp_path / "two.dcm", frames(2)))
    assert isinstance(_check(_edited(ct, tmp_path / "three.dcm", frames(3))), HeaderUIDs)


def test_one_bit_pixels_are_packed(ct: Path, tmp_path: Path) -> None:
    """5 × 5 1-bit pixels are 25 bits: 4 bytes (PS3.5 8.1.1), not 25 and not 3."""

    def bits(n: int) -> Callable[[Dataset], None]:
        def edit(ds: Dataset) -> None:
            ds.Rows = ds.Columns = 5
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
            ds.PixelData = b"\x00" * n

        return edit

    assert isinstance(_check(_edited(ct, tmp_path / "ok.dcm", bits(4))), HeaderUIDs)
    assert "needs 4" in _refused(_edited(ct, tmp_path / "short.dcm", bits(2)))


@pytest.mark.parametrize(("tag", "vr", "bits"), [(0x7FE00008, "OF", 32), (0x7FE00009, "OD", 64)])
def test_float_pixel_data(ct: Path, tmp_path: Path, tag: int, vr: str, bits: int) -> None:
    needed = 16 * 16 * bits // 8

    def floats(n: int) -> Callable[[Dataset], None]:
        def edit(ds: Dataset) -> None:
            del ds.PixelData
            ds.BitsAllocated = bits
            ds.add_new(tag, vr, b"\x00" * n)

        return edit

    assert isinstance(_check(_edited(ct, tmp_path / "ok.dcm", floats(needed))), HeaderUIDs)
    assert f"needs {needed}" in _refused(_edited(ct, tmp_path / "short.dcm", floats(needed - 8)))
    cut_file = tmp_path / "cut.dcm"
    cut_file.write_bytes((tmp_path / "ok.dcm").read_bytes()[:-10])
    assert f"({tag >> 16:04X},{tag & 0xFFFF:04X}) runs past the end" in _refused(cut_file)


def test_encapsulated_without_its_delimiter_is_refused(tmp_path: Path) -> None:
    data = _bundled("JPEG-lossy.dcm").read_bytes()
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")  # (FFFE,E0DD), length 0
    no_delimiter = tmp_path / "no_delimiter.dcm"
    no_delimiter.write_bytes(data[:-8])
    assert "without its sequence delimitation item" in _refused(no_delimiter)
    mid_fragment = tmp_path / "mid_fragment.dcm"
    mid_fragment.write_bytes(data[:-100])
    assert "fragment runs past the end" in _refused(mid_fragment)


def test_encapsulated_with_a_foreign_tag_among_its_items(tmp_path: Path) -> None:
    data = bytearray(_bundled("JPEG-lossy.dcm").read_bytes())
    data[-8:-4] = b"\x08\x00\x18\x00"  # (0008,0018) where the delimiter belongs
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(bytes(data))
    assert "(0008,0018) where an item" in _refused(bad)


def test_element_after_pixel_data_cut(tmp_path: Path) -> None:
    """MR_small_RLE.dcm ends with Data Set Trailing Padding: cutting it is caught too."""
    cut_file = tmp_path / "cut.dcm"
    cut_file.write_bytes(_bundled("MR_small_RLE.dcm").read_bytes()[:-30])
    assert "(FFFC,FFFC) runs past the end" in _refused(cut_file)


def test_deflated(ct: Path, tmp_path: Path) -> None:
    """Deflated data cannot be seeked in the file: the checks run on pydicom's inflated copy."""

    def deflate(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    def deflate_short(ds: Dataset) -> None:
        deflate(ds)
        ds.PixelData = ds.PixelData[:-100]

    ok = _edited(ct, tmp_path / "ok.dcm", deflate, enforce_file_format=True)
    assert isinstance(_check(ok), HeaderUIDs)
    short = _edited(ct, tmp_path / "short.dcm", deflate_short, enforce_file_format=True)
    assert "needs 512" in _refused(short)
    cut_file = tmp_path / "cut.dcm"
    cut_file.write_bytes(ok.read_bytes()[:-20])
    assert "cannot be parsed" in _refused(cut_file)  # the deflate stream itself is cut


def _bytes_read() -> int:
    """Bytes this thread has read through read()/pread() so far (Linux
    /proc/self/task/TID/io: per thread, so other tests' lingering threads do not count)."""
    io = Path(f"/proc/self/task/{threading.get_native_id()}/io")
    for line in io.read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_pixel_data_is_never_read(tmp_path: Path) -> None:
    """The check measures positions: a 20 MB native and a 20 MB encapsulated instance (300
    fragments) each cost a few kilobytes of reading, not their size."""
    native = write_large_instance(tmp_path / "native.dcm", frames=40)
    [ct] = write_ct_study(tmp_path / "ct", 1, rows=16, columns=16)

    def jpeg_frames(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.NumberOfFrames = 300
        ds.PixelData = encapsulate([b"\xff\xd8" + bytes(65532) + b"\xff\xd9"] * 300)
        ds["PixelData"].VR = "OB"

    encapsulated = _edited(ct, tmp_path / "encapsulated.dcm", jpeg_frames)
    for path in (native, encapsulated):
        assert path.stat().st_size > 19_000_000
        assert isinstance(_check(path), HeaderUIDs)  # warm (imports, caches)
        before = _bytes_read()
        assert isinstance(_check(path), HeaderUIDs)
        assert _bytes_read() - before < 64 * 1024, path.name


def test_uid_padding_and_newline(ct: Path, tmp_path: Path) -> None:
    """One NUL of padding is a UID; a trailing newline is not (0xC001, not a pass after a
    strip)."""
    uid = "1.2.826.0.1.3680043.10.543.123456789"  # even length: stored without padding

    def even_uid(ds: Dataset) -> None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid

    ct = _edited(ct, tmp_path / "even.dcm", even_uid)
    data = ct.read_bytes()
    raw = uid.encode()
    assert len(raw) % 2 == 0 and data.count(raw) == 2  # File Meta and dataset, unpadded
    at = data.rindex(raw)
    # same length, so no other byte moves: "<uid minus its last digit>\x00" and "...\n"
    for last, ok in ((b"\x00", True), (b"\n", False)):
        edited = tmp_path / f"uid{last!r}.dcm"
        edited.write_bytes(data[: at + len(raw) - 1] + last + data[at + len(raw) :])
        result = check_header(
            edited,
            request_sop_class_uid=None,
            request_sop_instance_uid=(raw[:-1] + last).decode(),
        )
        if ok:
            assert isinstance(result, HeaderUIDs)
            assert result.sop_instance_uid == uid[:-1]
        else:
            assert isinstance(result, Refusal) and result.status == Status.INVALID_UID
            assert result.reason == "SOPInstanceUID is not a valid UID"


def test_request_uid_with_a_newline_is_refused(ct: Path) -> None:
    uid = str(dcmread(ct).SOPInstanceUID)
    result = check_header(ct, request_sop_class_uid=None, request_sop_instance_uid=uid + "\n")
    assert isinstance(result, Refusal) and result.status == Status.INVALID_UID


def test_malformed_uids_are_judged_without_pydicom_quoting_them(
    ct: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The UIDs are read as raw bytes: pydicom's value conversion, which warns and logs
    "Invalid value for VR UI: '<the original UID>'", never runs on them here."""
    uid = str(dcmread(ct).StudyInstanceUID)
    field = (uid + "\x00" * (len(uid) % 2)).encode()
    data = ct.read_bytes()
    assert data.count(field) == 1
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(data.replace(field, b"1.2.840.abc.99" + b"7" * (len(field) - 14)))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("DEBUG"):
        warnings.simplefilter("always")
        result = _check(bad)
    assert isinstance(result, Refusal) and result.status == Status.INVALID_UID
    assert [str(w.message) for w in caught] == []
    assert "abc" not in caplog.text
