"""Per-patient pseudonyms and date offset, each a pure function of (patient, secret key).

The patient is identified by Patient ID (0010,0020) as received, or by Patient's Name when the ID
is empty.  All three values come from :meth:`Pseudonymizer.digest` under their own domain label,
so they are unrelated to each other and to the UID pseudonyms.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicomgate.pseudonym import Pseudonymizer

__all__ = ["MAX_OFFSET_DAYS", "MIN_OFFSET_DAYS", "PatientPseudonyms", "patient_key"]

#: Dates move back by a whole number of days in [MIN, MAX]: at least a year, so a shifted date
#: never equals the original, and whole days, so times of day and weekdays' spacing survive.
MIN_OFFSET_DAYS = 365
MAX_OFFSET_DAYS = 365 + 3650


def patient_key(ds: Dataset) -> str:
    """What identifies the patient: Patient ID, or Patient's Name when there is no ID."""
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return "id:" + pid
    return "name:" + str(ds.get("PatientName", "") or "").strip()


@dataclass(frozen=True, slots=True)
class PatientPseudonyms:
    """The replacement Patient ID and Patient's Name and the date offset for one patient."""

    patient_id: str
    patient_name: str
    date_offset_days: int

    @classmethod
    def derive(cls, pseudonymizer: Pseudonymizer, key: str) -> PatientPseudonyms:
        token = pseudonymizer.token("patient-id", key, 16)
        span = MAX_OFFSET_DAYS - MIN_OFFSET_DAYS + 1
        n = int.from_bytes(pseudonymizer.digest("date-offset", key)[:8], "big")
        return cls(
            patient_id=f"PAT-{token}",
            patient_name=f"ANONYMOUS^{token}",
            date_offset_days=-(MIN_OFFSET_DAYS + n % span),
        )
