"""Pixel data in and out (dicomgate.deid.pixels): every accepted transfer syntax, fixed regions.

The masking is checked on the real-world corpus (pydicom's and pydicom-data's US, SC and OT files
in their various transfer syntaxes) and on generated images.  OCR is switched off here where the
test is about the codec (a fixed region is the mask), so that what is asserted is exact.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from dicomgate.deid import _burned_in, deidentify, encode_dataset
from dicomgate.deid._burned_in import CleanReport, clean_burned_in
from dicomgate.deid.pixels import Rect, RegionTable, ScanResult, decode
from dicomgate.deid.pixels._codec import black_value, gray_frames
from dicomgate.testing import make_burned_in_instance
from tests.deid.helpers import profile, pseudonymizer
from tests.deid.realworld import real_world_files

SUSPECT = frozenset({"US", "OT", "SC"})
REGION = Rect(2, 3, 40, 20)


def _corpus(name: str) -> Path:
    for path in real_world_files():
        if path.name == name:
            return path
    pytest.skip(f"{name} is not in this corpus")


def _read(data: bytes | Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)


def _table(ds: Dataset) -> RegionTable:
    text = (
        "[[device]]\nmanufacturer = 'TESTCO'\n"
        f"rows = {ds.Rows}\ncolumns = {ds.Columns}\nregions = [[2, 3, 40, 20]]\n"
    )
    return RegionTable.parse(text, "test.toml")


def _clean(src: Dataset, regions: RegionTable) -> tuple[Dataset, CleanReport]:
    out = deidentify(src, profile(), pseudonymizer()).dataset
    assert out is not None
    report = CleanReport()
    reason = clean_burned_in(
        src, out, policy="clean", regions=regions, suspect_modalities=SUSPECT, report=report
    )
    assert reason is None
    return _read(encode_dataset(out)), report


@pytest.fixture
def no_ocr(monkeypatch: pytest.MonkeyPatch) -> None:
    """OCR finds nothing: only the fixed regions are masked."""
    monkeypatch.setattr(_burned_in, "scan_frames", lambda count, gray: ScanResult(boxes=[]))


# file -> (transfer syntax of the output, Photometric Interpretation of the output, lossy)
CASES = {
    "US1_UNCR.dcm": (ExplicitVRLittleEndian, "RGB", False),
    "US1_J2KR.dcm": (JPEG2000Lossless, "YBR_RCT", False),  # decoded to RGB, re-encoded RCT
    "US1_J2KI.dcm": (ExplicitVRLittleEndian, "RGB", True),  # YBR_ICT, irreversible
    "examples_jpeg2k.dcm": (JPEG2000Lossless, "YBR_RCT", False),
    "OBXXXX1A.dcm": (ExplicitVRLittleEndian, "PALETTE COLOR", False),
    "OBXXXX1A_2frame.dcm": (ExplicitVRLittleEndian, "PALETTE COLOR", False),
    "OBXXXX1A_expb_2frame.dcm": (ExplicitVRLittleEndian, "PALETTE COLOR", False),  # from BE
    "OBXXXX1A_rle_2frame.dcm": (RLELossless, "PALETTE COLOR", False),
    "gdcm-US-ALOKA-16.dcm": (ImplicitVRLittleEndian, "PALETTE COLOR", False),  # 16-bit
    "SC_rgb_rle_16bit_2frame.dcm": (RLELossless, "RGB", False),
    "SC_rgb_32bit_2frame.dcm": (ExplicitVRLittleEndian, "RGB", False),
    "SC_rgb_expb_16bit.dcm": (ExplicitVRLittleEndian, "RGB", False),
    "SC_ybr_full_422_uncompressed.dcm": (ExplicitVRLittleEndian, "RGB", True),  # header: 01
    "SC_rgb_dcmtk_+eb+cy+np.dcm": (ExplicitVRLittleEndian, "RGB", True),  # JPEG baseline YBR
    "SC_rgb_jpeg_gdcm.dcm": (ExplicitVRLittleEndian, "RGB", False),  # JPEG lossless SV1
    "SC_rgb_jls_lossy_line.dcm": (ExplicitVRLittleEndian, "RGB", True),  # JPEG-LS near-lossless
    "MR_small_jpeg_ls_lossless.dcm": (ExplicitVRLittleEndian, "MONOCHROME2", False),
    "JPGExtended.dcm": (ExplicitVRLittleEndian, "MONOCHROME2", True),  # JPEG extended 12-bit
    "JPEG-LL.dcm": (ExplicitVRLittleEndian, "MONOCHROME2", False),  # JPEG lossless P14
    "image_dfl.dcm": (DeflatedExplicitVRLittleEndian, "MONOCHROME2", False),
    "MR_small_bigendian.dcm": (ExplicitVRLittleEndian, "MONOCHROME2", False),  # signed 16
    "MR_small_jp2klossless.dcm": (JPEG2000Lossless, "MONOCHROME2", False),
    "emri_small_RLE.dcm": (RLELossless, "MONOCHROME2", False),  # 10 frames
}


@pytest.mark.usefixtures("no_ocr")
@pytest.mark.parametrize("name", sorted(CASES))
def test_masking_on_every_transfer_syntax(name: str) -> None:
    """The region is black on every frame, every other pixel is as decoded from the input, and
    the output says truthfully what it holds (transfer syntax, photometric, lossy)."""
    syntax, photometric, lossy = CASES[name]
    src = _read(_corpus(name))
    src.Manufacturer = "TESTCO"
    src.BurnedInAnnotation = "YES"
    before = decode(src)
    out, report = _clean(src, _table(src))
    assert report.changed and report.fixed_regions == 1
    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.PhotometricInterpretation == photometric
    assert (out.get("LossyImageCompression") == "01") is lossy
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in {i.CodeValue for i in out.DeidentificationMethodCodeSequence}
    after = decode(out)
    assert after.frames.shape == before.frames.shape
    black = black_value(before, src)
    region = (slice(None), slice(REGION.y, REGION.y + REGION.height),
              slice(REGION.x, REGION.x + REGION.width))  # fmt: skip
    assert (after.frames[region] == black).all()
    expected = before.frames.copy()
    expected[region] = black
    assert np.array_equal(after.frames, expected)
    if photometric == "PALETTE COLOR":  # the LUT is the input's: black is displayed black
        gray = gray_frames(after, out)(0)
        assert gray[REGION.y, REGION.x] == gray.min()


def test_pixels_without_text_come_through_unchanged() -> None:
    """Nothing found, nothing masked: Pixel Data and transfer syntax exactly as received."""
    src, _ = make_burned_in_instance("us", text=False, rows=240, columns=320)
    src = _read(_bytes(src))
    out, report = _clean(src, RegionTable.load())
    assert not report.changed and report.text_regions == 0 and report.frames_read == 1
    assert out.PixelData == src.PixelData
    assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
    assert out.BurnedInAnnotation == "NO"  # examined: the option was applied
    assert "113101" in {i.CodeValue for i in out.DeidentificationMethodCodeSequence}


def test_fixed_region_is_masked_where_ocr_sees_nothing() -> None:
    """A device's region is blacked out even with no text in it (applied before OCR)."""
    src, _ = make_burned_in_instance("sc", text=False, rows=240, columns=320)
    src.Manufacturer = "TESTCO"
    src = _read(_bytes(src))
    table = RegionTable.parse(
        "[[device]]\nmanufacturer = 'testco'\nrows = 240\ncolumns = 320\n"
        "regions = [[100, 160, 50, 30], [300, 230, 100, 100]]\n"
    )
    out, report = _clean(src, table)
    assert report.fixed_regions == 2 and report.text_regions == 0
    before, after = decode(src).frames, decode(out).frames
    assert np.ptp(before[0, 160:190, 100:150]) > 0  # the gradient was there
    assert (after[0, 160:190, 100:150] == 0).all()
    assert (after[0, 230:240, 300:320] == 0).all()  # clipped to the image
    untouched = np.ones(after.shape, dtype=bool)
    untouched[0, 160:190, 100:150] = untouched[0, 230:, 300:] = False
    assert np.array_equal(after[untouched], before[untouched])


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_region_table_matching() -> None:
    """Manufacturer and model contain the entry's (ignoring case); rows and columns equal."""
    table = RegionTable.parse(
        "[[device]]\nmanufacturer = 'G.E. Medical'\nmodel = 'logiq'\nrows = 480\n"
        "columns = 640\nregions = [[0, 0, 640, 104], [600, 460, 100, 100]]\n"
        "[[device]]\nmanufacturer = 'G.E.'\nrows = 480\ncolumns = 640\n"
        "regions = [[0, 470, 10, 10]]\n"
    )
    ds = Dataset()
    ds.Manufacturer, ds.ManufacturerModelName = "G.E. Medical Systems", "LOGIQ 700"
    ds.Rows, ds.Columns = 480, 640
    assert table.regions_for(ds) == (
        Rect(0, 0, 640, 104), Rect(600, 460, 40, 20), Rect(0, 470, 10, 10)
    )  # fmt: skip
    ds.ManufacturerModelName = "Vivid 7"
    assert table.regions_for(ds) == (Rect(0, 470, 10, 10),)  # the model-less entry only
    ds.Rows = 481
    assert table.regions_for(ds) == ()


