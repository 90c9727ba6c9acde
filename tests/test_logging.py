"""Other libraries' log records and Python warnings go through the redacting pipeline (issue 11,
item 3): pydicom quotes element values ("Invalid value for VR UI: '<original UID>'"), and a
JSON-format node's stderr must hold JSON lines only — worker processes included."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
import structlog
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

import dicomgate._logging as logging_module
from dicomgate._logging import (
    ForeignRecords,
    configure_logging,
    configure_worker_logging,
    current_log_setup,
    get_logger,
    redact,
)
from dicomgate.testing import write_ct_study
from tests.helpers import send_files, serve_process, wait_for

ROOT = Path(__file__).resolve().parent.parent
# Malformed (a letter, a leading zero) so that pydicom warns, quoting them.
BAD_UIDS = [f"1.2.826.0.1.3680043.99.0{i}.x4242" for i in range(5)]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, warnings.filters[:], warnings.showwarning)
    hooks = (threading.excepthook, sys.excepthook, sys.unraisablehook)
    levels = {n: logging.getLogger(n).level for n in ("pydicom", "pynetdicom")}
    current = logging_module._current
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = saved[0], saved[1]
        warnings.filters[:] = saved[2]
        warnings.showwarning = saved[3]
        threading.excepthook, sys.excepthook, sys.unraisablehook = hooks
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        logging_module._current = current


def _json_lines(text: str) -> list[dict[str, object]]:
    """Every line of ``text`` parsed as JSON (fails on any other line)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _malformed_uids() -> None:
    """What reading a dataset with malformed UIDs does: pydicom logs and warns each value."""
    for uid in BAD_UIDS:
        Dataset().FrameOfReferenceUID = uid


def test_redact_removes_quoted_values_and_number_runs() -> None:
    """Quoted spans (quotes inside included) and runs of 6+ digits and dots go; words stay."""
    assert redact(f"Invalid value for VR UI: '{BAD_UIDS[0]}'. Please see <x>") == (
        "Invalid value for VR UI: [redacted]. Please see <x>"
    )
    assert redact("name 'O'Brien^Pat' is too long") == "name [redacted] is too long"
    assert redact('key "studies/x" missing') == "key [redacted] missing"
    assert redact("/spool/instances/1.2.840.99.7~v1.dcm: 20240917") == (
        "/spool/instances/[redacted]~v1.dcm: [redacted]"
    )
    assert redact("The value length (70) exceeds 64 for VR LO") == (
        "The value length (70) exceeds 64 for VR LO"
    )


