"""The instance index: one CSV row per delivered instance, de-identified metadata only.

Written beside each manifest version as ``<study>/index-v<N>.csv`` (RFC 4180: comma separated,
CRLF line ends, a header row, UTF-8). It is derived from the :class:`Manifest`, so the two always
agree; a spreadsheet or ``pandas.read_csv`` opens it directly.
"""

from __future__ import annotations

import csv
import io

from dicomgate.delivery.manifest import Manifest

__all__ = ["INDEX_COLUMNS", "index_csv", "read_index_csv"]

INDEX_COLUMNS = (
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "sop_class_uid",
    "modality",
    "series_number",
    "instance_number",
    "transfer_syntax_uid",
    "size",
    "sha256",
    "key",
)


def index_csv(manifest: Manifest) -> bytes:
    """The CSV index of ``manifest``'s delivered instances, in manifest order."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(INDEX_COLUMNS)
    for inst in manifest.instances:
        writer.writerow(
            (
                manifest.study_instance_uid,
                inst.series_instance_uid,
                inst.sop_instance_uid,
                inst.sop_class_uid,
                inst.modality or "",
                "" if inst.series_number is None else inst.series_number,
                "" if inst.instance_number is None else inst.instance_number,
                inst.transfer_syntax_uid,
                inst.size,
                inst.sha256,
                inst.key,
            )
        )
    return out.getvalue().encode("utf-8")


def read_index_csv(data: bytes) -> list[dict[str, str]]:
    """Parse an index back into rows (column name → text); checks the header."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
    if tuple(reader.fieldnames or ()) != INDEX_COLUMNS:
        raise ValueError(f"not a dicomgate index: header {reader.fieldnames}")
    return list(reader)
