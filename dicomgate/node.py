"""The node: wires settings, spool, state store, SCP and pipeline together; start and stop.

``dicomgate serve`` calls :func:`run_node`; tests use :class:`Node` directly.

Threads: pynetdicom runs the listener and one thread per association; the pipeline runs on an
asyncio loop in its own thread (:class:`~dicomgate.pipeline.LoopThread`); the main thread only
waits for signals.

Start-up either ends with one ``node started`` line saying what this node is (version, bound
addresses, data directory, destination, ``stable_after``, where the key came from) or fails
with a :class:`StartupError` naming the setting to change (``--port`` / ``DICOMGATE_PORT``,
``DICOMGATE_OPS_PORT``, ``--data-dir`` / ``DICOMGATE_DATA_DIR``).
"""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import socket
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import FrameType

import pynetdicom.dimse_messages

from dicomgate import __version__
from dicomgate._host import HostActivity
from dicomgate._logging import configure_logging, get_logger
from dicomgate._tracebacks import safe_traceback
from dicomgate.audit import NULL_TRAIL, AuditTrail
from dicomgate.audit import current as current_audit
from dicomgate.audit import install as install_audit
from dicomgate.audit import trail_for as audit_trail_for
from dicomgate.commitment import CommitmentReporter, CommitmentService, check_call_back_tls
from dicomgate.config import Settings
from dicomgate.delivery import build_notifiers, open_destination
from dicomgate.delivery.destination import public_url
from dicomgate.ingest import Ingest
from dicomgate.mpps import MppsService
from dicomgate.ops import Metrics, OpsServer
from dicomgate.ops.emf import EmfEmitter
from dicomgate.pipeline import LoopThread, Pipeline
from dicomgate.pseudonym import Pseudonymizer, SecretKey, secret_key_for
from dicomgate.quarantine import rule_of
from dicomgate.reconcile import MISSING_FILE, ReconcileReport, reconcile
from dicomgate.scp import StoreSCP
from dicomgate.scp._server import TLS
from dicomgate.spool import Spool, node_dir_name
from dicomgate.state import (
    InstanceRecord,
    StateError,
    StateStore,
    is_shared,
    open_state,
)

__all__ = ["DataDirInUseError", "Node", "StartupError", "run_node"]

log = get_logger(__name__)


class StartupError(RuntimeError):
    """The node cannot start; the message is one sentence naming the setting to change."""


class DataDirInUseError(StartupError):
    """Another dicomgate process holds the data directory."""


_DATA_DIR_SETTING = "--data-dir / DICOMGATE_DATA_DIR"


def _data_dir_error(settings: Settings, exc: OSError | sqlite3.Error | StateError) -> StartupError:
    """The data directory cannot be used: say which one and which setting names it.

    Only the data directory and the OS's reason are quoted, never ``exc.filename``: the failing
    file may be in the spool, whose names are original SOP Instance UIDs.
    """
    path = settings.data_dir.absolute()
    if isinstance(exc, sqlite3.Error | StateError):
        why = f"the state store cannot be opened ({exc})"
    elif isinstance(exc, FileExistsError) or (path.exists() and not path.is_dir()):
        why = "it exists and is not a directory"
    else:
        why = (exc.strerror or type(exc).__name__).lower()
    return StartupError(f"cannot use data directory {path} ({_DATA_DIR_SETTING}): {why}")


