"""De-identify one file in a worker process: read, de-identify, verify, write.

:class:`DeidConfig` is small and picklable; each process compiles its :class:`Profile` once per
config and keeps it.  :func:`deidentify_file` never raises for a bad instance: it returns a
:class:`FileResult` with a quarantine reason or an error, and writes nothing in that case.  The
output is written to a temporary file beside the target and renamed into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from dicomgate.checks import Refusal, check_header
from dicomgate.deid._diagnose import diagnose
from dicomgate.deid._engine import deidentify
from dicomgate.deid._profile import (
    DEFAULT_SUSPECT_MODALITIES,
    BurnedInPolicy,
    Profile,
    _regions,
    compile_profile,
)
from dicomgate.deid.verify import verify_no_phi
from dicomgate.pseudonym import Pseudonymizer

if TYPE_CHECKING:
    from dicomgate.config import Settings

__all__ = ["DeidConfig", "FileResult", "deidentify_bytes", "deidentify_file", "door_check"]


@dataclass(frozen=True)
class DeidConfig:
    """Everything a worker needs, picklable and hashable (the key is never printed)."""

    key: bytes = field(repr=False)
    options: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()
    burned_in_policy: str = "clean"
    burned_in_regions_file: str | None = None
    burned_in_suspect_modalities: tuple[str, ...] = DEFAULT_SUSPECT_MODALITIES
    verify: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, key: bytes) -> DeidConfig:
        return cls(
            key=key,
            options=tuple(str(o) for o in settings.deid_options),
            keep=tuple(settings.deid_keep),
            remove=tuple(settings.deid_remove),
            replace=tuple(sorted(settings.deid_replace.items())),
            burned_in_policy=settings.effective_burned_in_policy,
            burned_in_regions_file=(
                str(settings.burned_in_regions_file) if settings.burned_in_regions_file else None
            ),
            burned_in_suspect_modalities=tuple(settings.burned_in_suspect_modalities),
        )

    def profile(self) -> Profile:
        return _compiled(self)[0]

    def pseudonymizer(self) -> Pseudonymizer:
        return _compiled(self)[1]


@functools.lru_cache(maxsize=8)
def _compiled(config: DeidConfig) -> tuple[Profile, Pseudonymizer]:
    replace: Mapping[str, str] = dict(config.replace)
    profile = compile_profile(
        config.options,
        keep=config.keep,
        remove=config.remove,
        replace=replace,
        burned_in_policy=cast(BurnedInPolicy, config.burned_in_policy),
        burned_in_regions=_regions(config.burned_in_regions_file),
        burned_in_suspect_modalities=config.burned_in_suspect_modalities,
    )
    return profile, Pseudonymizer(config.key)


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file.  Carries pseudonymized identifiers only."""

    source: str
    output: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sha256: str | None = None
    quarantine_reason: str | None = None
    error: str | None = None
    findings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Written (or ready to write): neither quarantined nor failed."""
        return self.quarantine_reason is None and self.error is None


def _run(ds: Dataset, source: str, config: DeidConfig) -> tuple[FileResult, bytes | None]:
    profile, pz = _compiled(config)
    result = deidentify(ds, profile, pz)
    if result.dataset is None:
        return FileResult(source=source, quarantine_reason=result.quarantine_reason), None
    out = result.dataset
    if config.verify:
        findings = verify_no_phi(ds, out, profile)
        if findings:
            reason = f"PHI check failed: {len(findings)} finding(s)"
            return (
                FileResult(
                    source=source,
                    quarantine_reason=reason,
                    findings=tuple(str(f) for f in findings),
                ),
                None,
            )
    if getattr(out, "file_meta", None) is None:
        error = "no SOP Class/Instance UID: not a storable instance"
        return FileResult(source=source, error=error), None
    data = _encode(out)
    return (
        FileResult(
            source=source,
            sop_instance_uid=str(out.get("SOPInstanceUID", "")) or None,
            study_instance_uid=str(out.get("StudyInstanceUID", "")) or None,
            series_instance_uid=str(out.get("SeriesInstanceUID", "")) or None,
            sha256=hashlib.sha256(data).hexdigest(),
        ),
        data,
    )


def _encode(ds: Dataset) -> bytes:
    """``ds.save_as(buffer, enforce_file_format=True)``, the bytes written.

    For what :func:`deidentify` produces (a File Meta Information of its own, a standard
    transfer syntax, no preamble) this runs the same steps as pydicom's ``dcmwrite`` except
    the deep copy of the File Meta Information (a shallow copy takes the elements it adds);
    anything else goes through ``save_as`` itself.
    """
    meta = ds.file_meta
    ts = meta.get("TransferSyntaxUID")
    if (
        ts is None
        or ts.is_private
        or not ts.is_transfer_syntax
        or ts.is_deflated
        or getattr(ds, "preamble", None) is not None
        or ds.original_encoding[1] not in (None, ts.is_little_endian)
        or any(tag >> 16 in (0, 2) for tag in ds._dict)
    ):
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    file_meta = FileMetaDataset(meta)
    ds_class = ds.get("SOPClassUID", None)
    if "MediaStorageSOPClassUID" not in file_meta or (
        ds_class and ds_class != file_meta.MediaStorageSOPClassUID
    ):
        file_meta.MediaStorageSOPClassUID = ds_class
    ds_instance = ds.get("SOPInstanceUID", None)
    if "MediaStorageSOPInstanceUID" not in file_meta or (
        ds_instance and ds_instance != file_meta.MediaStorageSOPInstanceUID
    ):
        file_meta.MediaStorageSOPInstanceUID = ds_instance
    validate_file_meta(file_meta, enforce_standard=True)
    if "PixelData" in ds:
        ds["PixelData"].is_undefined_length = ts.is_compressed
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = ts.is_implicit_VR, ts.is_little_endian
    fp.write(b"\x00" * 128)
    fp.write(b"DICM")
    write_file_meta_info(fp, file_meta, enforce_standard=True)
    write_dataset(fp, ds)
    return fp.getvalue()


def _read(source: Path | bytes) -> Dataset:
    if isinstance(source, bytes):
        return dcmread(io.BytesIO(source), force=True)
    return dcmread(source, force=True)


def deidentify_bytes(data: bytes, config: DeidConfig) -> tuple[FileResult, bytes | None]:
    """De-identify one instance given as bytes (DICOM File Format); returns the result and
    the de-identified file's bytes (None when quarantined or failed)."""
    ds: Dataset | None = None
    try:
        ds = _read(data)
        return _run(ds, "<bytes>", config)
    except Exception as exc:
        return _failed("<bytes>", ds, exc), None


