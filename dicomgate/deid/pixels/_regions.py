"""Per-device fixed regions of burned-in text, blacked out before OCR looks at the image.

Some devices always write the patient's name, ID and the date at the same place (an ultrasound
header band, a screen capture's title bar).  RSNA CTP's ``DicomPixelAnonymizer.script`` lists such
places per manufacturer, model and image size; this is the same idea as a data file
(``data/burned_in_regions.toml``, or the site's own file).  A region is applied whatever OCR finds
there: OCR misses stylised, low-contrast or tiny text, the operator's table does not.

Format (TOML, one ``[[device]]`` table per entry)::

    [[device]]
    manufacturer = "G.E. Medical Systems"  # (0008,0070) contains this, ignoring case; required
    model = "LOGIQ 700"                    # (0008,1090) contains this, ignoring case; "" = any
    rows = 480                             # (0028,0010) exactly; required
    columns = 640                          # (0028,0011) exactly; required
    regions = [[0, 0, 640, 105]]           # [x, y, width, height] in pixels from the top left

Every entry that matches an instance applies (their regions add up).  Regions are clipped to the
image.  An error in the file names the file and the entry (``regions.toml: device 3: ...``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

__all__ = ["DeviceRegions", "Rect", "RegionTable"]


@dataclass(frozen=True, order=True)
class Rect:
    """A rectangle of pixels: ``x``/``y`` its top-left corner (column, row), then its size."""

    x: int
    y: int
    width: int
    height: int

    def clip(self, rows: int, columns: int) -> Rect | None:
        """This rectangle inside a ``rows`` × ``columns`` image, or None when it is outside."""
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(columns, self.x + self.width), min(rows, self.y + self.height)
        if x1 <= x0 or y1 <= y0:
            return None
        return Rect(x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True)
class DeviceRegions:
    """One entry: which instances it is for, and their fixed text regions."""

    manufacturer: str
    model: str
    rows: int
    columns: int
    rects: tuple[Rect, ...]

    def matches(self, manufacturer: str, model: str, rows: int, columns: int) -> bool:
        """CTP's ``containsIgnoreCase`` on the names, ``equals`` on the size."""
        return (
            rows == self.rows
            and columns == self.columns
            and self.manufacturer.casefold() in manufacturer.casefold()
            and self.model.casefold() in model.casefold()
        )


def _int(entry: dict[str, Any], key: str, where: str) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{where}: {key} must be a positive integer")
    return value


def _entry(entry: Any, where: str) -> DeviceRegions:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table")
    unknown = set(entry) - {"manufacturer", "model", "rows", "columns", "regions"}
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]}")
    manufacturer = entry.get("manufacturer")
    if not isinstance(manufacturer, str) or not manufacturer.strip():
        raise ValueError(f"{where}: manufacturer must be a non-empty string")
    model = entry.get("model", "")
    if not isinstance(model, str):
        raise ValueError(f"{where}: model must be a string")
    rows, columns = _int(entry, "rows", where), _int(entry, "columns", where)
    regions = entry.get("regions")
    if not isinstance(regions, list) or not regions:
        raise ValueError(f"{where}: regions must be a non-empty list of [x, y, width, height]")
    rects = []
    for i, region in enumerate(regions, 1):
        if (
            not isinstance(region, list)
            or len(region) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in region)
            or region[0] < 0
            or region[1] < 0
            or region[2] <= 0
            or region[3] <= 0
        ):
            raise ValueError(f"{where}: region {i} must be [x, y, width, height] (integers)")
        rects.append(Rect(*region))
    return DeviceRegions(manufacturer.strip(), model.strip(), rows, columns, tuple(rects))


@dataclass(frozen=True)
class RegionTable:
    """The per-device fixed regions (hashable and picklable, for worker processes)."""

    devices: tuple[DeviceRegions, ...] = ()

    @classmethod
    def parse(cls, text: str, source: str = "regions") -> RegionTable:
        """Parse the TOML text; errors name ``source`` and the entry."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{source}: {exc}") from None
        unknown = set(doc) - {"device"}
        if unknown:
            raise ValueError(f"{source}: unknown key {sorted(unknown)[0]} (expected [[device]])")
        devices = doc.get("device", [])
        if not isinstance(devices, list):
            raise ValueError(f"{source}: device must be an array of tables ([[device]])")
        return cls(tuple(_entry(e, f"{source}: device {i}") for i, e in enumerate(devices, 1)))

    @classmethod
    def load(cls, path: str | Path | None = None) -> RegionTable:
        """The table in ``path``, or the shipped ``data/burned_in_regions.toml`` when None."""
        if path is None:
            text = (
                resources.files("dicomgate.deid")
                .joinpath("data/burned_in_regions.toml")
                .read_text(encoding="utf-8")
            )
            return cls.parse(text, "burned_in_regions.toml")
        p = Path(path)
        return cls.parse(p.read_text(encoding="utf-8"), p.name)

    def regions_for(self, ds: Dataset) -> tuple[Rect, ...]:
        """Every fixed region of the entries matching ``ds``, clipped to its image."""
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        manufacturer = str(ds.get("Manufacturer", "") or "")
        model = str(ds.get("ManufacturerModelName", "") or "")
        found: list[Rect] = []
        for device in self.devices:
            if device.matches(manufacturer, model, rows, columns):
                for rect in device.rects:
                    clipped = rect.clip(rows, columns)
                    if clipped is not None:
                        found.append(clipped)
        return tuple(found)
