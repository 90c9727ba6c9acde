"""Find text in pixels with tesseract OCR (Debian ``tesseract-ocr`` 5, through pytesseract).

Burned-in text on ultrasound and screen captures is small, often white (or coloured) on black,
sometimes dark on a light bar.  Each frame is made 8-bit grey, scaled up (tesseract reads glyphs
of ~20 px best) and read twice: the inverted grey image (bright text becomes dark text;
tesseract binarises it itself, Otsu) and a fixed threshold of the bright pixels (text on a
mid-grey or coloured band, which Otsu merges with its background).  Tesseract's own inverted-line
check (``tessedit_do_invert``) covers dark text on light backgrounds in the first pass.  Words are
kept as text when they hold a letter or digit and look like text (see :func:`_is_text`); their
boxes, widened by a margin, are what gets blacked out.

Multi-frame instances: every frame is examined, but only where it differs from the frame before
(:func:`scan_frames`).  Text on frame *k* either lies where frame *k* differs from frame *k-1*
(read there) or is pixel for pixel the same as on frame *k-1* (read there, by induction); the
boxes of all frames are then blacked out on every frame.  A cine whose overlay never changes is
read once, and text that appears on one frame only is still found.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytesseract  # type: ignore[import-untyped]
from PIL import Image, ImageOps

from dicomgate.deid.pixels._regions import Rect

__all__ = ["OcrError", "ScanResult", "find_text", "scan_frames"]

#: One tesseract thread: workers are processes already, one per core.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

_CONFIG = "--psm 11 --oem 1"  # sparse text in no particular order: overlays, not pages
_BRIGHT = 128  # grey level from which a pixel counts as bright text in the threshold pass
_CHANGED = 16  # grey levels of difference for a pixel to count as changed between frames
_CONTEXT = 24  # pixels read around a changed area, so words cut by it are read whole
_BORDER = 20  # pixels of white added around each image read
_TIMEOUT = 120  # seconds per tesseract call before the instance counts as unanalysable
_MIN_CONFIDENCE = 15  # plain background: words of 4 letters or more (digits: any)
_MIN_CONFIDENCE_SHORT = 60  # plain background: words of 2 or 3 letters
_SURE = 92  # busy background: any word
_PLAIN = 0.45  # share of a text box within 16 grey levels of its background
_INK = 96  # grey levels between the ink and the background (95th percentile)


class OcrError(Exception):
    """OCR could not run (tesseract missing, failed or timed out); a value-free reason."""


def _scale(rows: int, columns: int) -> int:
    side = max(rows, columns)
    return 3 if side <= 320 else 2 if side <= 1280 else 1


@dataclass(frozen=True)
class _Word:
    box: Rect
    text: str
    confidence: float
    line: tuple[int, int, int, int]
    """(pass, block, paragraph, line) as tesseract numbered them."""


def _read(image: Image.Image, scale: int, number: int) -> list[_Word]:
    """The words tesseract reads in one prepared image, boxes in the original's pixels."""
    try:
        data = pytesseract.image_to_data(
            image, config=_CONFIG, output_type=pytesseract.Output.DICT, timeout=_TIMEOUT
        )
    except pytesseract.TesseractNotFoundError:
        raise OcrError("OCR unavailable: tesseract not found") from None
    except RuntimeError:  # pytesseract's timeout
        raise OcrError("OCR timed out") from None
    except pytesseract.TesseractError:
        raise OcrError("OCR failed") from None
    words = []
    for i, text in enumerate(data["text"]):
        word = str(text).strip()
        if not any(c.isalnum() for c in word):
            continue
        left, top = int(data["left"][i]) - _BORDER, int(data["top"][i]) - _BORDER
        right, bottom = left + int(data["width"][i]), top + int(data["height"][i])
        x0, y0 = max(0, left // scale), max(0, top // scale)
        x1, y1 = -(-right // scale), -(-bottom // scale)
        if x1 <= x0 or y1 <= y0:
            continue
        block, par, line_num = data["block_num"][i], data["par_num"][i], data["line_num"][i]
        line = (number, int(block), int(par), int(line_num))
        words.append(_Word(Rect(x0, y0, x1 - x0, y1 - y0), word, float(data["conf"][i]), line))
    return words


def _looks_like_text(gray: np.ndarray, box: Rect) -> bool:
    """Glyphs on a plain background: most of the box is one grey level (the background) and the
    ink stands far from it.  Speckle that tesseract reads as words is neither (measured: real
    header text 0.5-0.8 of the box within 16 levels of its median and 140-255 levels of
    contrast; speckle "words" 0.0-0.5 and 25-190)."""
    patch = gray[box.y : box.y + box.height, box.x : box.x + box.width].astype(np.int16)
    if patch.size == 0:
        return False
    distance = np.abs(patch - int(np.median(patch)))
    return bool(np.mean(distance <= 16) >= _PLAIN and np.percentile(distance, 95) >= _INK)


def _is_text(word: _Word, plain: bool) -> bool:
    """A word worth blacking out: two letters or digits at least, and

    * on a plain background (:func:`_looks_like_text`): any word with a digit, whatever
      tesseract's confidence — identifiers and dates are what it is least sure of
      (``1277126n`` read at confidence 0 on a real ultrasound header); words of four letters
      or more read at all (real headers: ``Semen`` 25 for ``3cm3cm``; speckle: ``Exot`` 0);
      two or three letters need more (speckle gives many of those);
    * on a busy background (text over the image): only what tesseract is sure of, so that
      speckle read as ``ee`` (20-45), ``ay`` (84) or ``a6`` is not blacked out.

    Single characters alone identify no one (and are most of what speckle gives); next to text
    they are masked with it (:func:`find_text`).
    """
    alnum = sum(c.isalnum() for c in word.text)
    if alnum < 2:
        return False
    if not plain:
        return word.confidence >= _SURE
    if any(c.isdigit() for c in word.text):
        return True
    return word.confidence >= (_MIN_CONFIDENCE_SHORT if alnum <= 3 else _MIN_CONFIDENCE)


def _beside(a: Rect, b: Rect) -> bool:
    """``a`` is on the same row as ``b`` and at most one text height away from it."""
    height = max(a.height, b.height)
    rows_overlap = a.y < b.y + b.height and b.y < a.y + a.height
    gap = max(a.x - (b.x + b.width), b.x - (a.x + a.width), 0)
    return rows_overlap and gap <= height


def find_text(gray: np.ndarray) -> list[Rect]:
    """Boxes of the words tesseract reads in one 8-bit grey image (both polarities)."""
    rows, columns = gray.shape
    if rows < 4 or columns < 4:
        return []
    scale = _scale(rows, columns)
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8))
    if scale > 1:
        image = image.resize((columns * scale, rows * scale), Image.Resampling.BICUBIC)
    passes = (
        ImageOps.invert(image),
        image.point(lambda v: 0 if v >= _BRIGHT else 255),
    )
    words: list[_Word] = []
    for number, picture in enumerate(passes):
        # Tesseract misses text that touches the edge of its image (a title bar at the top):
        # a white border gives every line room.
        picture = ImageOps.expand(picture, border=_BORDER, fill=255)
        words += _read(picture, scale, number)
    kept: list[Rect] = []
    kept_lines: set[tuple[int, int, int, int]] = set()
    others: list[_Word] = []
    for word in words:
        if _is_text(word, _looks_like_text(gray, word.box)):
            kept.append(word.box)
            kept_lines.add(word.line)
        else:
            others.append(word)
    # The rest of a line that holds text is text too (the "Q" of "DOE, JANE Q"), and so is a
    # word right beside a text box (psm 11 may split one line into several).
    kept += [w.box for w in others if w.line in kept_lines or any(_beside(w.box, k) for k in kept)]
    return sorted(set(kept))


