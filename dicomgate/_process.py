"""Small process helpers shared by the node's child processes (pipeline workers, serve workers)."""

from __future__ import annotations

import ctypes
import math
import os
import signal
import sys
from pathlib import Path

__all__ = ["available_cpus", "die_with_parent"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent (``parent_pid``) dies (Linux;
    elsewhere nothing).

    A SIGKILLed parent must not leave children behind holding memory, ports or the parent's
    stderr. Exits at once if the parent is already gone (before prctl took effect). The parent's
    pid is passed in, never guessed: in a container the node itself is pid 1, so "my parent is
    pid 1" does not mean "orphaned".
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(1)


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask (a cpuset, ``taskset``), capped by a
    cgroup v2 CPU quota (``docker run --cpus``, ECS task CPU) — not the host's count, which is
    what ``os.cpu_count()`` says inside a container."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)
