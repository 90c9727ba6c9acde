"""Pixel data for the Clean Pixel Data Option (PS3.15 E.3.1): decode, find text, mask, encode.

* :mod:`._codec` — every frame to numpy and back (the transfer syntaxes the node accepts);
* :mod:`._ocr` — text boxes by tesseract OCR, every frame examined;
* :mod:`._regions` — per-device fixed regions from a TOML data file (RSNA CTP's idea).

:func:`dicomgate.deid._burned_in.clean_burned_in` puts them together.
"""

from dicomgate.deid.pixels._codec import Decoded, PixelError, black_value, decode, encode_into
from dicomgate.deid.pixels._ocr import OcrError, ScanResult, find_text, scan_frames
from dicomgate.deid.pixels._regions import DeviceRegions, Rect, RegionTable

__all__ = [
    "Decoded",
    "DeviceRegions",
    "OcrError",
    "PixelError",
    "Rect",
    "RegionTable",
    "ScanResult",
    "black_value",
    "decode",
    "encode_into",
    "find_text",
    "scan_frames",
]
