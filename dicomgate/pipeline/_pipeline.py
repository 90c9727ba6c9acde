"""The asyncio pipeline: spool → validate → de-identify → verify → upload → manifest → notify.

The state store is the queue. A feeder *claims* instances still to carry (``received`` or
``processed``, so whatever was unfinished at the last stop resumes) under this node's id — a
lease, renewed while the instance is carried, that every later transition checks (another node
sharing the store never carries the same instance; a lease lost means drop it) — and hands them
to bounded queues; processors run the CPU-heavy stages in a process pool; uploaders put the staged
de-identified files to the destination with retries; the study tracker publishes a manifest,
links and a notification once a study is complete.

Failures that can be retried (network, throttling, 5xx) are retried with exponential backoff
and jitter for ``retry_for`` seconds; failures that cannot (invalid dataset, burned-in text,
verification failed, access denied) quarantine the instance with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from dicomgate._logging import current_log_setup, get_logger
from dicomgate._process import available_cpus
from dicomgate._tracebacks import safe_traceback
from dicomgate.config import Settings
from dicomgate.deid import DeidConfig
from dicomgate.delivery import (
    CONTENT_TYPE_DICOM,
    DeliveryError,
    Destination,
    Notifier,
    RetryableDeliveryError,
    instance_key,
)
from dicomgate.delivery.destination import public_url
from dicomgate.ops.metrics import Metrics
from dicomgate.pipeline._publisher import StudyPublisher
from dicomgate.pipeline._retry import backoff
from dicomgate.pipeline._work import WorkOrder, WorkResult, process_instance, worker_init
from dicomgate.pipeline.validate import AcceptRules
from dicomgate.pseudonym import Pseudonymizer
from dicomgate.quarantine import rule_of
from dicomgate.spool import Spool
from dicomgate.state import (
    DEFAULT_LEASE_SECONDS,
    InstanceKey,
    InstanceRecord,
    InstanceState,
    Lease,
    LeaseLost,
    StateStore,
)

__all__ = ["Pipeline"]

log = get_logger(__name__)

_MAX_WORKER_CRASHES = 3
_TRACK_MAX = 1.0  # seconds: the study tracker looks at least this often
_TRACK_MIN = 0.25  # ... and at most every this many seconds plus its own time
_PURGE_EVERY = 2.0  # seconds between looks for delivered raw copies to remove
_UPLOAD_TURN = 5.0  # seconds: while receiving, uploads wait one turn, then run one turn


class Pipeline:
    """Carries spooled instances to the destination and publishes complete studies."""

    def __init__(
        self,
        settings: Settings,
        *,
        state: StateStore,
        spool: Spool,
        pseudonymizer: Pseudonymizer,
        key: bytes,
        destination: Destination,
        notifiers: Sequence[Notifier],
        in_flight: Callable[[], Collection[str]] = frozenset,
        ingest_busy: Callable[[], bool] = lambda: False,
        metrics: Metrics | None = None,
        workers: int | None = None,
        deid_while_busy: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        staging: Path | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.node_id = settings.node_id
        self.lease_seconds = lease_seconds
        self.spool = spool
        self.destination = destination
        self._pz = pseudonymizer
        self._in_flight_studies = in_flight
        self._ingest_busy = ingest_busy
        self._metrics = metrics
        self._deid = DeidConfig.from_settings(settings, key)
        self._rules = AcceptRules.build(
            modalities=settings.accept_modalities,
            sop_classes=settings.accept_sop_classes,
            required=settings.require_attributes,
        )
        self._workers = workers or available_cpus()
        # de-identification processes that keep going while associations are open (0 for all
        # but one node of a host's serve --workers: the host's cores go to receiving)
        self._deid_while_busy = deid_while_busy
        self.staging = staging or settings.data_dir / "staging"
        self._pool: ProcessPoolExecutor | None = None
        self._process_q: asyncio.Queue[InstanceRecord] = asyncio.Queue(self._workers * 2)
        # (instance, its de-identified bytes when small, else None: they are in staging)
        self._upload_q: asyncio.Queue[tuple[InstanceRecord, bytes | None]] = asyncio.Queue(
            settings.delivery_concurrency * 2
        )
        # instances somewhere in this node's pipeline right now, with their current lease
        self._carrying: dict[InstanceKey, Lease] = {}
        self._wake = asyncio.Event()
        # the study tracker looks when this node has just finished all it carried (a study
        # may be complete now), else at least every _track_interval (stable_after passing,
        # other nodes' work); each look reads the open studies from the store
        self._track_wake = asyncio.Event()
        self._track_interval = min(_TRACK_MAX, max(_TRACK_MIN, settings.stable_after / 4))
        self._next_purge = 0.0
        self._last_track = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._crashes: dict[InstanceKey, int] = {}
        self._key_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.publisher = StudyPublisher(
            settings,
            state=state,
            destination=destination,
            notifiers=notifiers,
            pseudonymizer=pseudonymizer,
            metrics=metrics,
            lease_seconds=lease_seconds,
        )
        self._busy_since: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: a forked worker would inherit the node's threads' locks, its
        # listening sockets and the data-directory lock (held until the worker exits, so a
        # restarted node could find its own directory "in use").
        return ProcessPoolExecutor(
            max_workers=self._workers,
            initializer=worker_init,
            initargs=(current_log_setup(), os.getpid()),
            mp_context=multiprocessing.get_context("spawn"),
        )

    async def start(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        for leftover in self.staging.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        self._pool = self._new_pool()

        def spawn(name: str, step: Callable[[], Awaitable[None]], **kw: bool) -> asyncio.Task[None]:
            return asyncio.get_running_loop().create_task(self._loop(name, step, **kw), name=name)

        self._tasks = [spawn("feed", self._feed_once, until_stopping=True)]
        self._tasks += [
            spawn(f"process-{i}", functools.partial(self._process_once, i))
            for i in range(self._workers)
        ]
        self._tasks += [
            spawn(f"upload-{i}", self._upload_once)
            for i in range(self.settings.delivery_concurrency)
        ]
        self._tasks.append(spawn("track", self._track_once))
        self._tasks.append(spawn("renew", self._renew_once))
        log.info(
            "pipeline started",
            workers=self._workers,
            uploaders=self.settings.delivery_concurrency,
            destination=public_url(self.destination.url),
        )

    def wake(self) -> None:
        """Something changed (an instance was stored): look for work now. Loop thread only."""
        self._wake.set()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop feeding, let what is in flight finish (bounded), cancel the rest, close."""
        # 1. no new work is taken from the state store
        self._stopping = True
        self._wake.set()
        # 2. let instances already in the pipeline finish, within the bound
        deadline = time.monotonic() + timeout
        while self._carrying and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # 3. cancel the tasks; unfinished instances stay 'received'/'processed' and resume
        for task in self._tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self._tasks, timeout=10)
        if stuck:
            log.warning("pipeline tasks did not stop", tasks=[t.get_name() for t in stuck])
        await self.publisher.close()
        # unfinished instances go back at once: another node (or the next start) takes them
        for lease in list(self._carrying.values()):
            with contextlib.suppress(Exception):
                self.state.release(lease)
        # 4. release the workers (disposable: nothing of theirs is needed) and the destination
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            await asyncio.wait_for(self.destination.aclose(), timeout=10)
        except TimeoutError:
            log.warning("destination did not close in time")
        log.info("pipeline stopped", unfinished=len(self._carrying))

    async def _loop(
        self, name: str, step: Callable[[], Awaitable[None]], *, until_stopping: bool = False
    ) -> None:
        """Run ``step`` forever; an unexpected error is logged and retried, never fatal.

        A task that died silently would stall the pipeline (a study that never completes), so
        every loop goes through here. The exception is logged as a :func:`safe_traceback`
        (types and frames, no messages: they can quote values and spool paths named after
        original UIDs).
        """
        failures = 0
        while not (until_stopping and self._stopping):
            try:
                await step()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = backoff(failures, cap=30.0)
                log.error(
                    "pipeline step failed, will retry",
                    task=name,
                    error=type(exc).__name__,
                    traceback=safe_traceback(exc),
                    in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)

    # -- feeding ----------------------------------------------------------------------------------
    async def _feed_once(self) -> None:
        self._wake.clear()
        claims = self.state.claim_work(
            self.node_id, limit=64, lease_seconds=self.lease_seconds, exclude=self._carrying
        )
        for n, claim in enumerate(claims):
            if self._stopping:
                for left in claims[n:]:  # claimed but not started: back at once
                    self.state.release(left.lease)
                return
            rec = claim.record
            self._carrying[rec.key] = claim.lease
            if rec.state == InstanceState.PROCESSED and self._staged_ok(rec):
                await self._upload_q.put((rec, None))
            else:
                # a torn staged file of a processed row: made again (a small output is then
                # uploaded from memory, and nothing else would remove this file)
                if rec.state == InstanceState.PROCESSED:
                    self._staging_path(rec).unlink(missing_ok=True)
                await self._process_q.put(rec)
        if len(claims) < 64:
            if self._ingest_busy():
                await asyncio.sleep(0.1)  # many wakes while receiving: poll less often
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that
            # arrives as the event is set (stop() does both)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()

    async def _renew_once(self) -> None:
        """Renew every lease this node carries, a third of a lease before it would expire; a
        lease found lost is dropped here, and the work on it fails at its next transition."""
        await asyncio.sleep(self.lease_seconds / 3)
        for key, lease in list(self._carrying.items()):
            try:
                renewed = await asyncio.to_thread(
                    self.state.renew, lease, lease_seconds=self.lease_seconds
                )
            except LeaseLost:
                log.warning("instance taken over by another node", version=key.version)
                continue
            if self._carrying.get(key) is lease:  # not finished meanwhile
                self._carrying[key] = renewed

    def claimed(self) -> int:
        """Instances this node holds a lease on right now (a gauge; read from any thread)."""
        return len(self._carrying)

    def _lease(self, rec: InstanceRecord) -> Lease:
        return self._carrying[rec.key]

    def _finished(self, rec: InstanceRecord) -> None:
        """A transition released the lease (terminal, requeued): nothing to give back."""
        self._carrying.pop(rec.key, None)
        if not self._carrying:
            self._track_wake.set()

    def _staging_path(self, rec: InstanceRecord) -> Path:
        # named by a digest of the key: no original UID in a file name outside the spool
        digest = hashlib.sha256(f"{rec.sop_instance_uid}~v{rec.version}".encode()).hexdigest()
        return self.staging / f"{digest[:32]}.dcm"

    def _staged_ok(self, rec: InstanceRecord) -> bool:
        """A staged file from before a restart is used only if it is whole."""
        path = self._staging_path(rec)
        try:
            return rec.deid_size is not None and path.stat().st_size == rec.deid_size
        except FileNotFoundError:
            return False

    def _quarantine(
        self, rec: InstanceRecord, *, stage: str, reason: str, sha256: str | None = None
    ) -> None:
        # pseudonymized identity recorded too: status pages may name the instance by it
        self.state.quarantine(
            self._lease(rec),
            stage=stage,
            reason=reason,
            deid_sop_uid=rec.deid_sop_uid or self.publisher.pseudo_uid(rec.sop_instance_uid),
            deid_series_uid=rec.deid_series_uid
            or self.publisher.pseudo_uid(rec.series_instance_uid),
            sha256=sha256,
        )
        self._finished(rec)
        self._count("quarantined")
        if self._metrics is not None:
            self._metrics.quarantined.labels(rule_of(stage, reason).value).inc()

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.pipeline.labels(outcome).inc()

    def _done(self, rec: InstanceRecord) -> None:
        """The pipeline let go of an instance: a lease still held (nothing final happened:
        a worker crash, a stop) goes back, so the instance can be claimed again at once."""
        lease = self._carrying.pop(rec.key, None)
        if lease is not None:
            self.state.release(lease)
        self._crashes.pop(rec.key, None)
        self._wake.set()

    def _lost(self, rec: InstanceRecord) -> None:
        """Another node took the instance over (this node stalled past its lease)."""
        self._carrying.pop(rec.key, None)
        log.warning(
            "instance taken over by another node, dropped here",
            instance=self._pz.log_id(rec.sop_instance_uid),
            version=rec.version,
        )

    def _superseded(self, rec: InstanceRecord) -> bool:
        """An older version with a newer one behind it is not delivered (the newest wins)."""
        if not self.state.supersede_if_stale(self._lease(rec)):
            return False
        self._finished(rec)
        self._staging_path(rec).unlink(missing_ok=True)
        return True

    # -- validate → de-identify → verify (worker processes) ----------------------------------------
    async def _yield_to_ingest(self, index: int, allowed_while_busy: int) -> None:
        """Receiving comes first (promise 1 is paid in C-STORE latency): while associations
        are open, only the first ``allowed_while_busy`` workers of a kind keep going."""
        while index >= allowed_while_busy and self._ingest_busy() and not self._stopping:
            await asyncio.sleep(0.1)

    def _uploads_deferred(self) -> bool:
        """While associations are open, uploads take turns with receiving: a burst is received
        at full speed and uploaded after, and sustained traffic still uploads half the time.

        Measured on 2 cores (file destination, 2,000 small instances over one association):
        uploading alongside receiving made the sender's run 50% slower.
        """
        if not self._ingest_busy() or self._stopping:
            self._busy_since = None
            return False
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        return int((now - self._busy_since) // _UPLOAD_TURN) % 2 == 0

    async def _process_once(self, index: int) -> None:
        await self._yield_to_ingest(index, self._deid_while_busy)
        rec = await self._process_q.get()
        handed_on = False
        try:
            handed_on = await self._process(rec)
        except LeaseLost:
            self._lost(rec)
        finally:
            if not handed_on:
                self._done(rec)

    async def _process(self, rec: InstanceRecord) -> bool:
        """Process one instance; True if it went on to the upload queue."""
        if self._superseded(rec):
            return False
        if rec.spool_path is None:
            self._quarantine(rec, stage="spool", reason="raw copy missing")
            return False
        pool = self._pool
        assert pool is not None
        order = WorkOrder(
            raw_path=str(self.spool.path_of(rec.spool_path)),
            staging_path=str(self._staging_path(rec)),
            deid=self._deid,
            rules=self._rules,
        )
        try:
            result = await asyncio.get_running_loop().run_in_executor(pool, process_instance, order)
        except BrokenProcessPool:
            return self._worker_crashed(rec, pool)
        except Exception as exc:  # a bug in a stage: keep the instance, say why
            log.error(
                "processing failed",
                instance=self._pz.log_id(rec.sop_instance_uid),
                version=rec.version,
                error=type(exc).__name__,
                traceback=safe_traceback(exc),
            )
            self._quarantine(
                rec, stage="process", reason=f"processing failed: {type(exc).__name__}"
            )
            return False
        return await self._record(rec, result)

    def _worker_crashed(self, rec: InstanceRecord, pool: ProcessPoolExecutor) -> bool:
        """A worker died (killed, out of memory): rebuild the pool once; retry, then quarantine.

        Every job running in the broken pool fails with it; only the first to notice rebuilds,
        and each instance may be retried up to ``_MAX_WORKER_CRASHES`` times.
        """
        crashes = self._crashes.get(rec.key, 0) + 1
        self._crashes[rec.key] = crashes
        log.error(
            "worker process died",
            instance=self._pz.log_id(rec.sop_instance_uid),
            version=rec.version,
            crashes=crashes,
        )
        if self._pool is pool:
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        if crashes >= _MAX_WORKER_CRASHES:
            self._quarantine(rec, stage="process", reason=f"worker process died {crashes} times")
        return False  # either way the feeder (or nobody) hands it out again

    async def _record(self, rec: InstanceRecord, result: WorkResult) -> bool:
        if result.quarantined:
            self._quarantine(
                rec,
                stage=result.stage or "process",
                reason=result.reason or "",
                sha256=result.raw_sha256,
            )
            log.warning(
                "instance quarantined",
                instance=self._pz.log_id(rec.sop_instance_uid),
                stage=result.stage,
                reason=result.reason,
            )
            return False
        fields: dict[str, Any] = {
            "sha256": result.raw_sha256,
            "deid_study_uid": result.deid_study_uid,
            "deid_series_uid": result.deid_series_uid,
            "deid_sop_uid": result.deid_sop_uid,
            "deid_size": result.deid_size,
            "deid_sha256": result.deid_sha256,
            "modality": result.modality,
            "series_number": result.series_number,
            "instance_number": result.instance_number,
        }
        self.state.record_processed(self._lease(rec), **fields)
        self._count("processed")
        updated = dataclasses.replace(rec, state=InstanceState.PROCESSED, **fields)
        await self._upload_q.put((updated, result.data))
        return True

    # -- upload ---------------------------------------------------------------------------------
    async def _upload_once(self) -> None:
        rec, data = await self._upload_q.get()
        try:
            while self._uploads_deferred():
                await asyncio.sleep(0.05)
            assert rec.deid_study_uid and rec.deid_series_uid and rec.deid_sop_uid
            key = instance_key(rec.deid_study_uid, rec.deid_series_uid, rec.deid_sop_uid)
            # Versions of one instance share a key: one upload at a time per key, and an
            # older version that lost the race to a newer one is not uploaded at all.
            async with self._key_lock(key):
                if not self._superseded(rec):
                    await self._upload(rec, key, data)
        except LeaseLost:
            self._lost(rec)
        finally:
            self._done(rec)

    @contextlib.asynccontextmanager
    async def _key_lock(self, key: str) -> AsyncIterator[None]:
        """One upload at a time per object key; the lock lives while anyone holds or awaits it."""
        lock, users = self._key_locks.get(key, (asyncio.Lock(), 0))
        self._key_locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._key_locks[key]
            if users == 1:
                del self._key_locks[key]
            else:
                self._key_locks[key] = (lock, users - 1)

    async def _upload(self, rec: InstanceRecord, key: str, data: bytes | None) -> None:
        """Upload the de-identified instance: ``data`` when the worker handed it back (small),
        else the staged file."""
        path = self._staging_path(rec)
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                if data is not None:
                    await self.destination.put_bytes(key, data, content_type=CONTENT_TYPE_DICOM)
                else:
                    await self.destination.put_file(key, path, sha256=rec.deid_sha256)
                break
            except RetryableDeliveryError as exc:
                attempt += 1
                if self._metrics is not None:
                    self._metrics.upload_retries.inc()
                self.state.record_retry(
                    self._lease(rec),
                    stage="upload",
                    reason=f"{exc.code or type(exc).__name__}: will retry",
                )
                if self._stopping:
                    return  # stays 'processed'; resumes at the next start
                if time.monotonic() - started >= self.settings.retry_for:
                    self._quarantine(
                        rec,
                        stage="upload",
                        reason=f"destination unavailable for {self.settings.retry_for:.0f} s",
                    )
                    return
                delay = backoff(attempt, cap=min(60.0, self.settings.retry_for))
                log.warning(
                    "upload failed, will retry",
                    instance=self._pz.log_id(rec.sop_instance_uid),
                    version=rec.version,
                    code=exc.code,
                    attempt=attempt,
                    in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
            except DeliveryError as exc:
                if exc.code == "BadDigest":
                    # the staged file does not match what the worker wrote (torn by a power
                    # loss): make it again from the raw copy
                    path.unlink(missing_ok=True)
                    self.state.requeue(self._lease(rec), reason="staged file damaged, redone")
                    self._finished(rec)
                    log.warning(
                        "staged file damaged, processing again",
                        instance=self._pz.log_id(rec.sop_instance_uid),
                        version=rec.version,
                    )
                    return
                self._quarantine(
                    rec, stage="upload", reason=f"destination refused it: {exc.code or 'no code'}"
                )
                log.error(
                    "upload refused",
                    instance=self._pz.log_id(rec.sop_instance_uid),
                    version=rec.version,
                    code=exc.code,
                )
                return
        self.state.record_uploaded(self._lease(rec), key)
        self._finished(rec)
        self._count("uploaded")
        if data is None:
            path.unlink(missing_ok=True)

    # -- study completion and clean-up -----------------------------------------------------------
    async def _track_once(self) -> None:
        start = time.monotonic()
        # receiving comes first: the studies open associations carry cannot complete
        # meanwhile, and each look costs the receiving threads CPU (the GIL)
        while self._ingest_busy() and time.monotonic() < start + _TRACK_MAX:
            await asyncio.sleep(0.1)
        left = start + self._track_interval - time.monotonic()
        if left > 0 and not self._ingest_busy():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._track_wake.wait()
        self._track_wake.clear()
        # a burst of finishing instances makes one look: at most one per _TRACK_MIN
        await asyncio.sleep(max(0.0, self._last_track + _TRACK_MIN - time.monotonic()))
        self._last_track = time.monotonic()
        self.publisher.tick(set(self._in_flight_studies()))
        if time.monotonic() >= self._next_purge and self._purge_now():
            self._next_purge = time.monotonic() + _PURGE_EVERY
            await asyncio.to_thread(self._purge)  # file deletions stay off the event loop

    def _purge_now(self) -> bool:
        """Removing delivered raw copies waits while associations are open (each removal is a
        state write and an unlink, taken from the receiving threads), unless the spool is past
        half its limit or its filesystem is within twice ``min_free_space`` of refusing: a
        sender that never pauses must neither fill it nor be refused while copies could go."""
        return not self._ingest_busy() or self.spool.pressed()

    def _purge(self) -> None:
        """Remove raw spool copies of delivered instances after ``keep_raw_for`` seconds."""
        cutoff = time.time() - self.settings.keep_raw_for
        for rec in self.state.purgeable(delivered_before=cutoff):
            assert rec.spool_path is not None
            self.spool.remove(rec.spool_path)
            self.state.set_spool_path(rec.key, None)
