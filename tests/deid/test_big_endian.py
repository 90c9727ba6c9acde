"""Big endian in, little endian out: every value whose byte order is the transfer syntax's
comes out as it went in (PS3.5 7.3, A.3).

Explicit VR Big Endian (retired) is written back as Explicit VR Little Endian when the pixels
are re-encoded.  pydicom's writer converts numbers (US, SS, FL, ...) itself but copies OW, OL,
OF, OD and OV bytes as they are, so palette colour LUT data, segmented LUTs and the like must be
swapped by the re-encoder.  The corpus is every big-endian file of the real-world set (pydicom's
test files and pydicom-data: palette colour ultrasound with plain and segmented LUTs, RGB 8/16/32
bits, MR, enhanced MR, RT Dose, 1-bit SEG).  Each is checked twice:

* forced through the re-encoder with its pixels untouched: the decoded pixel array and every
  word value at any depth (and the palette's RGB) equal the input's;
* through the engine under the default burned-in policy (``clean``): the same, except pixels the
  cleaning blacked out;

and dciodvfy reports no error on either output that it did not report on the input.
"""

from __future__ import annotations

import io
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.pixels import apply_color_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from dicomgate.config import DeidOption
from dicomgate.deid import deidentify, encode_dataset
from dicomgate.deid.pixels import black_value, decode, encode_into
from dicomgate.testing import make_ct_instance
from tests.deid.helpers import profile, pseudonymizer
from tests.deid.realworld import real_world_files
from tests.deid.test_dciodvfy import _errors

_WORD = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _big_endian_files() -> list[Path]:
    found = []
    for path in real_world_files():
        try:
            meta = read_file_meta_info(path)
        except Exception:
            continue
        if meta.get("TransferSyntaxUID") == ExplicitVRBigEndian:
            found.append(path)
    return found


BIG_ENDIAN = _big_endian_files()


def _read(source: Path | bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)


