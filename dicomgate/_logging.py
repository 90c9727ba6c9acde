"""structlog set-up: JSON when not on a terminal, association context bound per thread.

PHI never reaches a log line: :func:`drop_phi` removes any field whose name says it carries a
patient value, and the code logs pseudonymized identifiers (see :mod:`dicomgate.pseudonym`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

__all__ = ["PHI_FIELDS", "configure_logging", "drop_phi", "get_logger"]

# Field names that would carry raw patient values. Anything logged under these names is
# replaced by a marker; the test suite proves no patient value is logged under other names.
PHI_FIELDS = frozenset(
    {
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "patient_address",
        "accession_number",
        "study_instance_uid",
        "series_instance_uid",
        "sop_instance_uid",
        "institution_name",
        "referring_physician_name",
        "other_patient_ids",
    }
)


def drop_phi(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact fields named after patient attributes."""
    for key in PHI_FIELDS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog (and route the stdlib loggers of pynetdicom/boto through it)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_phi,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # pynetdicom logs at INFO for every association and at DEBUG every PDU (with dataset
    # dumps, which would carry PHI): only its warnings and errors are kept.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