def _bind_error(what: str, host: str, port: int, setting: str, exc: OSError) -> StartupError:
    why = (exc.strerror or type(exc).__name__).lower()
    return StartupError(f"cannot listen for {what} on {_address(host, port)} ({setting}): {why}")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _key_fields(key: SecretKey) -> dict[str, str]:
    """How the start-up line tells where the pseudonymization key came from."""
    if key.origin == "setting":
        return {"secret_key": "loaded from DICOMGATE_SECRET_KEY (or the config file)"}
    if key.origin == "secrets_manager":
        return {"secret_key": "loaded from AWS Secrets Manager (DICOMGATE_SECRET_KEY_ARN)"}
    where = str(key.path.absolute()) if key.path is not None else "?"
    if key.origin == "key_file":
        return {"secret_key": "loaded from DICOMGATE_SECRET_KEY_FILE", "secret_key_path": where}
    if key.origin == "data_dir":
        return {"secret_key": "loaded from the data directory", "secret_key_path": where}
    return {
        "secret_key": "generated: back this file up; without it the same patients get "
        "new pseudonyms",
        "secret_key_path": where,
    }


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

    def __init__(
        self,
        settings: Settings,
        *,
        pipeline: bool = True,
        lease_seconds: float | None = None,
        heartbeat_ttl: float | None = None,
        pipeline_workers: int | None = None,
        host: HostActivity | None = None,
        listen_sockets: Mapping[str, socket.socket] | None = None,
    ) -> None:
        self.settings = settings
        self.listen_sockets = listen_sockets  # serve --workers: the supervisor's sockets
        self.pipeline_workers = pipeline_workers
        self.host = host  # serve --workers: the host's other nodes' associations count too
        # the settings' unless a test overrides them
        self.lease_seconds = settings.lease_seconds if lease_seconds is None else lease_seconds
        self.heartbeat_ttl = settings.heartbeat_ttl if heartbeat_ttl is None else heartbeat_ttl
        self._stop_beating = threading.Event()
        self._heart: threading.Thread | None = None
        self.secret_key = self._load_key()
        self.key = self.secret_key.value
        self.pseudonymizer = Pseudonymizer(self.key)
        # Several nodes on one store (a shared backend, serve --workers, or independent
        # processes on one SO_REUSEPORT port): each its own spool sub-directory, staging
        # directory and lock, never another's files.
        self.multi = is_shared(settings) or settings.reuse_port or listen_sockets is not None
        self.spool = Spool(
            settings.spool_root,
            limit=int(settings.spool_limit),
            min_free=int(settings.min_free_space),
            node_id=settings.node_id if self.multi else None,
        )
        self.with_pipeline = pipeline
        self.state: StateStore | None = None
        self.scp: StoreSCP | None = None
        self.commitments: CommitmentReporter | None = None
        self.pipeline: Pipeline | None = None
        self.loop_thread: LoopThread | None = None
        self.reconcile_report: ReconcileReport | None = None
        self.metrics = Metrics()
        self._lock_fd: int | None = None
        self._node_lock_fd: int | None = None
        self.ops: OpsServer | None = None
        self.emf: EmfEmitter | None = None  # metrics_emf: CloudWatch EMF lines on stdout
        self.audit: AuditTrail = NULL_TRAIL  # PS3.15 A.5 audit messages (dicomgate.audit)
        self._audit_started = False

    def _load_key(self) -> SecretKey:
        s = self.settings
        try:
            key = secret_key_for(s)
            Pseudonymizer(key.value)  # refuses a key too short to be one
        except OSError as exc:
            if s.secret_key is None and s.secret_key_file is not None:
                why = (exc.strerror or type(exc).__name__).lower()
                raise StartupError(
                    f"cannot read the secret key file {s.secret_key_file} "
                    f"(DICOMGATE_SECRET_KEY_FILE): {why}"
                ) from None
            raise _data_dir_error(s, exc) from None
        except ValueError as exc:
            raise StartupError(f"unusable secret key: {exc}") from None
        return key

    def on_stored(self, record: InstanceRecord | None) -> None:
        """Called in an association thread once an instance is durable and recorded (and by
        the heartbeat with None when a dead node's work became claimable)."""
        if self.pipeline is not None and self.loop_thread is not None:
            self.loop_thread.call_soon(self.pipeline.wake)

    def _in_flight(self) -> set[str]:
        return self.scp.studies_in_flight() if self.scp is not None else set()

    def _ingest_busy(self) -> bool:
        if self.host is not None:
            return self.host.busy()
        return self.scp is not None and self.scp.busy()

    def _lock_data_dir(self) -> None:
        """One single node per data directory (it renames files straight into ``spool/``),
        or any number of nodes in the multi-node layout (each in its own sub-directory), one
        process per node id: ``dicomgate.lock`` is held exclusively by a single node, shared
        by multi-node ones, each of which also holds ``nodes/<node>.lock`` exclusively."""
        data = self.settings.data_dir
        busy = (
            f"data directory {data.absolute()} ({_DATA_DIR_SETTING}) "
            "is in use by another dicomgate process"
        )
        self._lock_fd = self._flock(data / "dicomgate.lock", shared=self.multi, busy=busy)
        if self.multi:
            own = data / "nodes" / f"{node_dir_name(self.settings.node_id)}.lock"
            self._node_lock_fd = self._flock(
                own,
                shared=False,
                busy=f"node id {self.settings.node_id} (DICOMGATE_NODE_ID) is in use by another "
                "dicomgate process on this data directory",
            )

    def _flock(self, path: Path, *, shared: bool, busy: str) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _data_dir_error(self.settings, exc) from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUseError(busy) from None
        return fd

    def _join(self, state: StateStore) -> None:
        """Enter the store as this node: same key as the others, a heartbeat, and the work of
        nodes that are gone released so it is adopted (each instance exactly once: claims).

        A single node holds the data directory's lock, so every other owner of a claim is a
        previous run of this node (a crash): its claims go at once rather than after their
        leases expire. Among several nodes only those whose heartbeat expired go (and a
        previous process under this node id, whose node lock this process now holds).
        """
        s = self.settings
        if is_shared(s) and not self.secret_key.explicit:
            raise StartupError(
                "a shared state store (DICOMGATE_STATE) needs an explicit pseudonymization key "
                "on every node: set DICOMGATE_SECRET_KEY, DICOMGATE_SECRET_KEY_FILE or "
                "DICOMGATE_SECRET_KEY_ARN"
            )
        fingerprint = self.secret_key.fingerprint
        stored = state.key_fingerprint(fingerprint)
        if stored != fingerprint:
            if is_shared(s):
                raise StartupError(
                    "the state store is shared by nodes with another pseudonymization key: "
                    "set the same DICOMGATE_SECRET_KEY (or DICOMGATE_SECRET_KEY_FILE, "
                    "DICOMGATE_SECRET_KEY_ARN) on every node"
                )
            log.warning(
                "pseudonymization key differs from the one this state store began with: "
                "studies continued now get new pseudonyms"
            )
        # a previous process under this node id is gone (its lock is ours now): its claims too
        released = state.release_node(s.node_id)
        state.heartbeat(s.node_id, info=self._info(), ttl=self.heartbeat_ttl)
        gone = {n.node_id for n in state.nodes() if not n.alive}
        if not self.multi:
            gone |= state.lease_owners() | {n.node_id for n in state.nodes()}
        released += sum(state.release_node(node) for node in gone - {s.node_id})
        if released:
            log.info("work of stopped nodes released", leases=released)

    def _dead_spools(self) -> dict[str, Path]:
        """Spool sub-directories of nodes without a live heartbeat (multi-node layout only):
        reconciled by this node, so files acknowledged by a dead node and never recorded are
        adopted too. (Recorded ones are adopted by claims.)"""
        if self.state is None:
            return {}
        if not self.multi:
            # A single node holds the data directory alone: the nodes/ directories left by an
            # earlier multi-node run (serve --workers) of this data directory are its to adopt —
            # when the spool is this data directory's own (spool_dir not set elsewhere).
            return self.spool.other_nodes() if self.settings.spool_dir is None else {}
        live = {node_dir_name(n.node_id) for n in self.state.nodes() if n.alive}
        dead = {name: d for name, d in self.spool.other_nodes().items() if name not in live}
        if (self.spool.root / "instances").is_dir():
            # the single-node layout of an earlier run (before serve --workers): no node runs
            # in it now (a single node would hold dicomgate.lock exclusively), so it is adopted
            dead["(single-node layout)"] = self.spool.root
        return dead

    def _staging(self) -> Path:
        """Where the pipeline writes de-identified files before upload (per node when several
        share the data directory: a start-up clears its own leftovers only)."""
        staging = self.settings.data_dir / "staging"
        return staging / node_dir_name(self.settings.node_id) if self.multi else staging

    def _info(self) -> dict[str, str]:
        return {"version": __version__, "ae_title": self.settings.ae_title}

    def _heartbeat_loop(self, state: StateStore) -> None:
        """Say "alive" every third of the heartbeat's lifetime; release the work of nodes whose
        heartbeat expired, so this node's pipeline adopts it (claims make that exactly once)."""
        me = self.settings.node_id
        while not self._stop_beating.wait(self.heartbeat_ttl / 3):
            try:
                scp = self.scp
                state.heartbeat(
                    me,
                    open_associations=len(scp.open_associations()) if scp is not None else 0,
                    info=self._info(),
                    ttl=self.heartbeat_ttl,
                )
                dead = [n.node_id for n in state.nodes() if not n.alive and n.node_id != me]
                for node_id in dead:
                    released = state.release_node(node_id)
                    log.warning("node stopped, its work released", node=node_id, leases=released)
                if dead and self.multi:  # its files never recorded are adopted too
                    names = {node_dir_name(n) for n in dead}
                    spools = {k: v for k, v in self.spool.other_nodes().items() if k in names}
                    self._count_quarantines(
                        reconcile(self.spool, state, node_id=me, dead=spools, own=False)
                    )
                if dead:
                    self.on_stored(None)  # work to adopt: the pipeline looks now
            except Exception as exc:  # the store is down for a moment: try again next beat
                log.error(
                    "heartbeat failed", error=type(exc).__name__, traceback=safe_traceback(exc)
                )

    def _count_quarantines(self, report: ReconcileReport) -> None:
        """Quarantines made by reconciliation count in dicomgate_quarantined_total like the
        pipeline's (the pipeline never sees these rows again)."""
        if report.quarantined:
            self.metrics.quarantined.labels(rule_of(*MISSING_FILE).value).inc(report.quarantined)

    def start(self) -> tuple[str, int]:
        try:
            return self._start()
        except BaseException:
            self.stop(timeout=1)  # release what was started (the lock, the loop, the pool)
            raise

    def _start(self) -> tuple[str, int]:
        try:
            check_call_back_tls(self.settings)  # a bad CA file for call-backs: named, at once
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self._lock_data_dir()
        try:
            self.spool.prepare()
            self.state = open_state(self.settings, create=self.settings.state_create)
        except (OSError, sqlite3.Error, StateError) as exc:
            raise _data_dir_error(self.settings, exc) from None
        self._join(self.state)
        self._open_audit()
        self.reconcile_report = reconcile(
            self.spool, self.state, node_id=self.settings.node_id, dead=self._dead_spools()
        )
        self._count_quarantines(self.reconcile_report)
        # The ops port is bound before the DICOM listener announces itself, so a busy ops port
        # is the only error, not one that follows a "listening" line pointing the wrong way.
        if self.settings.ops_enabled:
            self._bind_ops()
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
                lease_seconds=self.lease_seconds,
                staging=self._staging(),
                workers=self.pipeline_workers,
                # one de-identification process per host keeps going while receiving
                deid_while_busy=1 if self.host is None or self.host.index == 0 else 0,
            )
            self.pipeline.publisher.audit = self.audit
            self.loop_thread.run(self.pipeline.start())
        _receive_into(str(self.spool.incoming))
        ingest = Ingest(
            self.spool,
            self.state,
            self.pseudonymizer,
            on_stored=self.on_stored,
            node_id=self.settings.node_id,
        )
        # what senders say: storage commitment (answered by a thread of its own) and MPPS
        self.commitments = CommitmentReporter(
            self.settings,
            self.state,
            open_association=self._report_association,
            metrics=self.metrics,
            lease_seconds=self.lease_seconds,
        )
        self.scp = StoreSCP(
            self.settings,
            ingest,
            self.metrics,
            on_open_count=self.host.set_open if self.host is not None else None,
            commitments=CommitmentService(self.state, self.settings.node_id, self.commitments.wake),
            mpps=MppsService(self.state, self.metrics),
            listen_sockets=self.listen_sockets,
        )
        self.scp.audit = self.commitments.audit = self.audit
        self.scp.gate.on_event = self.audit.on_security_event  # TLS failures, rejections
        s = self.settings
        try:
            address = self.scp.start()
        except OSError as exc:
            if getattr(exc, "listener", None) == TLS:
                raise _bind_error(
                    "DICOM TLS", s.host, s.tls_port, "DICOMGATE_HOST / DICOMGATE_TLS_PORT", exc
                ) from None
            raise _bind_error(
                "DICOM", s.host, s.port, "--host / --port, DICOMGATE_HOST / DICOMGATE_PORT", exc
            ) from None
        except ValueError as exc:  # TlsConfigError: names the file and the setting
            raise StartupError(str(exc)) from None
        if self.ops is not None:
            self._start_ops()
        if s.metrics_emf:
            self.emf = EmfEmitter(
                self.metrics, self.state, node_id=s.node_id, interval=s.metrics_emf_interval
            )
            self.emf.start()
        self.commitments.start()
        self._heart = threading.Thread(
            target=self._heartbeat_loop, args=(self.state,), name="heartbeat", daemon=True
        )
        self._heart.start()
        self._announce(address)
        self.audit.application_start()
        self._audit_started = True
        return address

    def _open_audit(self) -> None:
        """The audit trail (local file, optional syslog sender); a file that cannot be
        opened stops start-up, naming the setting."""
        s = self.settings
        trail = audit_trail_for(s, self.pseudonymizer)
        try:
            self.audit = trail.open()
        except OSError as exc:
            why = (exc.strerror or type(exc).__name__).lower()
            raise StartupError(
                f"cannot write the audit file {trail.path.absolute()} "
                f"(DICOMGATE_AUDIT_FILE, DICOMGATE_DATA_DIR): {why}"
            ) from None
        install_audit(self.audit)

    def reload_tls(self) -> bool:
        """SIGHUP: read the TLS certificate, key and CA files again. New connections get
        them; open associations keep the certificate they were accepted with. False (and the
        old certificate stays) when there is no TLS listener or a file cannot be used."""
        return self.scp.reload_tls() if self.scp is not None else False

    def _report_association(self, assoc_id: str, calling_ae: str) -> object:
        scp = self.scp
        return scp.report_association(assoc_id, calling_ae) if scp is not None else None

    def _announce(self, address: tuple[str, int]) -> None:
        """The one line that says what this node is, for whoever reads the log first."""
        s = self.settings
        ops = _address(*self.ops.address) if self.ops is not None else "disabled"
        scp = self.scp
        plain = scp.plaintext_address if scp is not None else address
        tls = scp.tls_address if scp is not None else None
        fields: dict[str, object] = {
            "version": __version__,
            "node_id": s.node_id,
            "listen": _address(*plain) if plain is not None else "disabled (TLS only)",
            "tls_listen": _address(*tls) if tls is not None else "disabled",
            "ae_title": s.ae_title,
            "ops": ops,
            "data_dir": str(s.data_dir.absolute()),
            "destination": public_url(s.destination_url),
            "stable_after": s.stable_after,
            **_key_fields(self.secret_key),
        }
        if s.s3_endpoint_url:
            fields["s3_endpoint_url"] = public_url(s.s3_endpoint_url)
        log.info("node started", **fields)

    def _bind_ops(self) -> None:
        s = self.settings

        def ready() -> str | None:
            scp = self.scp
            if scp is None or not scp.accepting:
                return "not accepting associations"
            return self.spool.check_room()

        assert self.state is not None
        try:
            self.ops = OpsServer(
                s.ops_host,
                s.ops_port,
                metrics=self.metrics,
                ready=ready,
                studies=self.state.status_report,
                max_connections=s.ops_max_connections,
                request_timeout=s.ops_request_timeout,
            )
        except OSError as exc:
            raise _bind_error(
                "the ops endpoint",
                s.ops_host,
                s.ops_port,
                "DICOMGATE_OPS_HOST / DICOMGATE_OPS_PORT; DICOMGATE_OPS_ENABLED=false turns it off",
                exc,
            ) from None

    def _start_ops(self) -> None:
        state, scp, spool, ops = self.state, self.scp, self.spool, self.ops
        assert state is not None and scp is not None and ops is not None
        self.metrics.watch(
            open_associations=lambda: len(scp.open_associations()),
            spool_bytes=lambda: spool.usage().bytes_used,
            spool_limit=spool.limit,
            backlog=state.backlog,
            node_id=self.settings.node_id,
            claimed=lambda: self.pipeline.claimed() if self.pipeline is not None else 0,
            nodes_alive=lambda: sum(n.alive for n in state.nodes()),
        )
        ops.start()

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
        # 1b. pending storage commitments stay in the store: answered at the next start
        if self.commitments is not None:
            self.commitments.stop()
            self.commitments = None
        # 2. drain the pipeline (bounded); unfinished work resumes at the next start
        if self.pipeline is not None and self.loop_thread is not None:
            try:
                self.loop_thread.run(self.pipeline.stop(timeout), timeout=timeout + 30)
            except TimeoutError:
                log.warning("pipeline did not stop in time; unfinished work resumes at start")
            finally:
                self.loop_thread.stop()
            self.pipeline = None
        # 2b. the last EMF flush, once the drain has counted what it finished
        if self.emf is not None:
            self.emf.stop()
            self.emf = None
        # 2c. the audit trail's last message; its sender gets a moment to deliver the queue
        if self.audit.enabled:
            if self._audit_started:
                self.audit.application_stop()
            self.audit.close()
            if current_audit() is self.audit:
                install_audit(NULL_TRAIL)
            self.audit, self._audit_started = NULL_TRAIL, False
        # 3. leave the store (nothing of this node's is held any more), close it, and let the
        # next node have the data directory
        self._stop_beating.set()
        if self._heart is not None:
            self._heart.join(timeout=10)
            self._heart = None
        if self.state is not None:
            try:
                self.state.release_node(self.settings.node_id)
            except Exception as exc:  # a node that cannot say goodbye simply expires
                log.warning("could not leave the state store", error=type(exc).__name__)
            self.state.close()
            self.state = None
        for fd in (self._node_lock_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._node_lock_fd = None


def run_node(
    settings: Settings,
    *,
    warnings: Iterable[str] = (),
    worker: bool = False,
    pipeline_workers: int | None = None,
    on_started: Callable[[], None] | None = None,
    host: HostActivity | None = None,
    listen_sockets: Mapping[str, socket.socket] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; return the process exit status.

    ``warnings`` (unknown ``DICOMGATE_*`` variables) are logged once logging is set up, so a
    JSON-format node's stderr stays JSON. ``worker``: one of ``serve --workers``' processes
    (see :mod:`dicomgate.supervisor`): its lines carry its node id, and only SIGTERM stops it —
    the supervisor forwards one, and escalates with SIGKILL (acknowledged instances are durable
    already), so a second SIGTERM (systemd signals the whole group too) changes nothing.
    ``on_started``: called once the node serves.
    """
    configure_logging(
        settings.log_level, settings.log_format, node=settings.node_id if worker else None
    )
    for warning in warnings:
        log.warning(warning)
    wake = threading.Event()  # a signal arrived: the main loop looks at once
    reload = threading.Event()  # SIGHUP: reload the TLS certificates

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        reload.set()  # the main loop reloads (a handler must not take locks or do I/O)
        wake.set()

    # installed before the node starts: a SIGHUP sent on "node started" must not kill it
    signal.signal(signal.SIGHUP, on_hangup)
    try:
        node = Node(
            settings, pipeline_workers=pipeline_workers, host=host, listen_sockets=listen_sockets
        )
        node.start()
    except (StartupError, ValueError) as exc:  # port taken, data dir unusable or locked, key
        log.error("cannot start", error=str(exc))
        return 2
    except OSError as exc:  # not the file name: it may be a spool path (an original UID)
        log.error("cannot start", error=exc.strerror or type(exc).__name__)
        return 2
    except Exception as exc:  # anything else: say what, without a traceback full of paths
        log.error("cannot start", error=type(exc).__name__)
        return 2

    if on_started is not None:
        on_started()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Signal handlers only set a flag; a second signal means "now" (acknowledged
        # instances are already durable, so exiting at once loses nothing).
        if stop.is_set():
            if worker:
                return  # the supervisor escalates with SIGKILL
            log.warning("second signal, exiting at once", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("shutting down", signal=signal.Signals(signum).name)
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    # a worker leaves SIGINT (Ctrl-C reaches the whole process group) to its supervisor
    signal.signal(signal.SIGINT, signal.SIG_IGN if worker else on_signal)
    while not stop.is_set():
        wake.wait(0.5)
        wake.clear()
        if reload.is_set() and not stop.is_set():
            reload.clear()
            log.info("reloading tls certificates", signal="SIGHUP")
            node.reload_tls()
    node.stop()
    log.info("stopped")
    return 0
