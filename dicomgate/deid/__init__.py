"""De-identification by the standard: DICOM PS3.15 Annex E, compiled from Table E.1-1.

Public API (stable; the pipeline calls these):

* :func:`compile_profile` / :class:`Profile` — the Basic Application Level Confidentiality
  Profile plus any of the ten options and site overrides, compiled once at start-up from the
  shipped table (``data/ps3.15-table-e1-1.csv``); :func:`profile_from_settings` for a node.
* :func:`deidentify` — one dataset in, a :class:`DeidResult` out (a new dataset and what was
  done, or a quarantine reason for possible burned-in text).
* :func:`verify_no_phi` — the independent PHI check; a non-empty list of :class:`Finding` means
  the output must not leave the node.
* :func:`deidentify_file` / :func:`deidentify_bytes` with a picklable :class:`DeidConfig` — for
  a process pool: read, de-identify, verify, write; returns a small :class:`FileResult`.
* :func:`encode_dataset` — a de-identified dataset as DICOM File Format bytes (fast path).
* :class:`PatientPseudonyms` / :func:`patient_key` — the per-patient pseudonyms and date offset.
"""

from dicomgate.deid._engine import DeidResult, deidentify, no_row_code
from dicomgate.deid._patient import PatientPseudonyms, patient_key
from dicomgate.deid._profile import Profile, compile_profile, profile_from_settings
from dicomgate.deid._worker import DeidConfig, FileResult, deidentify_bytes, deidentify_file
from dicomgate.deid._worker import _encode as encode_dataset
from dicomgate.deid.verify import Finding, verify_no_phi

__all__ = [
    "DeidConfig",
    "DeidResult",
    "FileResult",
    "Finding",
    "PatientPseudonyms",
    "Profile",
    "compile_profile",
    "deidentify",
    "deidentify_bytes",
    "deidentify_file",
    "encode_dataset",
    "no_row_code",
    "patient_key",
    "profile_from_settings",
    "verify_no_phi",
]
