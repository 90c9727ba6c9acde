"""The spool: received instances as files, made durable before they are acknowledged.

Layout under the spool directory (``spool_dir``, default ``<data_dir>/spool``)::

    nodes/<node>/incoming/    pynetdicom streams each C-STORE dataset here (same filesystem)
    nodes/<node>/instances/   <SOP Instance UID>~v<version>.dcm, each fsync'd, renamed,
                              directory fsync'd

A file in ``incoming/`` was never acknowledged; a file in ``instances/`` always was (or is
about to be: the C-STORE response follows the directory fsync).

The spool may be shared by several nodes (processes on one host, or containers on EFS): each
node creates and renames files only under its own ``nodes/<node>/`` directory, so no node ever
renames over another's file, and the state store records every file by its path relative to
the spool directory, so any node can read (and, once the writer is dead, adopt) it.  A spool
without a node id (``Spool(root)``, stores written before nodes existed) uses ``incoming/`` and
``instances/`` directly under the root; those relative paths stay valid.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from dicomgate.uids import is_valid_uid, require_uid

__all__ = ["DirSyncer", "Spool", "SpoolFullError", "fsync_dir", "node_dir_name", "sha256_file"]


# The inverse of Spool.file_name (fullmatch, [0-9]: no "$" before a newline, no other digits).
_FILE_NAME = re.compile(r"(?P<uid>[0-9.]+)~v(?P<version>[0-9]+)\.dcm")


_NODE_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def node_dir_name(node_id: str) -> str:
    """A node id as one safe path component: itself when it is one, else a cleaned form with
    a hash (so two ids never share a directory, and ``..`` or ``/`` never get in)."""
    if _NODE_SAFE.fullmatch(node_id) and node_id not in (".", ".."):
        return node_id
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", node_id)[:40].strip(".") or "node"
    return f"{cleaned}-{hashlib.sha256(node_id.encode('utf-8')).hexdigest()[:12]}"


class SpoolFullError(OSError):
    """The spool is over its size limit or its filesystem is short of space."""


def sha256_file(path: Path) -> tuple[str, int]:
    """Hex SHA-256 and size of a file, read in 1 MiB chunks (blocking)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or create in it survives a crash (POSIX)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirSyncer:
    """Group commit of one directory's fsync across threads (leader/follower).

    A thread that renamed a file into the directory calls :meth:`sync` and returns only once an
    fsync of the directory that *started after its call* has completed, so its rename is
    durable. While one thread (the leader) runs the fsync, the others wait; the next leader's
    fsync then covers all of them at once, so N concurrent renames cost about two fsyncs
    instead of N. A lone thread pays exactly one fsync, as before.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0  # tickets handed out
        self._done = 0  # every ticket <= this is covered by a completed fsync
        self._syncing = False
        self.fsyncs = 0  # for tests and figures

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._done < ticket:
                if self._syncing:
                    self._cond.wait()
                    continue
                # Become the leader: our fsync starts after every ticket handed out so far.
                self._syncing = True
                covers = self._requested
                self._cond.release()
                try:
                    # On error nothing is marked done: the exception goes to the leader's
                    # caller (no acknowledgement) and the waiters elect a new leader.
                    fsync_dir(self.path)
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                self._done = max(self._done, covers)
                self.fsyncs += 1


@dataclass(frozen=True, slots=True)
class SpoolUsage:
    bytes_used: int
    limit: int
    free_on_disk: int
    min_free: int


class Spool:
    """Moves received files into place durably and keeps the spool within its limits."""

    def __init__(
        self, root: Path, *, limit: int, min_free: int, node_id: str | None = None
    ) -> None:
        self.root = root
        self.node_id = node_id
        self.prefix = "" if node_id is None else f"nodes/{node_dir_name(node_id)}/"
        self.node_dir = root / self.prefix if self.prefix else root
        self.incoming = self.node_dir / "incoming"
        self.instances = self.node_dir / "instances"
        self.limit = limit
        self.min_free = min_free
        self._lock = threading.Lock()
        self._bytes_used = 0
        self._instances_sync = DirSyncer(self.instances)

    def prepare(self) -> None:
        """Create the directories and count what is already spooled."""
        for d in (self.root, self.node_dir, self.incoming, self.instances):
            d.mkdir(parents=True, exist_ok=True)
        total = 0
        with os.scandir(self.instances) as it:
            for entry in it:
                if entry.is_file():
                    total += entry.stat().st_size
        with self._lock:
            self._bytes_used = total

    # -- limits ---------------------------------------------------------------------------------
    def usage(self) -> SpoolUsage:
        st = os.statvfs(self.root)
        with self._lock:
            used = self._bytes_used
        return SpoolUsage(used, self.limit, st.f_bavail * st.f_frsize, self.min_free)

    def check_room(self, incoming_size: int = 0) -> str | None:
        """Why there is no room for another instance, or ``None`` if there is."""
        u = self.usage()
        if u.bytes_used >= u.limit or u.bytes_used + incoming_size > u.limit:
            return f"spool over its limit ({u.bytes_used + incoming_size} > {u.limit} bytes)"
        if u.free_on_disk < u.min_free:
            return f"spool filesystem short of space ({u.free_on_disk} < {u.min_free} bytes free)"
        return None

    def pressed(self) -> bool:
        """Past half its limit, or its filesystem within twice ``min_free`` of refusing: work
        that frees spool space should not wait any longer (see Pipeline._purge_now)."""
        u = self.usage()
        return u.bytes_used * 2 > u.limit or u.free_on_disk < 2 * u.min_free

    def release(self, size: int) -> None:
        """Account for a spool file that was removed (after delivery)."""
        with self._lock:
            self._bytes_used = max(0, self._bytes_used - size)

    # -- files ----------------------------------------------------------------------------------
    @staticmethod
    def file_name(sop_instance_uid: str, version: int) -> str:
        """``<SOP Instance UID>~v<version>.dcm``; ``ValueError`` for anything but a valid UID.

        The UID comes from the sender, so it is checked here, where it becomes a path, rather
        than trusted to have been cleaned elsewhere (a newline, ``/`` or ``..`` never gets in).
        """
        require_uid(sop_instance_uid, "SOP Instance UID")
        if version < 1:
            raise ValueError("spool file version must be >= 1")
        return f"{sop_instance_uid}~v{version}.dcm"

    @staticmethod
    def parse_file_name(name: str) -> tuple[str, int] | None:
        """(SOP Instance UID, version) of a name :meth:`file_name` made, else ``None``."""
        m = _FILE_NAME.fullmatch(name)
        if m is None or not is_valid_uid(m["uid"]) or int(m["version"]) < 1:
            return None
        return m["uid"], int(m["version"])

    def path_of(self, relative: str) -> Path:
        return self.root / relative

    def admit(self, received: Path, sop_instance_uid: str, version: int) -> tuple[str, int]:
        """Make ``received`` durable in ``instances/``; return (relative path, size).

        Order matters (promise 1): fsync the data, rename into place, fsync the directory.
        Raises :class:`SpoolFullError` when the disk fills up underneath us.
        """
        name = self.file_name(sop_instance_uid, version)
        final = self.instances / name
        try:
            fd = os.open(received, os.O_RDONLY)
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            # never over another file: an acknowledged instance is never replaced (callers
            # hold the UID's lock in this process; other nodes write in their own directory).
            # FileExistsError tells the caller the name is taken (ingest then asks the store).
            if final.exists():
                raise FileExistsError(errno.EEXIST, "spool file already exists")
            received.rename(final)
            try:
                self._instances_sync.sync()  # shared with concurrent renames (group commit)
            except OSError:
                # Not durable, so not acknowledged: it must not be found and delivered later.
                final.unlink(missing_ok=True)
                raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFullError(exc.errno, "no space left on the spool filesystem") from exc
            raise
        with self._lock:
            self._bytes_used += size
        return f"{self.prefix}instances/{name}", size

    def remove(self, relative: str) -> None:
        """Delete a spool file (after delivery).

        The unlink is not fsync'd: a copy that reappears after a power loss is a stale copy
        of something delivered, and start-up reconciliation removes it again.
        """
        path = self.root / relative
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        self.release(size)

    def set_aside(self, path: Path) -> None:
        """Move a damaged spool file to ``damaged/`` (out of the spool's accounting)."""
        damaged = self.root / "damaged"
        damaged.mkdir(exist_ok=True)
        size = path.stat().st_size
        path.rename(damaged / path.name)
        self.release(size)

    def leftover_incoming(self) -> list[Path]:
        return sorted(p for p in self.incoming.iterdir() if p.is_file())

    def spooled_files(self) -> list[Path]:
        return sorted(p for p in self.instances.iterdir() if p.is_file())

    def relative(self, path: Path) -> str:
        """How the state store names a spool file: its path relative to the spool directory."""
        return path.relative_to(self.root).as_posix()

    def other_nodes(self) -> dict[str, Path]:
        """Directory name → directory of every other node's part of a shared spool.

        Reconciliation reads these only for nodes the state store says are dead.
        """
        nodes = self.root / "nodes"
        if not nodes.is_dir():
            return {}
        own = self.node_dir.resolve()
        return {d.name: d for d in sorted(nodes.iterdir()) if d.is_dir() and d.resolve() != own}
