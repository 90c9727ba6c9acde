"""The node: wires settings, spool, state store, SCP and pipeline together; start and stop.

``dicomgate serve`` calls :func:`run_node`; tests use :class:`Node` directly.

Threads: pynetdicom runs the listener and one thread per association; the pipeline runs on an
asyncio loop in its own thread (:class:`~dicomgate.pipeline.LoopThread`); the main thread only
waits for signals.
"""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import tempfile
import threading
from types import FrameType

import pynetdicom.dimse_messages

from dicomgate._logging import configure_logging, get_logger
from dicomgate.config import Settings
from dicomgate.delivery import build_notifiers, open_destination
from dicomgate.ingest import Ingest
from dicomgate.ops import Metrics, OpsServer
from dicomgate.pipeline import LoopThread, Pipeline
from dicomgate.pseudonym import Pseudonymizer, key_for
from dicomgate.reconcile import ReconcileReport, reconcile
from dicomgate.scp import StoreSCP
from dicomgate.spool import Spool
from dicomgate.state import InstanceRecord, StateStore

__all__ = ["Node", "run_node"]

log = get_logger(__name__)


class DataDirInUseError(RuntimeError):
    """Another dicomgate process holds the data directory."""


def _receive_into(directory: str) -> None:
    """Make pynetdicom stream C-STORE datasets into ``directory`` (on the spool's filesystem).

    pynetdicom creates its temporary file with a bare ``NamedTemporaryFile`` in the system
    temp dir, usually another filesystem, where the move into the spool would be a copy.
    Rebinding the name pynetdicom uses is narrower than changing ``tempfile.tempdir`` for the
    whole process.
    """
    pynetdicom.dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[attr-defined,assignment]
        tempfile.NamedTemporaryFile, dir=directory
    )


class Node:
    """One dicomgate node. ``start()`` returns once the SCP listens; ``stop()`` is ordered."""

    def __init__(self, settings: Settings, *, pipeline: bool = True) -> None:
        self.settings = settings
        self.key = key_for(settings)
        self.pseudonymizer = Pseudonymizer(self.key)
        self.spool = Spool(
            settings.spool_dir,
            limit=int(settings.spool_limit),
            min_free=int(settings.min_free_space),
        )
        self.with_pipeline = pipeline
        self.state: StateStore | None = None
        self.scp: StoreSCP | None = None
        self.pipeline: Pipeline | None = None
        self.loop_thread: LoopThread | None = None
        self.reconcile_report: ReconcileReport | None = None
        self.metrics = Metrics()
        self._lock_fd: int | None = None
        self.ops: OpsServer | None = None

    def on_stored(self, record: InstanceRecord) -> None:
        """Called in an association thread once an instance is durable and recorded."""
        if self.pipeline is not None and self.loop_thread is not None:
            self.loop_thread.call_soon(self.pipeline.wake)

    def _in_flight(self) -> set[str]:
        return self.scp.studies_in_flight() if self.scp is not None else set()

    def _ingest_busy(self) -> bool:
        return self.scp is not None and self.scp.busy()

    def _lock_data_dir(self) -> None:
        """One node per data directory: two would pick the same version numbers and rename
        over each other's acknowledged files."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.settings.data_dir / "dicomgate.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUseError(
                f"{self.settings.data_dir} is in use by another dicomgate process"
            ) from None
        self._lock_fd = fd

    def start(self) -> tuple[str, int]:
        try:
            return self._start()
        except BaseException:
            self.stop(timeout=1)  # release what was started (the lock, the loop, the pool)
            raise

    def _start(self) -> tuple[str, int]:
        self._lock_data_dir()
        self.spool.prepare()
        self.state = StateStore.open(self.settings.state_path)
        self.reconcile_report = reconcile(self.spool, self.state)
        if self.with_pipeline:
            self.loop_thread = LoopThread()
            self.loop_thread.start()
            self.pipeline = Pipeline(
                self.settings,
                state=self.state,
                spool=self.spool,
                pseudonymizer=self.pseudonymizer,
                key=self.key,
                destination=open_destination(self.settings.destination_url, self.settings),
                notifiers=build_notifiers(self.settings),
                in_flight=self._in_flight,
                ingest_busy=self._ingest_busy,
                metrics=self.metrics,
            )
            self.loop_thread.run(self.pipeline.start())
        _receive_into(str(self.spool.incoming))
        ingest = Ingest(self.spool, self.state, self.pseudonymizer, on_stored=self.on_stored)
        self.scp = StoreSCP(self.settings, ingest, self.metrics)
        address = self.scp.start()
        if self.settings.ops_enabled:
            self._start_ops()
        return address

    def _start_ops(self) -> None:
        state, scp, spool = self.state, self.scp, self.spool
        assert state is not None and scp is not None
        self.metrics.watch(
            open_associations=lambda: len(scp.open_associations()),
            spool_bytes=lambda: spool.usage().bytes_used,
            spool_limit=spool.limit,
            backlog=state.backlog,
        )

        def ready() -> str | None:
            if not scp.accepting:
                return "not accepting associations"
            return spool.check_room()

        self.ops = OpsServer(
            self.settings.ops_host,
            self.settings.ops_port,
            metrics=self.metrics,
            ready=ready,
            studies=state.status_report,
        )
        self.ops.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ordered shutdown (STYLE 6)."""
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        # 0. the ops endpoint goes first: readiness must not say "ready" while stopping
        if self.ops is not None:
            self.ops.stop()
            self.ops = None
        # 1. stop accepting associations; let open ones finish (bounded), abort the rest
        if self.scp is not None:
            self.scp.stop(timeout)
        # 2. drain the pipeline (bounded); unfinished work resumes at the next start
        if self.pipeline is not None and self.loop_thread is not None:
            try:
                self.loop_thread.run(self.pipeline.stop(timeout), timeout=timeout + 30)
            except TimeoutError:
                log.warning("pipeline did not stop in time; unfinished work resumes at start")
            finally:
                self.loop_thread.stop()
            self.pipeline = None
        # 3. close the state store and let the next node have the data directory
        if self.state is not None:
            self.state.close()
            self.state = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def run_node(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; return the process exit status."""
    configure_logging(settings.log_level, settings.log_format)
    try:
        node = Node(settings)
        node.start()
    except (OSError, ValueError, DataDirInUseError) as exc:  # port taken, bad key, dir locked
        log.error("cannot start", error=str(exc))
        return 2
    except Exception as exc:  # anything else: say what, without a traceback full of paths
        log.error("cannot start", error=type(exc).__name__)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Signal handlers only set a flag; a second signal means "now" (acknowledged
        # instances are already durable, so exiting at once loses nothing).
        if stop.is_set():
            log.warning("second signal, exiting at once", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("shutting down", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(0.5):
        pass
    node.stop()
    log.info("stopped")
    return 0
