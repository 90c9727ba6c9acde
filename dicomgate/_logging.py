"""structlog set-up: JSON when not on a terminal, association context bound per thread.

PHI never reaches a log line (README promise 2):

* the node's own lines: :func:`drop_phi` removes any field whose name says it carries a patient
  value, and the code logs pseudonymized identifiers (see :mod:`dicomgate.pseudonym`);
* other libraries' records (pydicom, pynetdicom, botocore, asyncio, ...) and Python warnings:
  their messages quote values — pydicom's ``Invalid value for VR UI: '1.2…'`` is an original UID
  — so :class:`ForeignRecords` keeps the logger, the level and the message with every quoted span
  and long digit/dot run replaced (:func:`redact`), and lets one message template through per
  hour (a malformed UID in every instance of a study would otherwise flood);
* exceptions, ours or theirs, are logged as a :func:`~dicomgate._tracebacks.safe_traceback`
  (types and frames, never a message, a path or a local variable);
* with the JSON format, stderr carries JSON lines only: warnings, uncaught exceptions (threads
  included) and "exception ignored" reports go through the same pipeline.

Worker processes (spawned: they inherit nothing) call :func:`configure_worker_logging` with the
parent's :func:`current_log_setup` in their pool initializer.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from dicomgate._tracebacks import safe_traceback

__all__ = [
    "PHI_FIELDS",
    "ForeignRecords",
    "LogSetup",
    "configure_logging",
    "configure_worker_logging",
    "current_log_setup",
    "drop_phi",
    "get_logger",
    "redact",
    "safe_exc_info",
]

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
REDACTED = "[redacted]"

# A quoted span runs from the first quote to the last of its kind: a quoted value can hold the
# same quote (O'Brien), and over-redacting the text between two values costs nothing.
_SINGLE_QUOTED = re.compile(r"'.*'", re.DOTALL)
_DOUBLE_QUOTED = re.compile(r'".*"', re.DOTALL)
# UIDs, dates, times, IDs of digits, spool file names: six or more digits and dots.
_NUMBERS = re.compile(r"[0-9][0-9.]{5,}")
_MAX_MESSAGE = 1000


def redact(message: str) -> str:
    """``message`` without what may be a value: quoted spans and long digit/dot runs."""
    text = _SINGLE_QUOTED.sub(REDACTED, message)
    text = _DOUBLE_QUOTED.sub(REDACTED, text)
    text = _NUMBERS.sub(REDACTED, text)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


def drop_phi(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact fields named after patient attributes."""
    for key in PHI_FIELDS.intersection(event_dict):
        event_dict[key] = REDACTED
    return event_dict


def safe_exc_info(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor in place of ``format_exc_info``: ``log.exception(...)`` and
    ``exc_info=`` give a ``traceback`` field from :func:`safe_traceback`, never the exception's
    text (it quotes values and spool paths) nor its frames' locals (rich's console renderer)."""
    exc_info = event_dict.pop("exc_info", None)
    exc: BaseException | None = None
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    elif exc_info:
        exc = sys.exc_info()[1]
    if exc is not None:
        event_dict.setdefault("error", type(exc).__name__)
        event_dict.setdefault("traceback", safe_traceback(exc))
    return event_dict


class ForeignRecords(logging.Filter):
    """Handler filter for stdlib records (every one is another library's: the node logs through
    structlog directly): message redacted (:func:`redact`), exception turned into a
    ``traceback`` field, and repeats of one (level, redacted message) dropped for ``every``
    seconds — the next one carries ``repeated``, the number dropped."""

    def __init__(self, every: float = 3600.0, max_templates: int = 1000) -> None:
        super().__init__()
        self._every = every
        self._max = max_templates
        self._seen: dict[tuple[int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = redact(record.getMessage())
        except Exception:  # arguments that do not fit the format: the format alone
            text = redact(str(record.msg))
        key = (record.levelno, text)
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self._every:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            if len(self._seen) >= self._max:
                self._seen.clear()
            self._seen[key] = (now, 0)
        record.msg, record.args = text, ()
        if last is not None and last[1]:
            record.repeated = last[1]
        if record.exc_info and record.exc_info[1] is not None:
            record.error = type(record.exc_info[1]).__name__
            record.traceback = safe_traceback(record.exc_info[1])
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning``: a warning is a log record of ``py.warnings`` (so redacted and
    de-duplicated like the rest), not text on stderr.  pydicom's ``warn_and_log`` also logs the
    same message to the ``pydicom`` logger: the two are one template, logged once."""
    logging.getLogger("py.warnings").warning(
        "%s", str(message), extra={"category": category.__name__}
    )


