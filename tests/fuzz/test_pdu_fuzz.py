"""PDU-layer fuzzing against a live node: the recorded crash inputs, then a short random run.

Every case ends with the node closing the connection (an A-ABORT, an A-ASSOCIATE-RJ or a
close after our EOF); after each batch the node answers C-ECHO, stores a valid instance and
has nothing left in ``incoming/``, and no thread of it died. ``bench/fuzz --layer pdu`` runs
the same cases by the ten thousand against a real ``dicomgate serve``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.fuzz.pdu import load_case, make_case, node_health, run_case, thread_deaths
from tests.helpers import NodeHandle, start_node, wait_for

CORPUS = sorted((Path(__file__).parent / "corpus" / "pdu").glob("*.pdu"))
SEED = 20261206
CASES, BATCH = 300, 100


@pytest.fixture
def fuzz_node(tmp_path: Path) -> NodeHandle:
    with start_node(tmp_path / "data", acse_timeout=5, network_timeout=10) as node:
        yield node  # type: ignore[misc]


def _healthy(node: NodeHandle, scratch: Path) -> None:
    assert node_health(node.host, node.port, node.data_dir, scratch) == []
    # every association ended as far as the node knows: none stays "open" (holding its
    # studies back from publication, and its memory) after a hard abort
    scp = node.node.scp
    assert wait_for(lambda: not scp.busy(), timeout=10), scp.open_associations()


def test_recorded_crash_inputs(fuzz_node: NodeHandle, tmp_path: Path) -> None:
    """Each input that once killed a node thread (a malformed DIMSE command set, an unexpected
    PDU, an A-ASSOCIATE-RQ pynetdicom could not negotiate), left a file in ``incoming/`` or an
    association the node thought open, now gets an A-ABORT and leaves nothing behind."""
    assert CORPUS
    with thread_deaths() as died:
        for path in CORPUS:
            outcome = run_case(fuzz_node.host, fuzz_node.port, load_case(path.read_bytes()))
            assert not outcome.hang, path.name
        _healthy(fuzz_node, tmp_path / "scratch")
    assert died == []


def test_short_random_run(fuzz_node: NodeHandle, tmp_path: Path) -> None:
    """A few hundred random cases (deterministic seed), health checked after each batch."""
    hangs: list[tuple[int, str]] = []
    with thread_deaths() as died:
        for i in range(CASES):
            case = make_case(random.Random(f"{SEED}-{i}"))
            if run_case(fuzz_node.host, fuzz_node.port, case).hang:
                hangs.append((i, case.kind))
            if (i + 1) % BATCH == 0:
                _healthy(fuzz_node, tmp_path / "scratch")
    assert hangs == []
    assert died == []