@dataclass
class ScanResult:
    """What :func:`scan_frames` found and what it cost."""

    boxes: list[Rect]
    frames_read: int = 0
    """Frames OCR read (whole or the part that changed)."""
    pixels_read: int = 0
    """Pixels handed to OCR (before scaling), over all frames."""
    text_frames: tuple[int, ...] = ()
    """1-based numbers of the frames on which text was found."""


def _changed_area(gray: np.ndarray, previous: np.ndarray) -> tuple[int, int, int, int] | None:
    diff = np.abs(gray.astype(np.int16) - previous.astype(np.int16)) > _CHANGED
    rows = np.flatnonzero(diff.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(diff.any(axis=0))
    height, width = gray.shape
    y0, y1 = max(0, int(rows[0]) - _CONTEXT), min(height, int(rows[-1]) + 1 + _CONTEXT)
    x0, x1 = max(0, int(cols[0]) - _CONTEXT), min(width, int(cols[-1]) + 1 + _CONTEXT)
    return y0, y1, x0, x1


def scan_frames(count: int, gray_frame: Callable[[int], np.ndarray]) -> ScanResult:
    """Text boxes over ``count`` frames (``gray_frame(i)`` gives frame ``i``, 0-based, 8-bit).

    Raises :class:`OcrError` with the 1-based frame number when OCR cannot run.
    """
    result = ScanResult(boxes=[])
    found: set[Rect] = set()
    text_frames: list[int] = []
    previous: np.ndarray | None = None
    for index in range(count):
        gray = gray_frame(index)
        height, width = gray.shape
        area = (0, height, 0, width) if previous is None else _changed_area(gray, previous)
        previous = gray
        if area is None:
            continue  # the same as the frame before, whose text is already found
        y0, y1, x0, x1 = area
        try:
            boxes = find_text(gray[y0:y1, x0:x1])
        except OcrError as exc:
            raise OcrError(f"frame {index + 1} of {count}: {exc}") from None
        result.frames_read += 1
        result.pixels_read += (y1 - y0) * (x1 - x0)
        if boxes:
            text_frames.append(index + 1)
            found.update(Rect(b.x + x0, b.y + y0, b.width, b.height) for b in boxes)
    result.boxes = sorted(found)
    result.text_frames = tuple(text_frames)
    return result
