"""``dicomgate serve --workers N``: N node processes sharing one port on one host (issue 8, item 5).

pynetdicom runs one thread per association, all in one process and under one GIL, so a single
node receives on one core however many associations are open. Here N node processes accept on
the same listening socket, made by this supervisor and handed to each. Each is a full node in
the state store's sense — its own node id (``<node_id>-w<i>``), heartbeat, spool sub-directory
and claims — sharing the data directory (SQLite in WAL mode, or the shared backend), the spool
and the key, and adopting each other's work if one dies.

Why one shared socket rather than SO_REUSEPORT (one socket per worker, which ``reuse_port``
still offers for independent processes): the kernel spreads SO_REUSEPORT connections by a hash
of the peer's address and port, so four associations from one modality land on one worker one
time in eight and three-to-one half the time. On a shared socket every idle worker races for
each connection and a busy one (its listener thread waiting for its GIL) tends to lose, so
associations go where there is room; and the socket outlives a worker's restart, so
connections queue meanwhile instead of being refused.

The supervisor (this process) only keeps them running, in order:

1. it makes sure the pseudonymization key exists before any worker starts (two workers
   generating one at once would end with two keys);
2. it binds and listens on the port (and the DICOM TLS port, when TLS is configured), so
   ``--port 0`` gives every worker the same port and a port held by another program fails
   here, once; it never accepts;
3. it starts the workers (spawned processes; worker *i* gets ops port ``ops_port + i`` and
   ``cores / N`` de-identification processes);
4. a worker that fails to start at the first start stops everything (exit 2: it logged why);
   one that dies later is restarted with back-off under the same node id, so it takes its own
   claims back at once and its acknowledged instances are carried on;
5. SIGTERM or SIGINT is forwarded as SIGTERM, each worker drains in the node's order; a second
   signal escalates to SIGKILL (acknowledged instances are durable already). SIGHUP is
   forwarded as it is (each worker reloads its TLS certificates).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, MutableSequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from dicomgate._host import HostActivity
from dicomgate._logging import configure_logging, get_logger
from dicomgate._process import available_cpus, die_with_parent
from dicomgate.config import Settings
from dicomgate.pseudonym import secret_key_for
from dicomgate.scp._server import PLAINTEXT, TLS

__all__ = ["run_workers", "worker_settings"]

log = get_logger(__name__)

#: restart back-off: first delay, doubled per quick death, capped
_BACKOFF_FIRST, _BACKOFF_MAX = 1.0, 30.0
#: a worker that served this long before dying restarts without delay growth
_HEALTHY_AFTER = 60.0


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s settings: its own node id and ops port (the port is the
    supervisor's socket, handed down)."""
    ops_port = settings.ops_port + index if settings.ops_port else 0
    return settings.model_copy(
        update={
            "workers": 1,
            "node_id": f"{settings.node_id}-w{index}",
            "ops_port": ops_port,
        }
    )


def _worker_main(
    settings: Settings,
    pipeline_workers: int,
    started: MutableSequence[int],
    warnings: list[str],
    host: HostActivity,
    listen_sockets: dict[str, socket.socket],
    parent_pid: int,
) -> None:
    """A worker process: one node (``run_node(worker=True)``), dies with the supervisor.
    ``started[host.index]`` becomes 1 once it serves (shared memory: no semaphore to leak)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards SIGTERM
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until run_node reloads on it
    # stopped before it serves (the supervisor is shutting down): exit quietly, nothing held
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    die_with_parent(parent_pid)

    def serving() -> None:
        started[host.index] = 1

    from dicomgate.node import run_node

    sys.exit(
        run_node(
            settings,
            warnings=warnings,
            worker=True,
            pipeline_workers=pipeline_workers,
            on_started=serving,
            host=host,
            listen_sockets=listen_sockets,
        )
    )


@dataclass
class _Worker:
    index: int
    settings: Settings
    process: BaseProcess | None = None
    started_at: float = 0.0
    ever_started: bool = False
    delay: float = _BACKOFF_FIRST
    restart_at: float | None = None


#: connections the kernel queues while every worker is busy accepting
_BACKLOG = 128


def _listen(settings: Settings, port: int) -> socket.socket:
    """The listening socket every worker accepts on (handed to each at spawn: it outlives a
    worker's restart, so connections queue meanwhile instead of being refused)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, port))
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)  # the supervisor never accepts; workers race for each connection
    return sock