def test_pydicom_warnings_are_one_redacted_json_line(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """Five malformed UIDs: one JSON line (pydicom's logger and its warning are one template),
    with the logger's name, and no UID; no raw UserWarning text on stderr."""
    configure_logging("info", "json")
    _malformed_uids()
    err = capsys.readouterr().err
    assert not any(uid in err for uid in BAD_UIDS)
    [line] = _json_lines(err)
    assert line["logger"] == "pydicom" and line["level"] == "warning"
    assert str(line["event"]).startswith("Invalid value for VR UI: [redacted].")


def test_warnings_exceptions_and_crashed_threads_are_json_and_safe(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """A warning, another library's logged exception, our own ``log.exception`` and a thread
    that dies: each a JSON line with a safe traceback, no message, no value."""
    configure_logging("info", "json")
    secret = BAD_UIDS[1]
    warnings.warn(f"value '{secret}' looks odd", UserWarning, stacklevel=1)
    try:
        Path(f"/nonexistent/spool/{secret}~v1.dcm").read_bytes()
    except OSError:
        logging.getLogger("botocore.hooks").exception("event handler failed")
        get_logger("dicomgate.test").exception("our step failed")

    def die() -> None:
        raise RuntimeError(f"cannot process {secret}")

    thread = threading.Thread(target=die, name="doomed")
    thread.start()
    thread.join()
    err = capsys.readouterr().err
    assert secret not in err and "Traceback" not in err
    lines = {str(e["event"]): e for e in _json_lines(err)}
    assert lines["value [redacted] looks odd"]["category"] == "UserWarning"
    assert lines["value [redacted] looks odd"]["logger"] == "py.warnings"
    foreign = lines["event handler failed"]
    assert foreign["logger"] == "botocore.hooks" and foreign["error"] == "FileNotFoundError"
    assert "test_logging.py:test_warnings_exceptions" in str(foreign["traceback"])
    ours = lines["our step failed"]
    assert ours["error"] == "FileNotFoundError" and "traceback" in ours
    crashed = lines["thread crashed"]
    assert crashed["thread"] == "doomed" and "test_logging.py:die:" in str(crashed["traceback"])


def test_repeats_of_a_template_are_counted_not_logged() -> None:
    """One (level, redacted message) per interval; the next line says how many were dropped."""
    records = ForeignRecords(every=0.2)

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("pydicom", logging.WARNING, "x.py", 1, msg, args, None)

    assert records.filter(record("Invalid value for VR UI: '%s'", BAD_UIDS[0]))
    assert not records.filter(record("Invalid value for VR UI: '%s'", BAD_UIDS[1]))
    assert not records.filter(record("Invalid value for VR UI: '%s'", BAD_UIDS[2]))
    assert records.filter(record("Invalid value for VR DA: '%s'", "2024"))
    time.sleep(0.25)
    again = record("Invalid value for VR UI: '%s'", BAD_UIDS[3])
    assert records.filter(again)
    assert again.getMessage() == "Invalid value for VR UI: [redacted]"
    assert again.repeated == 2  # type: ignore[attr-defined]


def _worker_main() -> None:
    """Run in a subprocess: a JSON-configured parent, and a spawned pool whose initializer is
    configure_worker_logging with the parent's set-up; the workers read malformed UIDs."""
    configure_logging("info", "json")
    with ProcessPoolExecutor(
        max_workers=2,
        mp_context=get_context("spawn"),
        initializer=configure_worker_logging,
        initargs=(current_log_setup(),),
    ) as pool:
        for future in [pool.submit(_malformed_uids) for _ in range(4)]:
            future.result()


def test_worker_processes_log_through_the_same_pipeline() -> None:
    """pydicom's warnings in a spawned worker (which inherits no logging set-up) are redacted
    JSON on the shared stderr, one line per template per worker."""
    result = subprocess.run(
        [sys.executable, "-c", "from tests.test_logging import _worker_main; _worker_main()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert not any(uid in result.stderr for uid in BAD_UIDS)
    lines = _json_lines(result.stderr)
    assert 1 <= len(lines) <= 2  # one per worker that ran a task
    assert {line["logger"] for line in lines} == {"pydicom"}


def test_node_with_malformed_uids_logs_json_only_without_them(tmp_path: Path) -> None:
    """A real `dicomgate serve` (JSON) de-identifies instances whose Frame of Reference and
    referenced UIDs are malformed: stderr is JSON lines only, and no original UID is in it."""
    paths = write_ct_study(tmp_path / "in", 3, rows=16, columns=16)
    originals: list[str] = []
    for path, bad in zip(paths, BAD_UIDS, strict=False):
        ds = dcmread(path)
        ds[0x00200052] = DataElement(0x00200052, "UI", bad)  # Frame of Reference UID
        ds.save_as(path, enforce_file_format=True)
        originals += [str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), bad]
    with serve_process(tmp_path / "data", env={"DICOMGATE_STABLE_AFTER": "0.5"}) as node:
        assert send_files("127.0.0.1", node.port, paths) == [0, 0, 0]
        assert wait_for(lambda: node.events("study delivered"), timeout=60)
    log = node.log_text()
    assert not any(uid in log for uid in originals)
    _json_lines(log)


class _Writes:
    """A stand-in stderr that records each write() call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_each_line_is_one_write(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    """Every log line reaches stderr in a single write(), newline included: serve --workers'
    processes share one stderr, and a line written in two parts interleaves with another
    worker's into one broken JSON line."""
    stream = _Writes()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("info", "json", node="w1")
    logging_module.get_logger("test").info("reloading tls certificates", signal="SIGHUP")
    logging.getLogger("pynetdicom").warning("a foreign record")
    assert len(stream.calls) == 2
    for call in stream.calls:
        assert call.endswith("\n") and call.count("\n") == 1
        assert json.loads(call)["node"] == "w1"
