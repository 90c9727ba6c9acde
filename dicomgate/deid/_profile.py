"""Compile PS3.15 Table E.1-1 and the chosen options into a :class:`Profile`.

PS3.15 E.3: an option's column replaces the Basic Profile's action for the rows where the option
gives one.  When two enabled options give different codes for the same row (both are always K or
C), C wins: cleaning keeps less than keeping.  Retain Longitudinal Temporal Information with Full
Dates and with Modified Dates contradict each other (keep dates vs shift them), so asking for both
is an error.

Site overrides (``deid_keep`` / ``deid_remove`` / ``deid_replace``) are applied after the profile
and win over it; they name attributes by keyword or by tag (``GGGGEEEE``, ``(GGGG,EEEE)``).
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from pydicom.datadict import tag_for_keyword

from dicomgate.config import DeidOption
from dicomgate.deid._table import TableRow, load_table
from dicomgate.deid.pixels._regions import RegionTable

if TYPE_CHECKING:
    from dicomgate.config import Settings

#: what happens to instances that may show burned-in text (:mod:`dicomgate.deid._burned_in`)
BurnedInPolicy = Literal["clean", "quarantine", "allow"]

__all__ = [
    "DEFAULT_SUSPECT_MODALITIES",
    "BurnedInPolicy",
    "DateMode",
    "Profile",
    "compile_profile",
    "load_safe_private",
    "parse_tag",
    "profile_from_settings",
]

DateMode = Literal["remove", "keep", "shift"]

#: Modalities that often carry burned-in text (same default as ``Settings``).
DEFAULT_SUSPECT_MODALITIES = ("US", "OT", "SC", "XC", "ES", "GM", "SM", "DOC")

_TAG_FORMS = (
    re.compile(r"^([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})$"),
    re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?$"),
)


def parse_tag(name: str) -> int:
    """A tag from a keyword (``PatientName``) or hex (``00100010``, ``(0010,0010)``)."""
    text = name.strip()
    for form in _TAG_FORMS:
        m = form.match(text)
        if m:
            return int(m[1] + m[2], 16)
    tag = tag_for_keyword(text)
    if tag is None:
        raise ValueError(f"{name!r} is neither a DICOM keyword nor a tag (GGGGEEEE)")
    return int(tag)


@functools.cache
def load_safe_private() -> frozenset[tuple[str, int, int]]:
    """The safe private attributes: ``(creator, group, element byte)``.

    ``data/safe-private.csv`` holds entries of PS3.15 Table E.3.10-1 (2026c), each checked
    against the standard's DocBook source.  It is a subset of that table: an attribute missing
    from it is removed, which is the safe direction.  Creators compare case-sensitively after
    stripping spaces, as PS3.5 7.8.1 defines the Private Creator value.
    """
    text = (
        resources.files("dicomgate.deid")
        .joinpath("data/safe-private.csv")
        .read_text(encoding="utf-8")
    )
    return frozenset(
        (rec["creator"].strip(), int(rec["group"], 16), int(rec["element"], 16))
        for rec in csv.DictReader(io.StringIO(text))
    )


@dataclass(frozen=True)
class Profile:
    """The compiled rules: what to do with each attribute.  Build it with :func:`compile_profile`.

    ``rules`` maps each single-tag row of Table E.1-1 to its effective action code under the
    options; the wildcard rows and the private row have their own fields.  ``overrides`` are the
    site's: ``K`` keep, ``X`` remove, ``R`` replace with ``replacements[tag]``.
    """

    options: frozenset[DeidOption]
    rules: Mapping[int, str]
    curve_code: str
    overlay_data_code: str
    overlay_comments_code: str
    private_code: str
    overrides: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    replacements: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    safe_private: frozenset[tuple[str, int, int]] = frozenset()
    #: instances that may show burned-in text: ``clean`` (OCR + mask, PS3.15 E.3.1),
    #: ``quarantine`` or ``allow`` (deliver unchanged)
    burned_in_policy: BurnedInPolicy = "clean"
    burned_in_regions: RegionTable = field(default_factory=RegionTable.load)
    burned_in_suspect_modalities: frozenset[str] = frozenset(DEFAULT_SUSPECT_MODALITIES)

    @property
    def date_mode(self) -> DateMode:
        """How dates fare: removed (Basic), kept (Full Dates) or shifted (Modified Dates)."""
        if DeidOption.RETAIN_LONGITUDINAL_FULL_DATES in self.options:
            return "keep"
        if DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options:
            return "shift"
        return "remove"

    @property
    def retain_uids(self) -> bool:
        return DeidOption.RETAIN_UIDS in self.options


def effective_code(row: TableRow, options: frozenset[DeidOption]) -> str:
    """The row's action under ``options``: an enabled option's cell replaces the Basic code."""
    cells = {code for opt, code in row.options if opt in options}
    if not cells:
        return row.basic
    return "C" if "C" in cells else "K"


def compile_profile(
    options: Iterable[DeidOption | str],
    *,
    keep: Iterable[str] = (),
    remove: Iterable[str] = (),
    replace: Mapping[str, str] | None = None,
    burned_in_policy: BurnedInPolicy = "clean",
    burned_in_regions: RegionTable | None = None,
    burned_in_suspect_modalities: Iterable[str] = DEFAULT_SUSPECT_MODALITIES,
) -> Profile:
    """Compile Table E.1-1 with ``options`` and the site overrides into a :class:`Profile`.

    Raises :class:`ValueError` for an unknown option, a contradictory pair of options, or an
    override that names no attribute.
    """
    opts = frozenset(DeidOption(o) for o in options)
    if {
        DeidOption.RETAIN_LONGITUDINAL_FULL_DATES,
        DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    } <= opts:
        raise ValueError(
            "retain_longitudinal_full_dates and retain_longitudinal_modified_dates exclude "
            "each other (PS3.15 E.3.6): choose one"
        )
    rules: dict[int, str] = {}
    wild: dict[str, str] = {}
    for row in load_table():
        code = effective_code(row, opts)
        tag = row.tag
        if tag is None:
            wild[row.tag_text] = code
        else:
            rules[tag] = code
    overrides: dict[int, str] = {}
    replacements: dict[int, str] = {}
    for name in keep:
        overrides[parse_tag(name)] = "K"
    for name in remove:
        overrides[parse_tag(name)] = "X"
    for name, value in (replace or {}).items():
        tag = parse_tag(name)
        overrides[tag] = "R"
        replacements[tag] = value
    private_row = next(k for k in wild if k.startswith("(gggg,eeee)"))
    return Profile(
        options=opts,
        rules=MappingProxyType(rules),
        curve_code=wild["(50xx,xxxx)"],
        overlay_data_code=wild["(60xx,3000)"],
        overlay_comments_code=wild["(60xx,4000)"],
        private_code=wild[private_row],
        overrides=MappingProxyType(overrides),
        replacements=MappingProxyType(replacements),
        safe_private=load_safe_private() if DeidOption.RETAIN_SAFE_PRIVATE in opts else frozenset(),
        burned_in_policy=burned_in_policy,
        burned_in_regions=burned_in_regions if burned_in_regions is not None else _regions(),
        burned_in_suspect_modalities=frozenset(m.upper() for m in burned_in_suspect_modalities),
    )


@functools.cache
def _regions(path: str | None = None) -> RegionTable:
    """The per-device fixed regions (the shipped table, or ``path``), read once per process."""
    return RegionTable.load(path)


def profile_from_settings(settings: Settings) -> Profile:
    """The profile a node (or ``dicomgate deidentify``) runs with under ``settings``."""
    return compile_profile(
        settings.deid_options,
        keep=settings.deid_keep,
        remove=settings.deid_remove,
        replace=settings.deid_replace,
        burned_in_policy=settings.effective_burned_in_policy,
        burned_in_regions=_regions(
            str(settings.burned_in_regions_file) if settings.burned_in_regions_file else None
        ),
        burned_in_suspect_modalities=settings.burned_in_suspect_modalities,
    )
