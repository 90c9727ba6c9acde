"""Study completion: manifests, links and notifications (DESIGN 4-5).

Each complete study is published by its own task, so a slow webhook never holds up another
study. The order makes delivery at-least-once without losing anything:

1. decide the study complete and allocate manifest version N in one atomic step of the state
   store (:meth:`~dicomgate.state.StateStore.begin_publication`: a compare-and-set, so of
   several nodes finding a study complete at once exactly one publishes N); the publication
   is a lease, renewed while this node works on it;
2. build manifest N from the newest version of every instance of the study;
3. upload the index, ``manifest-vN.json`` and ``manifest.json`` (overwrites: safe to repeat);
4. mark exactly the rows listed as reported, in idempotent chunks (an instance finishing
   meanwhile waits for N+1), then record N as the study's manifest version;
5. sign links and notify; only when that succeeded is N recorded as notified.

A node dying inside 1-4 leaves its publication lease to expire; whoever takes the study next
publishes the same version N again (overwriting the same objects).

A crash between 3 and 4 leaves ``notified_version < manifest_version``; the tracker finds such
studies (at start-up too) and announces them, reading manifest N back from the destination.
So does a notification that could not be delivered: retryable failures are retried for
``retry_for``; after that, or after a permanent refusal, the study stays owed (metric
``dicomgate_notifications_owed``) and is tried again every ``_OWED_RETRY_S`` and at every start —
a partner is never silently left without its links. Every notification carries
``id = <study>/v<N>`` so a receiver can drop a repeat (notifiers that did succeed hear it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from dicomgate import __version__
from dicomgate._logging import get_logger
from dicomgate._tracebacks import safe_traceback
from dicomgate.audit import NULL_TRAIL, AuditTrail
from dicomgate.config import DeidOption, Settings
from dicomgate.delivery import (
    DeidInfo,
    Destination,
    Manifest,
    ManifestInstance,
    MissingInstance,
    Notification,
    Notifier,
    ProcedureStep,
    QuarantinedInstance,
    make_link_set,
    notify_all,
    publish_manifest,
)
from dicomgate.delivery.destination import public_url
from dicomgate.delivery.reissue import load_manifest
from dicomgate.ops.metrics import Metrics
from dicomgate.pipeline._retry import backoff
from dicomgate.pipeline.tracker import is_complete
from dicomgate.pseudonym import Pseudonymizer
from dicomgate.state import (
    DEFAULT_LEASE_SECONDS,
    MAX_BATCH,
    InstanceKey,
    InstanceState,
    LeaseLost,
    Publication,
    StateStore,
    StudyProgress,
    StudyRecord,
)

__all__ = ["StudyPublisher"]

log = get_logger(__name__)

#: how often a study whose notification was given up on (retry_for spent, or refused) is tried
#: again, until it succeeds or the operator fixes the notifier's settings and restarts
_OWED_RETRY_S = 600.0


class NotificationNotDelivered(Exception):  # noqa: N818 - an outcome, carried to the scheduler
    """Some notifier did not take a notification; the study stays owed."""

    code = "notification-not-delivered"


def audit_partners(settings: Settings) -> list[str]:
    """Who a manifest goes to, for the audit trail: the notification targets (without
    credentials or query strings); empty when only the log hears of it."""
    targets = [public_url(settings.notify_webhook_url)] if settings.notify_webhook_url else []
    return [
        *targets,
        *filter(None, [settings.notify_sns_topic_arn, settings.notify_sqs_queue_url]),
    ]


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


class StudyPublisher:
    #: the node's audit trail: each published manifest is an export (PS3.15 A.5)
    audit: AuditTrail = NULL_TRAIL

    def __init__(
        self,
        settings: Settings,
        *,
        state: StateStore,
        destination: Destination,
        notifiers: Sequence[Notifier],
        pseudonymizer: Pseudonymizer,
        metrics: Metrics | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.settings = settings
        self.state = state
        self.node_id = settings.node_id
        self.lease_seconds = lease_seconds
        self.destination = destination
        self.notifiers = list(notifiers)
        self._pz = pseudonymizer
        self._metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._not_before: dict[str, tuple[int, float]] = {}

    # -- scheduling ------------------------------------------------------------------------------
    def tick(self, in_flight: Collection[str]) -> None:
        """Start a task for every study that is complete or owes a notification."""
        now = time.time()
        for study in self.state.studies_to_report():
            uid = study.study_instance_uid
            if is_complete(
                study,
                now=now,
                stable_after=self.settings.stable_after,
                in_flight=in_flight,
                expected_deadline=self.settings.expected_deadline,
            ):
                self._spawn(uid, self._publish(uid))
        owed = self.state.unnotified()
        if self._metrics is not None:
            self._metrics.notifications_owed.set(len(owed))
        for record in owed:
            self._spawn(record.study_instance_uid, self._announce(record))

    def _spawn(self, uid: str, work: Coroutine[Any, Any, None]) -> None:
        running = self._tasks.get(uid)
        if (running is not None and not running.done()) or time.monotonic() < self._not_before.get(
            uid, (0, 0.0)
        )[1]:
            work.close()
            return
        self._tasks[uid] = asyncio.get_running_loop().create_task(
            self._guarded(uid, work), name=f"publish-{uid[-12:]}"
        )

    async def _guarded(self, uid: str, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
            self._not_before.pop(uid, None)
        except asyncio.CancelledError:
            raise
        except LeaseLost:  # another node took the study over: it is theirs now
            log.warning("study publication taken over by another node")
        except NotificationNotDelivered:  # already logged; tried again later, not forgotten
            n = self._not_before.get(uid, (0, 0.0))[0] + 1
            self._not_before[uid] = (n, time.monotonic() + _OWED_RETRY_S)
        except Exception as exc:  # retried by a later tick, with backoff
            n = self._not_before.get(uid, (0, 0.0))[0] + 1
            delay = backoff(n, cap=60.0)
            self._not_before[uid] = (n, time.monotonic() + delay)
            # no exception text: it may quote paths named after original UIDs
            log.warning(
                "study publication failed, will retry",
                error=type(exc).__name__,
                code=getattr(exc, "code", None),
                traceback=safe_traceback(exc),
                attempt=n,
                in_s=round(delay, 2),
            )

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks.values(), timeout=10)

    # -- manifests -------------------------------------------------------------------------------
    def pseudo_uid(self, uid: str) -> str:
        """The UID as delivered (unchanged with Retain UIDs)."""
        if DeidOption.RETAIN_UIDS in self.settings.deid_options:
            return uid
        return self._pz.uid(uid)

    def _deid_info(self) -> DeidInfo:
        return DeidInfo(
            options=[str(o) for o in self.settings.deid_options],
            table_version="PS3.15 2026c",
            site_keep=list(self.settings.deid_keep),
            site_remove=list(self.settings.deid_remove),
            site_replace=sorted(self.settings.deid_replace),
            software=f"dicomgate {__version__}",
        )

    def build_manifest(
        self,
        study: StudyProgress,
        version: int,
        *,
        completion: str | None = None,
        missing: Sequence[str] = (),
    ) -> tuple[Manifest, list[InstanceKey]]:
        """Manifest ``version`` of ``study`` and the keys of the rows it reports;
        ``completion`` and ``missing`` (original UIDs) as the publication decided them."""
        deid_study = study.deid_study_uid or self.pseudo_uid(study.study_instance_uid)
        delivered, held, keys = [], [], []
        for r in self.state.manifest_rows(study.study_instance_uid):
            if r.state in (InstanceState.UPLOADED, InstanceState.DELIVERED):
                assert r.deid_series_uid and r.deid_sop_uid and r.deid_sha256
                assert r.deid_size is not None and r.object_key
                delivered.append(
                    ManifestInstance(
                        sop_instance_uid=r.deid_sop_uid,
                        series_instance_uid=r.deid_series_uid,
                        sop_class_uid=r.sop_class_uid,
                        transfer_syntax_uid=r.transfer_syntax_uid,
                        modality=r.modality,
                        series_number=r.series_number,
                        instance_number=r.instance_number,
                        size=r.deid_size,
                        sha256=r.deid_sha256,
                        key=r.object_key,
                    )
                )
            elif r.state == InstanceState.QUARANTINED:
                held.append(
                    QuarantinedInstance(
                        sop_instance_uid=r.deid_sop_uid or self.pseudo_uid(r.sop_instance_uid),
                        series_instance_uid=r.deid_series_uid
                        or self.pseudo_uid(r.series_instance_uid),
                        sop_class_uid=r.sop_class_uid,
                        stage=r.stage or "pipeline",
                        reason=r.reason or "",
                    )
                )
            else:
                continue  # still on its way: it belongs to the next version
            keys.append(r.key)
        manifest = Manifest.build(
            study_instance_uid=deid_study,
            manifest_version=version,
            instances=delivered,
            quarantined=held,
            deidentification=self._deid_info(),
            created_at=datetime.now(UTC),
            first_received_at=_dt(study.first_received_at),
            last_received_at=_dt(study.last_received_at),
            node=self.settings.ae_title,
            destination=self.destination.url,
            completion=completion,  # type: ignore[arg-type]
            missing=[
                MissingInstance(
                    sop_instance_uid=self.pseudo_uid(uid), expected_by=study.expected_by
                )
                for uid in missing
            ],
            procedure_steps=[
                ProcedureStep(
                    sop_instance_uid=self.pseudo_uid(m.sop_instance_uid),
                    status=m.status,
                    instances=m.instances,
                    discontinuation_reason=(m.reason[2] or m.reason[0]) if m.reason else None,
                    discontinuation_code=f"{m.reason[0]}^{m.reason[1]}" if m.reason else None,
                )
                for m in self.state.mpps(study_instance_uid=study.study_instance_uid)
            ],
        )
        return manifest, keys

    @contextlib.asynccontextmanager
    async def _held(self, pub: Publication) -> AsyncIterator[None]:
        """Keep ``pub``'s lease alive while the body runs (a slow upload or webhook must not
        let another node take the study over); give it up if the body fails."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.lease_seconds / 3)
                await asyncio.to_thread(
                    self.state.renew_publication, pub, lease_seconds=self.lease_seconds
                )

        renewer = asyncio.get_running_loop().create_task(renew(), name="renew-publication")
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.state.release_publication(pub)
            raise
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                await renewer

    async def _publish(self, study_instance_uid: str) -> None:
        pub = self.state.begin_publication(
            study_instance_uid,
            self.node_id,
            stable_after=self.settings.stable_after,
            lease_seconds=self.lease_seconds,
            expected_deadline=self.settings.expected_deadline,
        )
        if pub is None:  # not complete after all, or another node is publishing it
            return
        async with self._held(pub):
            version = pub.version
            manifest, keys = self.build_manifest(
                pub.study, version, completion=pub.completion, missing=pub.missing
            )
            partners = audit_partners(self.settings)
            if manifest.counts.instances:
                await asyncio.to_thread(
                    self.audit.begin_export,
                    study_uid=study_instance_uid,
                    destination=public_url(self.destination.url),
                    partners=partners,
                )
            await publish_manifest(self.destination, manifest)
            for start in range(0, len(keys), MAX_BATCH):
                self.state.mark_reported(pub, keys[start : start + MAX_BATCH])
            self.state.complete_publication(pub, manifest.study_instance_uid)
            if manifest.counts.instances:
                await asyncio.to_thread(
                    self.audit.exported,
                    study_uid=study_instance_uid,
                    sop_classes=Counter(i.sop_class_uid for i in manifest.instances),
                    destination=public_url(self.destination.url),
                    partners=partners,
                    manifest_version=version,
                    quarantined=manifest.counts.quarantined,
                )
            if self._metrics is not None:
                self._metrics.studies_delivered.inc()
                self._metrics.completions.labels(how=pub.completion).inc()
            log.info(
                "study delivered"
                if manifest.counts.instances
                else "study reported, nothing delivered",
                study=manifest.study_instance_uid,
                manifest_version=version,
                instances=manifest.counts.instances,
                quarantined=manifest.counts.quarantined,
                completion=pub.completion,
                missing=len(pub.missing),
            )
            await self._notify(pub, manifest)

    async def _announce(self, record: StudyRecord) -> None:
        """Notify for a manifest published earlier (a crash or failure came in between)."""
        assert record.deid_study_uid is not None
        pub = self.state.claim_announcement(
            record.study_instance_uid, self.node_id, lease_seconds=self.lease_seconds
        )
        if pub is None:  # announced meanwhile, or another node is at it
            return
        async with self._held(pub):
            manifest = await load_manifest(self.destination, record.deid_study_uid, pub.version)
            await self._notify(pub, manifest)

    async def _notify(self, pub: Publication, manifest: Manifest) -> None:
        """Links + every notifier; retryable failures are retried for ``retry_for``."""
        version = manifest.manifest_version
        links = await make_link_set(self.destination, manifest, self.settings.link_expiry)
        notification = Notification.for_manifest(manifest, self.destination.url, links)
        pending = list(self.notifiers)
        started, attempt = time.monotonic(), 0
        refused: list[str] = []
        while pending:
            results = await notify_all(pending, notification)
            failed = {n.name: e for n in pending if (e := results[n.name]) is not None}
            for name, error in failed.items():
                if self._metrics is not None:
                    self._metrics.notifications_failed.labels(
                        notifier=name, retryable=str(error.retryable).lower()
                    ).inc()
            now_refused = [name for name, e in failed.items() if not e.retryable]
            if now_refused:
                log.error("notification refused", manifest_version=version, notifiers=now_refused)
                refused += now_refused
            pending = [n for n in pending if n.name in failed and failed[n.name].retryable]
            if not pending:
                break
            attempt += 1
            if time.monotonic() - started >= self.settings.retry_for:
                break
            await asyncio.sleep(backoff(attempt, cap=60.0))
        if pending or refused:
            log.error(
                "notification not delivered, study stays owed",
                study=manifest.study_instance_uid,
                manifest_version=version,
                notifiers=sorted({*refused, *(n.name for n in pending)}),
                next_try_in_s=_OWED_RETRY_S,
            )
            raise NotificationNotDelivered
        self.state.mark_notified(pub)
