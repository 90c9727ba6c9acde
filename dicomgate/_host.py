"""What the node processes of one host (``serve --workers``) tell each other without the store.

Receiving comes first (promise 1 is paid in C-STORE latency): while any association is open, a
node keeps only one de-identification process going and lets uploads take turns. With several
node processes on one host that rule must be host-wide — the cores are shared — so each worker
publishes its count of open associations in a slot of a small shared-memory array the
supervisor made, and reads everyone's. Written on every association start and end; read by the
pipeline's polls. Cross-host coordination goes through the state store instead.
"""

from __future__ import annotations

from collections.abc import MutableSequence

__all__ = ["HostActivity"]


class HostActivity:
    """Slot ``index`` of ``counts`` (a ``multiprocessing`` shared array of ints) is this node's."""

    def __init__(self, counts: MutableSequence[int], index: int) -> None:
        self._counts = counts
        self.index = index

    def set_open(self, associations: int) -> None:
        """This node has ``associations`` open now (one aligned int store: no lock needed)."""
        self._counts[self.index] = associations

    def busy(self) -> bool:
        """Whether any node of this host has an association open."""
        return any(self._counts[i] for i in range(len(self._counts)))
