"""The node's registry of open associations: whatever order their events come in, an ended
association is never left "open" (``busy()`` would then hold the pipeline back for ever)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from structlog.testing import capture_logs

from dicomgate.scp._server import ON_THREAD_END_ATTR, _handle_established
from tests.helpers import associate, start_node, wait_for


def _fake_association() -> Any:
    requestor = SimpleNamespace(ae_title="PEER", address="127.0.0.1", port=40000)
    return SimpleNamespace(requestor=requestor, is_released=False, is_aborted=True, acse=None)


def test_end_reported_before_establishment_is_not_registered(tmp_path: Path) -> None:
    """EVT_CONN_CLOSE (DUL thread) can overtake EVT_ESTABLISHED (association thread) when a
    peer closes right after its request (found by fuzzing under load): the late registration
    must not make the association open for ever."""
    with start_node(tmp_path / "d") as node:
        scp = node.node.scp
        assert scp is not None
        assoc = _fake_association()
        assert scp.forget(assoc) is None  # the close event, first
        info = scp.register(assoc)  # then the established event
        assert info.closed
        assert not scp.busy()
        assert not hasattr(assoc, ON_THREAD_END_ATTR)


def test_association_forgotten_when_its_thread_ends(tmp_path: Path) -> None:
    """An association whose end no event reported is forgotten when its thread exits: the
    registry's backstop (called by FastAssociation.run_reactor), once, with an end message."""
    with start_node(tmp_path / "d") as node:
        scp = node.node.scp
        assert scp is not None
        assoc = _fake_association()
        info = scp.register(assoc)
        assert scp.busy() and not info.closed
        getattr(assoc, ON_THREAD_END_ATTR)(assoc)
        assert info.closed and not scp.busy()
        getattr(assoc, ON_THREAD_END_ATTR)(assoc)  # again (an event came after): nothing
        assert not scp.busy()


def test_real_association_sets_and_runs_the_backstop(tmp_path: Path) -> None:
    """A real pynetdicom association is registered with the backstop, and is not busy after
    its release (events and thread exit both end it; neither twice)."""
    with start_node(tmp_path / "d") as node:
        scp = node.node.scp
        assert scp is not None
        assoc = associate(node.host, node.port)
        assert assoc.is_established
        assert wait_for(scp.busy)
        [info] = list(scp._associations.values())
        assert callable(getattr(info.assoc, ON_THREAD_END_ATTR))
        assoc.release()
        assert wait_for(lambda: not scp.busy())
        assert wait_for(lambda: not info.assoc.is_alive())
        assert not scp.busy() and info.closed


def test_association_ended_before_establishment_still_gets_its_end_record(
    tmp_path: Path,
) -> None:
    """The established event of an association whose close came first logs its end too: every
    "association established" line has an "association ended" line."""
    with start_node(tmp_path / "d") as node:
        scp = node.node.scp
        assert scp is not None
        assoc = _fake_association()
        scp.forget(assoc)
        with capture_logs() as logs:
            _handle_established(SimpleNamespace(assoc=assoc), scp)
        events = [e["event"] for e in logs]
        assert events == ["association established", "association ended"]
        assert logs[1]["how"] == "aborted" and not scp.busy()
