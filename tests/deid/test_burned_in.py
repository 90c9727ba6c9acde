"""Burned-in text is found and blacked out (PS3.15 E.3.1, Clean Pixel Data Option).

Generated ultrasound and screen-capture images carry identifying text rendered into their pixels
(``dicomgate.testing.make_burned_in_instance``, which says where).  After cleaning: every pixel of
that text is black, and tesseract — called here directly, not through the code under test —
reads none of it.  Then the three policies, the decision, and the quarantine reasons.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytesseract  # type: ignore[import-untyped]
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from dicomgate.deid import deidentify, encode_dataset
from dicomgate.deid._burned_in import (
    CleanReport,
    burned_in_suspicion,
    clean_burned_in,
)
from dicomgate.deid._method import record_clean_pixel_data
from dicomgate.deid.pixels import RegionTable, decode
from dicomgate.deid.pixels._codec import gray_frames
from dicomgate.quarantine import Rule, rule_of
from dicomgate.testing import BURNED_IN_TEXT, BurnedText, make_burned_in_instance
from tests.deid.helpers import profile, pseudonymizer
from tests.deid.realworld import real_world_files

SUSPECT = frozenset({"US", "OT", "SC", "XC"})
TOKENS = sorted({w for v in BURNED_IN_TEXT.values() for w in v.replace(",", " ").split()
                 if len(w) >= 3 and w != "DOB"})  # fmt: skip


def _reread(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(buffer.getvalue()))


def _clean(
    src: Dataset, policy: str = "clean", regions: RegionTable | None = None
) -> tuple[Dataset, str | None, CleanReport]:
    out = deidentify(src, profile(), pseudonymizer()).dataset
    assert out is not None
    report = CleanReport()
    reason = clean_burned_in(
        src,
        out,
        policy=policy,  # type: ignore[arg-type]
        regions=regions or RegionTable(),
        suspect_modalities=SUSPECT,
        report=report,
    )
    if reason is not None:
        return out, reason, report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(encode_dataset(out))), None, report


def _ink(src: np.ndarray, t: BurnedText) -> np.ndarray:
    """The pixels of ``t``'s glyphs: far from its box's background (the median)."""
    box = src[t.y : t.y + t.height, t.x : t.x + t.width].astype(np.int16)
    return np.abs(box - int(np.median(box))) > 64


def _ocr_words(gray: np.ndarray) -> str:
    """What plain tesseract reads (both polarities, 2x), upper case."""
    image = Image.fromarray(gray).resize((gray.shape[1] * 2, gray.shape[0] * 2))
    inverted = Image.fromarray(255 - np.asarray(image))
    text = "".join(pytesseract.image_to_string(i, config="--psm 11") for i in (image, inverted))
    return text.upper()


def _assert_masked(src: Dataset, out: Dataset, burned: list[BurnedText]) -> None:
    before, after = gray_frames(decode(src), src), gray_frames(decode(out), out)
    frames = int(src.get("NumberOfFrames", 1) or 1)
    for f in range(frames):
        g0, g1 = before(f), after(f)
        for t in burned:
            if f in t.frames:
                ink = _ink(g0, t)
                assert ink.any()
                box = g1[t.y : t.y + t.height, t.x : t.x + t.width]
                assert (box[ink] == 0).all(), f"{t.text!r} still visible on frame {f}"


@pytest.mark.parametrize(
    ("kind", "rgb", "font_size", "syntax"),
    [
        ("us", False, 14, ExplicitVRLittleEndian),
        ("us", True, 20, ExplicitVRLittleEndian),
        ("sc", False, 16, ExplicitVRLittleEndian),
        ("sc", True, 12, RLELossless),
        ("us", False, 18, RLELossless),
    ],
)
def test_rendered_phi_is_blacked_out(kind: str, rgb: bool, font_size: int, syntax: str) -> None:
    """Names, IDs, dates in the usual places: every glyph black, OCR reads none of it, the
    instance is delivered (not quarantined) and says what was done."""
    src, burned = make_burned_in_instance(
        kind,  # type: ignore[arg-type]
        rgb=rgb,
        font_size=font_size,
        transfer_syntax=syntax,
        rows=360,
        columns=480,
    )
    src = _reread(src)
    assert any(w in _ocr_words(gray_frames(decode(src), src)(0)) for w in TOKENS)  # readable
    out, reason, report = _clean(src)
    assert reason is None and report.changed and report.text_regions >= len(burned)
    _assert_masked(src, out, burned)
    seen = _ocr_words(gray_frames(decode(out), out)(0))
    assert [w for w in TOKENS if w in seen] == []
    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.PhotometricInterpretation == ("RGB" if rgb else "MONOCHROME2")
    assert out.BurnedInAnnotation == "NO"
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert "113101" in codes and codes == sorted(codes)


def test_text_on_one_frame_of_a_cine_is_found() -> None:
    """Every frame is examined: text shown on frame 3 of 5 only is blacked out there; frames that
    do not change are not read again (the cost of a cine is its changes)."""
    src, burned = make_burned_in_instance("us", frames=5, text_frames=[2], rows=240, columns=320)
    src = _reread(src)
    out, reason, report = _clean(src)
    assert reason is None and report.frames == 5
    assert report.text_frames == (3,)  # 1-based
    _assert_masked(src, out, burned)
    for t in burned:  # the other frames did not show it: at most blacked out as well
        assert t.frames == (2,)

    static, static_burned = make_burned_in_instance("sc", frames=4, rows=240, columns=320)
    static.PixelData = b"".join([decode(static).frames[0].tobytes()] * 4)  # identical frames
    static = _reread(static)
    out, reason, report = _clean(static)
    assert reason is None and report.frames == 4 and report.frames_read == 1
    _assert_masked(static, out, [BurnedText(t.text, t.x, t.y, t.width, t.height, (0, 1, 2, 3))
                                 for t in static_burned])  # fmt: skip


def test_real_ultrasound_header_is_masked() -> None:
    """pydicom-data's GE LOGIQ 700 ultrasound: its institution line is gone, OCR and region."""
    path = next((p for p in real_world_files() if p.name == "US1_UNCR.dcm"), None)
    if path is None:
        pytest.skip("pydicom-data is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = dcmread(path)
    assert "BAPTIST" in _ocr_words(gray_frames(decode(src), src)(0))
    for regions in (RegionTable(), RegionTable.load()):
        out, reason, report = _clean(src, regions=regions)
        assert reason is None and report.changed
        assert "BAPTIST" not in _ocr_words(gray_frames(decode(out), out)(0))


def test_policy_allow_delivers_unchanged() -> None:
    src, _ = make_burned_in_instance("us", rows=120, columns=160)
    out, reason, report = _clean(src, policy="allow")
    assert reason is None and not report.changed
    assert out.PixelData == src.PixelData
    assert "BurnedInAnnotation" not in out
    assert "113101" not in {i.CodeValue for i in out.DeidentificationMethodCodeSequence}


def test_policy_quarantine_names_the_rule() -> None:
    src, _ = make_burned_in_instance("us", rows=120, columns=160)
    _, reason, _ = _clean(src, policy="quarantine")
    assert reason == (
        "burned-in: modality US, BurnedInAnnotation missing (burned_in_policy is quarantine)"
    )
    assert rule_of("deidentify", reason) is Rule.BURNED_IN
    src.BurnedInAnnotation = "NO"
    assert _clean(src, policy="quarantine")[1] is None


@pytest.mark.parametrize(
    ("modality", "flag", "sop_class", "suspect"),
    [
        ("CT", "YES", None, True),
        ("CT", "NO", None, False),
        ("CT", None, None, False),
        ("US", None, None, True),
        ("US", "NO", None, False),
        ("US", "maybe", None, True),
        ("OT", "", "1.2.840.10008.5.1.4.1.1.7", True),
        ("CT", None, "1.2.840.10008.5.1.4.1.1.7", True),
    ],
)
def test_which_instances_are_examined(
    modality: str, flag: str | None, sop_class: str | None, suspect: bool
) -> None:
    ds = Dataset()
    ds.Modality = modality
    if flag is not None:
        ds.BurnedInAnnotation = flag
    if sop_class:
        ds.SOPClassUID = sop_class
    assert (burned_in_suspicion(ds, SUSPECT) is not None) is suspect


def test_explicit_no_is_trusted_and_not_examined() -> None:
    src, _ = make_burned_in_instance("us", rows=120, columns=160)
    src.BurnedInAnnotation = "NO"
    out, reason, report = _clean(src)
    assert reason is None and report.frames == 0 and out.PixelData == src.PixelData


def test_undecodable_pixels_are_quarantined_with_the_syntax() -> None:
    src, _ = make_burned_in_instance("us", rows=120, columns=160)
    src.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    src.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x04\x00\x00\x00junk"
    src["PixelData"].VR = "OB"
    src["PixelData"].is_undefined_length = True
    _, reason, _ = _clean(src)
    assert reason is not None
    assert reason.startswith("burned-in: pixel data cannot be decoded (transfer syntax JPEG Base")
    assert rule_of("deidentify", reason) is Rule.BURNED_IN


def test_ocr_failure_is_quarantined_with_the_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    src, _ = make_burned_in_instance("us", frames=2, rows=120, columns=160)
    _, reason, _ = _clean(src)
    assert reason == (
        "burned-in: pixel data cannot be analysed "
        "(frame 1 of 2: OCR unavailable: tesseract not found)"
    )


def test_float_pixels_are_quarantined_and_no_pixels_pass() -> None:
    src, _ = make_burned_in_instance("us", rows=8, columns=8)
    del src.PixelData
    assert _clean(src)[1] is None  # no pixels: nothing burned in
    src.FloatPixelData = b"\x00" * 256
    assert _clean(src)[1] == "burned-in: float pixel data cannot be analysed"


def test_clean_pixel_data_code_is_added_once_in_order() -> None:
    out = deidentify(make_burned_in_instance("us", rows=8, columns=8)[0], profile(),
                     pseudonymizer()).dataset  # fmt: skip
    assert out is not None
    before = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    record_clean_pixel_data(out)
    record_clean_pixel_data(out)
    after = [(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning)
             for i in out.DeidentificationMethodCodeSequence]  # fmt: skip
    assert [c[0] for c in after] == sorted([*before, "113101"])
    assert ("113101", "DCM", "Clean Pixel Data Option") in after