def test_shipped_region_file_loads_and_matches_its_sample() -> None:
    """The shipped table parses and its GE LOGIQ 700 entry matches pydicom-data's US1."""
    table = RegionTable.load()
    assert len(table.devices) >= 3
    src = _read(_corpus("US1_UNCR.dcm"))
    assert table.regions_for(src) == (Rect(0, 0, 640, 104),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[device]]\nrows = 1\ncolumns = 1\nregions = [[0, 0, 1, 1]]", "device 1: manufacturer"),
        ("[[device]]\nmanufacturer = 'X'\nrows = 1\nregions = [[0,0,1,1]]", "device 1: columns"),
        ("[[device]]\nmanufacturer='X'\nrows=1\ncolumns=1\nregions=[[0,0,1]]", "region 1"),
        ("[[device]]\nmanufacturer='X'\nrows=1\ncolumns=1\nregions=[[0,0,1,1]]\nsize=2", "size"),
        ("[devices]\n", "unknown key devices"),
        ("[[device]\n", "t.toml"),
    ],
)
def test_region_file_errors_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^t\.toml") as info:
        RegionTable.parse(text, "t.toml")
    assert message in str(info.value)


def test_region_file_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[[device]]\nmanufacturer='X'\nrows=2\ncolumns=2\nregions=[[0,0,1,1]]\n")
    assert RegionTable.load(path).devices[0].rects == (Rect(0, 0, 1, 1),)
