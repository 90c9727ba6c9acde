"""Child processes die with their parent, and only then — also when the node is pid 1 (a
container's init), which an "orphaned: my parent is pid 1" check would take for dead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from dicomgate._process import available_cpus

_AS_PID_1 = textwrap.dedent(
    """
    import os, sys
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing
    from dicomgate.pipeline._work import worker_init

    assert os.getpid() == 1, os.getpid()
    with ProcessPoolExecutor(
        max_workers=1,
        initializer=worker_init,
        initargs=(None, os.getpid()),
        mp_context=multiprocessing.get_context("spawn"),
    ) as pool:
        print(pool.submit(os.getppid).result(timeout=60))
    """
)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare not installed")
def test_pipeline_workers_live_under_a_pid_1_node() -> None:
    """A node that is pid 1 (a new pid namespace, as in a container) keeps its workers."""
    if os.geteuid() != 0:
        pytest.skip("a new pid namespace needs root")
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", _AS_PID_1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "1"  # the worker ran, and its parent is the pid-1 node


def test_available_cpus_is_within_the_affinity_mask() -> None:
    """What the node sizes its workers by: never more than the CPUs it may run on."""
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))