def _thread_crashed(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        get_logger(__name__).error(
            "thread crashed",
            thread=args.thread.name if args.thread is not None else None,
            error=args.exc_type.__name__,
            traceback=safe_traceback(args.exc_value),
        )


def _crashed(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    get_logger(__name__).critical("crashed", error=kind.__name__, traceback=safe_traceback(exc))


def _unraisable(args: sys.UnraisableHookArgs) -> None:
    """'Exception ignored in: <repr>': the object's repr could quote a value, so the type only."""
    if args.exc_value is not None:
        get_logger(__name__).warning(
            "exception ignored",
            error=args.exc_type.__name__,
            traceback=safe_traceback(args.exc_value),
        )


@dataclass(frozen=True)
class LogSetup:
    """What :func:`configure_logging` chose (``fmt`` resolved to ``json`` or ``console``):
    small and picklable, for worker processes to log the same way as their parent."""

    level: str = "info"
    fmt: str = "auto"
    #: the node id every line carries when several nodes share one stderr (serve --workers)
    node: str | None = None


_current: LogSetup | None = None


def current_log_setup() -> LogSetup | None:
    """This process's logging set-up, or None before :func:`configure_logging`."""
    return _current


def configure_logging(
    level: str = "info", fmt: str = "auto", *, node: str | None = None
) -> LogSetup:
    """Configure structlog, and route the stdlib loggers (pydicom, pynetdicom, boto) and
    warnings through it, redacted; return the set-up for worker processes. ``node``: a node
    id added to every line (several nodes writing to one stderr)."""
    global _current
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())

    def add_node(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        event.setdefault("node", node)
        return event

    shared: list[Any] = [
        *([add_node] if node is not None else []),
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_phi,
        safe_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # one write() per line (PrintLogger writes the message and the newline apart): the
        # workers of serve --workers share one stderr, and two lines written at once must not
        # interleave into one broken JSON line (a pipe keeps writes <= PIPE_BUF whole)
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ForeignRecords())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=("category", "repeated", "error", "traceback")),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # pynetdicom logs at INFO for every association and at DEBUG every PDU, and pydicom at
    # DEBUG every element read (both with values): only their warnings and errors are kept.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("pydicom").setLevel(logging.WARNING)
    # Every UserWarning reaches the filter above, which de-duplicates by template with a bounded
    # memory; "default" would remember each distinct text (each malformed UID) for ever.
    warnings.filterwarnings("always", category=UserWarning)
    warnings.showwarning = _show_warning
    threading.excepthook = _thread_crashed
    sys.excepthook = _crashed
    sys.unraisablehook = _unraisable
    _current = LogSetup(level=level, fmt="json" if use_json else "console", node=node)
    return _current


def configure_worker_logging(setup: LogSetup | None = None) -> None:
    """Pool initializer: a worker logs like its parent (``setup``, from the parent's
    :func:`current_log_setup`; the defaults when the parent never configured logging), so
    pydicom's warnings in a worker are redacted JSON too, not raw text on the shared stderr."""
    setup = setup or LogSetup()
    configure_logging(setup.level, setup.fmt, node=setup.node)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
