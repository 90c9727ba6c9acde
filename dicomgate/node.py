"""The node: wires settings, spool, state store, SCP (and pipeline) together; start and stop.

``dicomgate serve`` calls :func:`run_node`. Tests use :class:`Node` directly.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import tempfile
from typing import Any

import pynetdicom.dimse_messages

from dicomgate._logging import configure_logging, get_logger
from dicomgate.config import Settings
from dicomgate.ingest import Ingest
from dicomgate.pseudonym import Pseudonymizer, load_or_create_key
from dicomgate.reconcile import ReconcileReport, reconcile
from dicomgate.scp import StoreSCP
from dicomgate.spool import Spool
from dicomgate.state import InstanceRecord, StateStore

__all__ = ["Node", "run_node"]

log = get_logger(__name__)


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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        key = load_or_create_key(
            key=settings.secret_key.get_secret_value() if settings.secret_key else None,
            key_file=settings.secret_key_file,
            data_dir=settings.data_dir,
        )
        self.pseudonymizer = Pseudonymizer(key)
        self.spool = Spool(
            settings.spool_dir,
            limit=int(settings.spool_limit),
            min_free=int(settings.min_free_space),
        )
        self.state: StateStore | None = None
        self.scp: StoreSCP | None = None
        self.reconcile_report: ReconcileReport | None = None
        self._stored_listeners: list[Any] = []

    def on_stored(self, record: InstanceRecord) -> None:
        """Called in the association thread once an instance is durable and recorded."""
        for listener in self._stored_listeners:
            listener(record)

    def start(self) -> tuple[str, int]:
        self.spool.prepare()
        self.state = StateStore.open(self.settings.state_path)
        self.reconcile_report = reconcile(self.spool, self.state)
        _receive_into(str(self.spool.incoming))
        ingest = Ingest(self.spool, self.state, self.pseudonymizer, on_stored=self.on_stored)
        self.scp = StoreSCP(self.settings, ingest)
        return self.scp.start()

    def stop(self, timeout: float | None = None) -> None:
        # 1. stop accepting; 2. let open associations finish (bounded), abort the rest;
        # 3. close the state store.
        if self.scp is not None:
            self.scp.stop(self.settings.shutdown_timeout if timeout is None else timeout)
        if self.state is not None:
            self.state.close()
            self.state = None


async def _serve(node: Node) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        # Signal handlers only set a flag; a second signal means "now".
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal, exiting at once", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("shutting down", signal=signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    await loop.run_in_executor(None, node.start)
    await stop.wait()
    await loop.run_in_executor(None, node.stop)
    log.info("stopped")
    return 0


def run_node(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; return the process exit status."""
    configure_logging(settings.log_level, settings.log_format)
    try:
        node = Node(settings)
    except (OSError, ValueError) as exc:
        log.error("cannot start", error=str(exc))
        return 2
    try:
        return asyncio.run(_serve(node))
    except OSError as exc:  # e.g. the port is taken
        log.error("cannot start", error=str(exc))
        return 2
