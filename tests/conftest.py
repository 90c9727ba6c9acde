"""Shared fixtures: DCMTK tools, in-process nodes, pynetdicom senders."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DCMTK_TOOLS, NodeHandle, start_node
from tests.seaweed import SeaweedFS, run_seaweedfs

# Every process the suite starts inherits this marker (children built from os.environ keep it,
# whatever session or process group they are put in), so the end of the run can find them.
_MARKER = "DGTESTS_RUN_ID"  # not DICOMGATE_*: the node warns of unknown settings
_RUN_ID = uuid.uuid4().hex


def pytest_configure(config: pytest.Config) -> None:
    os.environ[_MARKER] = _RUN_ID


def _leftover_processes() -> dict[int, str]:
    """pid → command line of every process still alive that this run started."""
    wanted = f"{_MARKER}={_RUN_ID}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if state == "Z":  # a zombie holds no pipe; its parent reaps it
            continue
        if "multiprocessing.resource_tracker" in cmdline:
            continue  # the runner's own helper, by design alive until the runner exits
        found[int(entry.name)] = cmdline.strip()[:200]
    return found


@pytest.hookimpl(trylast=True)  # after pytest's own clean-up and reports
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tests stop every process they start: one that outlives the run is a failure, and it is
    killed here — a leftover holding the runner's stdout keeps CI waiting for ever."""
    if not hasattr(session.config, "workerinput"):  # not in an xdist worker
        deadline = time.monotonic() + 10  # processes told to stop may still be exiting
        while (left := _leftover_processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        if left:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            lines = "\n".join(f"  {pid}: {cmd}" for pid, cmd in sorted(left.items()))
            sys.stderr.write(f"\nprocesses started by the tests outlived them (killed):\n{lines}\n")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _status[0] = int(session.exitstatus)


_status = [0]  # the session's exit status, for the watchdog


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Nor may the runner itself hang on its way out (a non-daemon thread, an executor or a
    process pool never shut down, joined at exit): a minute after everything pytest does, every
    thread's stack goes to stderr, loudly, and the runner exits with the session's status."""
    threading.Thread(
        target=_exit_watchdog, args=(_status[0], 60), name="exit-watchdog", daemon=True
    ).start()


def _exit_watchdog(status: int, grace: float) -> None:
    time.sleep(grace)  # a daemon thread: interpreter shutdown that completes never gets here
    sys.stderr.write(f"\nthe test runner did not exit {grace:.0f} s after the session; stacks:\n")
    faulthandler.dump_traceback(all_threads=True)
    left = _leftover_processes()
    if left:
        sys.stderr.write(f"child processes still alive: {left}\n")
    sys.stderr.flush()
    os._exit(status)


@pytest.fixture(scope="session")
def dcmtk() -> dict[str, str]:
    """Paths of DCMTK's tools (Debian package ``dcmtk``); the suite fails loudly without them.

    /usr/bin first: pynetdicom installs Python apps also called ``storescu``/``echoscu``.
    """
    found = {}
    for tool in DCMTK_TOOLS:
        path = f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else shutil.which(tool)
        if path is None:
            pytest.fail(f"DCMTK's {tool} is missing: apt-get install dcmtk (see .ci/run)")
        found[tool] = path
    return found


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeHandle]:
    """A node on 127.0.0.1 with an ephemeral port and default policy, stopped afterwards."""
    with start_node(tmp_path / "data") as handle:
        yield handle


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server on 127.0.0.1, shared by the session (all its ports are ephemeral)."""
    with run_seaweedfs(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def bucket(seaweed: SeaweedFS) -> str:
    """A new, empty bucket on the session's SeaweedFS."""
    name = f"dg-{uuid.uuid4().hex[:12]}"
    seaweed.create_bucket(name)
    return name
