"""DIMSE status codes the node answers with, in one place (PS3.4 Annex B.2.3, PS3.7 Annex C)."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Status"]


class Status(IntEnum):
    """C-STORE / C-ECHO response statuses used by dicomgate.

    The 0xA7xx, 0xA9xx and 0xCxxx ranges are the Storage Service Class's own (PS3.4 Table
    B.2-1); the low byte of our 0xC0xx codes tells the sender which door check failed.
    """

    SUCCESS = 0x0000
    #: Refused: out of resources — spool over its limit or the disk is short of space.
    OUT_OF_RESOURCES = 0xA700
    #: Error: Data Set does not match SOP Class (SOP Class UID missing or not the request's).
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: cannot understand — the dataset could not be parsed.
    CANNOT_UNDERSTAND = 0xC000
    #: Error: cannot understand — a required UID (Study/Series/SOP Instance) is missing or invalid.
    INVALID_UID = 0xC001
    #: Error: cannot understand — SOP Instance UID differs from the request's.
    INSTANCE_UID_MISMATCH = 0xC002
    #: Failure: processing failure — an unexpected error in the node (logged with its cause).
    PROCESSING_FAILURE = 0x0110