def run_workers(settings: Settings, workers: int, *, warnings: Iterable[str] = ()) -> int:
    """Run ``workers`` node processes on one port until SIGTERM/SIGINT; the exit status."""
    configure_logging(settings.log_level, settings.log_format)
    try:
        secret_key_for(settings)  # 1. generated once, here, if the data directory has none
    except (OSError, ValueError) as exc:
        log.error("cannot start", error=f"secret key: {getattr(exc, 'strerror', None) or exc}")
        return 2
    reservations: dict[str, socket.socket] = {}  # listener name (as the SCP names it) -> socket
    update: dict[str, int] = {}
    wanted: list[tuple[str, str, str, str]] = []
    if settings.plaintext:
        wanted.append(
            ("port", PLAINTEXT, "DICOM", "--host / --port, DICOMGATE_HOST / DICOMGATE_PORT")
        )
    if settings.tls_enabled:
        wanted.append(("tls_port", TLS, "DICOM TLS", "DICOMGATE_HOST / DICOMGATE_TLS_PORT"))
    for name, listener, what, setting in wanted:  # 2.
        port = getattr(settings, name)
        try:
            reservations[listener] = _listen(settings, port)
        except OSError as exc:
            for held in reservations.values():
                held.close()
            why = (exc.strerror or type(exc).__name__).lower()
            log.error(
                "cannot start",
                error=f"cannot listen for {what} on {settings.host}:{port} ({setting}): {why}",
            )
            return 2
        update[name] = reservations[listener].getsockname()[1]
    port = update.get("port", settings.port)
    shared = settings.model_copy(update=update)
    per_node = max(1, available_cpus() // workers)
    ctx = multiprocessing.get_context("spawn")
    pool = [_Worker(i, worker_settings(shared, i)) for i in range(workers)]
    warned = list(warnings)
    # every worker's open associations, so receiving comes first host-wide (dicomgate._host)
    counts = ctx.RawArray("i", workers)
    started = ctx.RawArray("i", workers)  # set by each worker once it serves

    def spawn(w: _Worker) -> None:
        w.process = ctx.Process(
            target=_worker_main,
            args=(
                w.settings,
                per_node,
                started,
                warned,
                HostActivity(counts, w.index),
                reservations,
                os.getpid(),
            ),
            name=f"dicomgate-{w.settings.node_id}",
        )
        counts[w.index] = 0  # a dead worker's associations are gone with it
        w.process.start()
        w.started_at = time.monotonic()
        w.restart_at = None

    stopping = threading.Event()
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        stopping.set()

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        for w in pool:  # each worker reloads its TLS certificates
            if w.process is not None and w.process.is_alive() and w.process.pid:
                os.kill(w.process.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    log.info(
        "starting workers",
        workers=workers,
        port=port if settings.plaintext else None,
        tls_port=shared.tls_port if settings.tls_enabled else None,
        node_id=settings.node_id,
    )
    for w in pool:  # 3.
        spawn(w)

    status = 0
    forwarded = 0
    kill_at = float("inf")
    try:
        while True:
            if signals > forwarded:  # 5.
                sig = signal.SIGTERM if forwarded == 0 else signal.SIGKILL
                if forwarded == 0:
                    log.info("shutting down workers", workers=workers)
                else:
                    log.warning("second signal, killing workers")
                for w in pool:
                    if w.process is not None and w.process.is_alive() and w.process.pid:
                        os.kill(w.process.pid, sig)
                forwarded = signals if forwarded else 1
                # each worker's stop is bounded (associations, then the pipeline): past that
                # plus a margin, escalate as a second signal would
                kill_at = time.monotonic() + 2 * settings.shutdown_timeout + 90
            if forwarded == 1 and time.monotonic() > kill_at:
                log.warning("workers did not stop in time, killing them")
                signals = max(signals, 2)
                continue
            alive = [w for w in pool if w.process is not None and w.process.is_alive()]
            if stopping.is_set() and not alive:
                break
            sentinels = [w.process.sentinel for w in alive if w.process is not None]
            multiprocessing.connection.wait(sentinels, timeout=0.5)
            now = time.monotonic()
            for w in pool:
                if started[w.index]:
                    w.ever_started = True
                proc = w.process
                if proc is not None and not proc.is_alive():
                    code = proc.exitcode
                    proc.join()
                    w.process = None
                    if stopping.is_set():
                        if code not in (0, None) and status == 0:
                            status = 1
                        continue
                    if not w.ever_started:  # 4. a start-up error: it logged which setting
                        log.error("worker could not start", node=w.settings.node_id, code=code)
                        status = 2
                        stopping.set()
                        signals = max(signals, 1)
                        continue
                    if now - w.started_at >= _HEALTHY_AFTER:
                        w.delay = _BACKOFF_FIRST  # it had served a while: not a crash loop
                    w.restart_at = now + w.delay
                    w.delay = min(w.delay * 2, _BACKOFF_MAX)
                    log.warning(
                        "worker died, restarting",
                        node=w.settings.node_id,
                        code=code,
                        after_seconds=round(w.restart_at - now, 1),
                    )
                if (
                    w.process is None
                    and w.restart_at is not None
                    and now >= w.restart_at
                    and not stopping.is_set()
                ):
                    spawn(w)
    finally:
        for w in pool:
            if w.process is not None and w.process.is_alive() and w.process.pid:
                os.kill(w.process.pid, signal.SIGKILL)
                w.process.join(5)
        for held in reservations.values():
            held.close()
    log.info("stopped", workers=workers)
    return status