def _words(ds: Dataset, path: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """(where, values) of every word element at any depth, decoded in ``ds``'s byte order."""
    little = ds.original_encoding[1]
    assert little is not None
    for elem in ds:
        where = f"{path}{elem.tag}"
        if elem.VR == "SQ":
            for n, item in enumerate(elem.value):
                yield from _words(item, f"{where}[{n}]")
        elif elem.VR in _WORD and elem.value:
            size = _WORD[elem.VR]
            usable = len(elem.value) - len(elem.value) % size
            dtype = np.dtype(f"{'<' if little else '>'}u{size}")
            yield where, np.frombuffer(elem.value[:usable], dtype=dtype)


_PIXEL_DATA = "(7FE0,0010)"


def _kept_words(src: Dataset, out: Dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Word elements present in both (de-identification removes some, e.g. private ones),
    but the instance's Pixel Data (compared decoded: its samples need not be 16-bit words)."""
    before = dict(_words(src))
    return {k: (before[k], v) for k, v in _words(out) if k in before and k != _PIXEL_DATA}


def _assert_same_words(src: Dataset, out: Dataset) -> None:
    for where, (a, b) in _kept_words(src, out).items():
        assert np.array_equal(a, b), where


def _palette_words(ds: Dataset) -> list[str]:
    return [e.keyword for e in ds if "PaletteColorLookupTableData" in e.keyword]


def _palette_rgb(ds: Dataset) -> np.ndarray:
    """The pixels of ``ds`` through its palette (PS3.3 C.7.6.3.1.5), as displayed.

    pydicom 3.0's ``apply_color_lut`` reads plain (not segmented) palette LUT data as little
    endian whatever the transfer syntax, so for a big-endian input the lookup is done here,
    on the words read in the file's byte order; segmented LUTs it reads right.
    """
    if "SegmentedRedPaletteColorLookupTableData" in ds or ds.original_encoding[1]:
        return apply_color_lut(ds.pixel_array, ds)
    words = dict(_words(ds))
    channels = []
    for colour, tag in (("Red", "(0028,1201)"), ("Green", "(0028,1202)"), ("Blue", "(0028,1203)")):
        entries, first, _ = ds[f"{colour}PaletteColorLookupTableDescriptor"].value
        lut = words[tag]
        index = np.clip(ds.pixel_array.astype(np.int64) - first, 0, (entries or 65536) - 1)
        channels.append(lut[index])
    return np.stack(channels, axis=-1)


def test_the_corpus_has_big_endian_palette_files() -> None:
    """What the tests below rely on: palette LUTs both plain and segmented, in big endian."""
    names = {p.name for p in BIG_ENDIAN}
    assert {"OBXXXX1A_expb.dcm", "gdcm-US-ALOKA-16_big.dcm"} <= names, names
    aloka = _read(next(p for p in BIG_ENDIAN if p.name == "gdcm-US-ALOKA-16_big.dcm"))
    assert aloka.PhotometricInterpretation == "PALETTE COLOR"
    assert "SegmentedRedPaletteColorLookupTableData" in _palette_words(aloka)


@pytest.mark.parametrize("source", BIG_ENDIAN, ids=lambda p: p.name)
def test_re_encoded_as_little_endian_unchanged(source: Path, tmp_path: Path) -> None:
    """Pixels untouched but re-encoded: pixels, every word value and the palette's RGB equal."""
    src = _read(source)
    out = deidentify(src, profile(), pseudonymizer()).dataset
    assert out is not None
    assert encode_into(out, decode(src)) == ExplicitVRLittleEndian
    target = tmp_path / "out.dcm"
    target.write_bytes(encode_dataset(out))
    back = _read(target)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(back.pixel_array, src.pixel_array)
    _assert_same_words(src, back)
    assert _palette_words(back) == _palette_words(src)
    if src.PhotometricInterpretation == "PALETTE COLOR":
        assert np.array_equal(apply_color_lut(back.pixel_array, back), _palette_rgb(src))
    # the source was not changed through the de-identified dataset
    assert src.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    _assert_same_words(_read(source), src)
    if shutil.which("dciodvfy"):
        assert _errors(target) - _errors(source) == set()


@pytest.mark.parametrize("source", BIG_ENDIAN, ids=lambda p: p.name)
def test_cleaned_by_the_engine_unchanged_but_for_the_masks(source: Path, tmp_path: Path) -> None:
    """The engine as the node runs it (burned-in text cleaned): every word value but the
    pixels is the input's, and every pixel is the input's or black (a mask), whichever byte
    order the output was written in."""
    src = _read(source)
    result = deidentify(src, profile(burned_in_policy="clean"), pseudonymizer())
    assert result.dataset is not None, result.quarantine_reason
    target = tmp_path / "out.dcm"
    target.write_bytes(encode_dataset(result.dataset))
    back = _read(target)
    _assert_same_words(src, back)
    assert _palette_words(back) == _palette_words(src)
    before, after = src.pixel_array, back.pixel_array
    black = black_value(decode(back), back)
    same, is_black = before == after, after == black
    if int(src.SamplesPerPixel) > 1:  # a pixel is its samples together
        same, is_black = same.all(axis=-1), is_black.all(axis=-1)
    assert (same | is_black).all()
    assert same.mean() > 0.5  # masks cover text, not the image
    if shutil.which("dciodvfy"):
        assert _errors(target) - _errors(source) == set()


def test_words_inside_sequences_and_overlays_swapped_in_new_items(tmp_path: Path) -> None:
    """A VOI LUT item's LUT Data (OW) and Overlay Data (OW, kept with Clean Graphics) come out
    with their values; the source's item and elements keep their big-endian bytes."""
    ds = make_ct_instance(generate_uid(), generate_uid(), 1, rows=8, columns=8)
    lut = np.array([1, 256, 4096, 65535], dtype=">u2").tobytes()
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.add_new(0x00283006, "OW", lut)  # LUT Data
    ds.VOILUTSequence = [item]
    overlay = np.array([0x0102, 0x0304], dtype=">u2").tobytes()
    for tag, vr, value in (
        (0x60000010, "US", 1), (0x60000011, "US", 32), (0x60000040, "CS", "G"),
        (0x60000050, "SS", [1, 1]), (0x60000100, "US", 1), (0x60000102, "US", 0),
        (0x60003000, "OW", overlay),
    ):  # fmt: skip
        ds.add_new(tag, vr, value)
    ds.PixelData = np.frombuffer(ds.PixelData, dtype="<u2").astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    big = tmp_path / "big.dcm"
    ds.save_as(big, enforce_file_format=True)
    src = _read(big)

    out = deidentify(src, profile([DeidOption.CLEAN_GRAPHICS]), pseudonymizer()).dataset
    assert out is not None and 0x60003000 in out and "VOILUTSequence" in out
    encode_into(out, decode(src))
    back = _read(encode_dataset(out))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.frombuffer(back.VOILUTSequence[0].LUTData, "<u2").tolist() == [1, 256, 4096, 65535]
    assert np.frombuffer(back[0x60003000].value, "<u2").tolist() == [0x0102, 0x0304]
    assert np.array_equal(back.pixel_array, src.pixel_array)
    assert src.VOILUTSequence[0]["LUTData"].value == lut  # the source is not changed
    assert src[0x60003000].value == overlay
    if shutil.which("dciodvfy"):
        target = tmp_path / "out.dcm"
        target.write_bytes(encode_dataset(out))
        assert _errors(target) - _errors(big) == set()