def _failed(source: str, ds: Dataset | None, exc: Exception) -> FileResult:
    """A failure: an input problem is a quarantine naming it (pydicom's messages quote values,
    so they are not used for it); anything else an error."""
    problem = diagnose(ds)
    if problem is not None:
        return FileResult(source=source, quarantine_reason=f"invalid dataset: {problem}")
    return FileResult(source=source, error=f"{type(exc).__name__}: {exc}")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".deid-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


def door_check(src: Path) -> FileResult | None:
    """The node's door check (:func:`dicomgate.checks.check_header`) on a file to de-identify:
    truncated Pixel Data and the like are held back, never written out; a file that is not
    DICOM at all is a failure, not a quarantine.  None when the file passes."""
    checked = check_header(src, request_sop_class_uid=None, request_sop_instance_uid=None)
    if not isinstance(checked, Refusal):
        return None
    if checked.reason.startswith("dataset cannot be parsed"):
        return FileResult(source=str(src), error=checked.reason)
    # named by its rule (dicomgate.quarantine.Rule.INVALID), as the pipeline's reasons are
    return FileResult(source=str(src), quarantine_reason=f"invalid dataset: {checked.reason}")


def deidentify_file(source: str | Path, output: str | Path, config: DeidConfig) -> FileResult:
    """De-identify the file ``source`` into ``output`` (for a process pool).

    Nothing is written when the instance is quarantined (burned-in text, PHI check) or fails.
    """
    src = Path(source)
    ds: Dataset | None = None
    try:
        ds = _read(src)
        refused = door_check(src)
        if refused is not None:
            return refused
        result, data = _run(ds, str(src), config)
        if data is None:
            return result
        _write_atomic(Path(output), data)
        return dataclasses.replace(result, output=str(output))
    except Exception as exc:
        return _failed(str(src), ds, exc)
