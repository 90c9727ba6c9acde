"""Catch-all loops log where they failed, without a value or a path (issue 11, item 7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from structlog.testing import capture_logs

import dicomgate.pipeline._publisher as publisher_module
from dicomgate._tracebacks import safe_traceback
from dicomgate.testing import write_ct_study
from tests.helpers import send_files, start_node, wait_for

SECRET_UID = "1.2.826.0.1.3680043.99.424242"


def _inner() -> None:
    raise ValueError(f"Invalid value for VR UI: '{SECRET_UID}'")


def _outer() -> None:
    try:
        _inner()
    except ValueError as exc:
        raise OSError(2, "No such file", f"/data/spool/instances/{SECRET_UID}~v1.dcm") from exc


def test_safe_traceback_names_frames_and_causes_but_no_message() -> None:
    """Types, functions and lines of the whole chain; none of the messages or paths."""
    with pytest.raises(OSError) as info:
        _outer()
    text = safe_traceback(info.value)
    assert "builtins.FileNotFoundError at test_tracebacks.py:_outer:" in text
    assert "caused by builtins.ValueError at test_tracebacks.py:_inner:" in text
    assert SECRET_UID not in text and "spool" not in text and "Invalid value" not in text


def test_safe_traceback_of_library_frames_is_package_relative() -> None:
    """A frame inside an installed library is named from its package, not the machine's path."""
    try:
        dcmread(Path("/nonexistent") / SECRET_UID)
    except FileNotFoundError as exc:
        text = safe_traceback(exc)
    assert "pydicom/filereader.py:dcmread:" in text
    assert "site-packages" not in text and SECRET_UID not in text


def test_publication_failure_is_logged_with_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing publication logs its frames (not just "RuntimeError") and no original UID."""
    paths = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    failures = [RuntimeError(f"cannot write {uid}")]
    real = publisher_module.publish_manifest

    async def flaky(dest: Any, manifest: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(dest, manifest)

    monkeypatch.setattr(publisher_module, "publish_manifest", flaky)
    monkeypatch.setattr(publisher_module, "backoff", lambda n, cap: 0.1)
    with capture_logs() as logs, start_node(tmp_path / "d", pipeline=True, stable_after=0.2) as n:
        assert send_files(n.host, n.port, paths) == [0]
        assert n.node.state is not None
        assert wait_for(lambda: n.node.state.study(uid).manifest_version == 1, timeout=20)  # type: ignore[union-attr]
    [failed] = [e for e in logs if e["event"] == "study publication failed, will retry"]
    assert "pipeline/_publisher.py:_publish:" in failed["traceback"]
    assert uid not in repr(logs)
