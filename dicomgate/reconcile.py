"""Start-up reconciliation of the spool against the state store.

After a crash the two can disagree in exactly three ways, each handled and reported:

* a file in ``incoming/``: a dataset still being received, never acknowledged → removed;
* a spool file without a row: acknowledged (its fsync preceded the row) but the row was lost
  with the process → the row is rebuilt from the file's header;
* a row whose spool file is gone (and not yet delivered) → quarantined with the reason, loudly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dicomgate._logging import get_logger
from dicomgate.checks import Refusal, check_header
from dicomgate.spool import Spool
from dicomgate.state import InstanceRecord, InstanceState, StateStore

__all__ = ["MISSING_FILE", "ReconcileReport", "reconcile"]

log = get_logger(__name__)

_NEEDS_FILE = {InstanceState.RECEIVED, InstanceState.PROCESSED}
#: the stage and reason of a quarantine here (``dicomgate.quarantine.rule_of``: "spool")
MISSING_FILE = ("spool", "spool file missing at start-up")


@dataclass
class ReconcileReport:
    incoming_removed: int = 0
    rows_rebuilt: int = 0
    files_unreadable: list[str] = field(default_factory=list)
    rows_missing_file: int = 0
    quarantined: int = 0  # of those, rows still to be processed: nothing left to deliver
    stale_removed: int = 0
    spooled: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "incoming_removed": self.incoming_removed,
            "rows_rebuilt": self.rows_rebuilt,
            "files_unreadable": len(self.files_unreadable),
            "rows_missing_file": self.rows_missing_file,
            "quarantined": self.quarantined,
            "stale_removed": self.stale_removed,
            "spooled": self.spooled,
        }


def reconcile(
    spool: Spool,
    state: StateStore,
    *,
    node_id: str = "",
    dead: Mapping[str, Path] | None = None,
    own: bool = True,
) -> ReconcileReport:
    """Settle the spool against the store: this node's own directory, and ``dead`` (name →
    directory) — the parts of a shared spool whose nodes have died, adopted by this one.

    ``node_id`` is the node doing it: rows it rebuilds are its own, and quarantines go
    through a claim like every transition. Several survivors may reconcile one dead node's
    directory at once: every step is idempotent (rebuilt rows are keyed, claims exclusive).
    ``own=False`` (while this node is receiving): the dead directories only.
    """
    report = ReconcileReport()
    rows = state.spooled_paths()
    for directory in [*([spool.node_dir] if own else []), *(dead or {}).values()]:
        _reconcile_dir(spool, state, directory, rows, report, node_id)

    level = "warning" if (report.rows_missing_file or report.files_unreadable) else "info"
    getattr(log, level)("spool reconciled", **report.as_dict())
    return report


def _size(path: Path) -> int | None:
    """The file's size; None if it is gone (another survivor reconciling the same node)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_file())
    except FileNotFoundError:
        return []


def _reconcile_dir(
    spool: Spool,
    state: StateStore,
    directory: Path,
    all_rows: Mapping[str, InstanceRecord],
    report: ReconcileReport,
    node_id: str,
) -> None:
    for leftover in _files(directory / "incoming"):
        leftover.unlink(missing_ok=True)
        report.incoming_removed += 1

    instances = directory / "instances"
    prefix = spool.relative(instances) + "/"  # "instances/" or "nodes/<node>/instances/"
    on_disk = {spool.relative(p): p for p in _files(instances)}
    rows = {rel: rec for rel, rec in all_rows.items() if rel.startswith(prefix)}
    report.spooled += len(on_disk)

    for relative, path in on_disk.items():
        if relative in rows:
            continue
        named = Spool.parse_file_name(path.name)  # the same UID rule as on the way in
        header = (
            check_header(path, request_sop_class_uid=None, request_sop_instance_uid=named[0])
            if named is not None
            else None
        )
        if named is None or header is None or isinstance(header, Refusal):
            # We checked this file before writing it here: it has been damaged since.
            with contextlib.suppress(FileNotFoundError):  # another survivor got there first
                spool.set_aside(path)
            report.files_unreadable.append(path.name)
            continue
        version = named[1]
        known = {r.version: r for r in state.versions(header.sop_instance_uid)}
        existing = known.get(version)
        if existing is not None:
            # A row without a path: the file was purged after delivery but the unlink did not
            # survive (power loss), or a backup was restored. Delivered: drop the stale copy;
            # otherwise the row needs its file back.
            # Only a row that lost its file takes this one, and only if it is the same size: a
            # node that crashed between spooling a re-send under this name and hearing from
            # the store that the name was taken leaves a file the sender never had
            # acknowledged, which must not stand in for the acknowledged content.
            if (
                existing.state in _NEEDS_FILE
                and existing.spool_path is None
                and existing.size == _size(path)
            ):
                state.set_spool_path(existing.key, relative)
                report.rows_rebuilt += 1
            else:
                spool.remove(relative)
                report.stale_removed += 1
            continue
        state.admit_recovered(
            InstanceRecord(
                sop_instance_uid=header.sop_instance_uid,
                version=version,
                study_instance_uid=header.study_instance_uid,
                series_instance_uid=header.series_instance_uid,
                sop_class_uid=header.sop_class_uid,
                transfer_syntax_uid=header.transfer_syntax_uid,
                size=path.stat().st_size,
                spool_path=relative,
                calling_ae="",
                peer_address="",
                association_id="recovered",
                received_at=path.stat().st_mtime,
                node_id=node_id,
            )
        )
        report.rows_rebuilt += 1

    for relative, rec in rows.items():
        if relative in on_disk:
            continue
        report.rows_missing_file += 1
        if rec.state in _NEEDS_FILE:
            # claimed first: a node carrying it (a shared store) finds out by LeaseLost
            lease = state.claim_instance(rec.key, node_id)
            if lease is None:
                continue  # another node holds it and will find the file missing itself
            stage, reason = MISSING_FILE
            state.quarantine(lease, stage=stage, reason=reason)
            report.quarantined += 1
        state.set_spool_path(rec.key, None)
