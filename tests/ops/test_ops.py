"""The ops endpoint: liveness, readiness, Prometheus metrics and study status without PHI."""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydicom import dcmread
from structlog.testing import capture_logs

from dicomgate.ops.metrics import Metrics
from dicomgate.ops.server import OpsServer
from dicomgate.testing import write_ct_study
from tests.helpers import NodeHandle, associate, send_files, start_node, wait_for


@pytest.fixture(autouse=True)
def _debug_logging() -> Iterator[None]:
    """Request lines are debug: let them through whatever level an earlier test configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(**saved)


def _get(node: NodeHandle, path: str) -> tuple[int, str]:
    assert node.node.ops is not None
    host, port = node.node.ops.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return int(exc.code), body


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_health_and_readiness(tmp_path: Path) -> None:
    """/healthz is 200; /readyz is 200 with room in the spool and 503 with the reason when full."""
    with start_node(tmp_path / "data") as n:
        assert _get(n, "/healthz") == (200, "ok\n")
        assert _get(n, "/readyz") == (200, "ready\n")
        n.node.spool.limit = 0
        code, body = _get(n, "/readyz")
        assert code == 503 and "spool over its limit" in body
        assert _get(n, "/nope")[0] == 404


def test_metrics_count_what_happened(tmp_path: Path) -> None:
    """Stores by status, associations by outcome, spool bytes and the pipeline's counters."""
    paths = write_ct_study(tmp_path / "s", 3, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    with start_node(tmp_path / "data", pipeline=True, stable_after=0.2) as n:
        assert send_files(n.host, n.port, [*paths, paths[0]]) == [0, 0, 0, 0]
        rejected = associate(n.host, n.port, aec="SOMEONE_ELSE")
        assert rejected.is_rejected
        assert wait_for(lambda: (s := n.node.state.study(uid)) is not None and s.manifest_version)  # type: ignore[union-attr]
        code, text = _get(n, "/metrics")
    assert code == 200
    assert _metric(text, 'dicomgate_c_store_total{status="success"}') == 4
    assert _metric(text, 'dicomgate_associations_total{outcome="accepted"}') == 1
    assert _metric(text, 'dicomgate_associations_total{outcome="rejected"}') == 1
    assert _metric(text, "dicomgate_c_store_seconds_count") == 4
    assert _metric(text, 'dicomgate_pipeline_instances_total{outcome="uploaded"}') == 3
    assert _metric(text, "dicomgate_manifests_published_total") == 1
    assert _metric(text, "dicomgate_spool_limit_bytes") > 0
    assert _metric(text, "dicomgate_pipeline_backlog") == 0
    # which node, what it carries, how many nodes are alive in the store (issue 8)
    assert _metric(text, f'dicomgate_node_info{{node_id="{n.node.settings.node_id}"}}') == 1
    assert _metric(text, "dicomgate_pipeline_claimed") == 0
    assert _metric(text, "dicomgate_nodes_alive") == 1


def test_quarantined_instances_counted_by_rule(tmp_path: Path) -> None:
    """Every instance held back counts once under its rule: burned-in text (the site's
    policy), a missing required attribute (invalid); delivered instances count nowhere."""
    paths = write_ct_study(tmp_path / "s", 4, rows=16, columns=16)
    burned = dcmread(paths[1])
    burned.BurnedInAnnotation = "YES"
    burned.save_as(paths[1], enforce_file_format=True)
    for p in paths[2:]:
        lacking = dcmread(p)
        del lacking.StudyDescription
        lacking.save_as(p, enforce_file_format=True)
    uid = str(burned.StudyInstanceUID)
    with start_node(
        tmp_path / "data",
        pipeline=True,
        stable_after=0.2,
        burned_in_policy="quarantine",
        require_attributes=["StudyDescription"],
    ) as n:
        assert send_files(n.host, n.port, paths) == [0, 0, 0, 0]
        assert wait_for(lambda: (s := n.node.state.study(uid)) is not None and s.manifest_version)  # type: ignore[union-attr]
        code, text = _get(n, "/metrics")
    assert code == 200
    assert _metric(text, 'dicomgate_quarantined_total{rule="burned-in"}') == 1
    assert _metric(text, 'dicomgate_quarantined_total{rule="invalid"}') == 2
    assert 'rule="phi-check"' not in text and 'rule="other"' not in text
    assert _metric(text, 'dicomgate_pipeline_instances_total{outcome="quarantined"}') == 3
    assert _metric(text, 'dicomgate_pipeline_instances_total{outcome="uploaded"}') == 1


def test_studies_status_hides_original_identifiers(tmp_path: Path) -> None:
    """/studies/<uid> answers by original or pseudonymized UID and shows only pseudonyms."""
    paths = write_ct_study(tmp_path / "s", 2, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    with start_node(tmp_path / "data", pipeline=True, stable_after=0.2) as n:
        assert send_files(n.host, n.port, paths) == [0, 0]
        assert wait_for(lambda: (s := n.node.state.study(uid)) is not None and s.manifest_version)  # type: ignore[union-attr]
        code, body = _get(n, f"/studies/{uid}")
        assert code == 200
        study = json.loads(body)
        assert study["instances"] == 2 and study["state"] == "delivered"
        assert uid not in body
        by_pseudonym = json.loads(_get(n, f"/studies/{study['deid_study']}")[1])
        assert by_pseudonym == study
        code, listing = _get(n, "/studies")
        assert code == 200 and uid not in listing
        assert _get(n, "/studies/1.2.3.4")[0] == 404


SECRET_UID = "1.2.826.0.1.3680043.99.424242"


@contextlib.contextmanager
def _ops(studies: Callable[[str | None], dict[str, Any]]) -> Iterator[tuple[str, int]]:
    server = OpsServer("127.0.0.1", 0, metrics=Metrics(), ready=lambda: None, studies=studies)
    server.start()
    try:
        yield server.address
    finally:
        server.stop()


def _fetch(address: tuple[str, int], path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def test_failed_request_logs_route_and_safe_traceback_not_the_uid() -> None:
    """A /studies/<original UID> request that fails answers 500 and logs the route template and
    where it failed — not the path's UID, nor the exception's message quoting it."""

    def failing(uid: str | None) -> dict[str, Any]:
        raise LookupError(f"no study row for '{uid}'")

    with capture_logs() as logs, _ops(failing) as address:
        assert _fetch(address, f"/studies/{SECRET_UID}") == 500
        assert _fetch(address, "/healthz") == 200
    [failed] = [e for e in logs if e["event"] == "ops request failed"]
    assert failed["route"] == "/studies/{uid}"
    assert "builtins.LookupError at test_ops.py:failing:" in failed["traceback"]
    assert "ops/server.py:_answer:" in failed["traceback"]
    requests = [(e["route"], e["status"]) for e in logs if e["event"] == "ops request"]
    assert requests == [("/studies/{uid}", 500), ("/healthz", 200)]
    assert SECRET_UID not in repr(logs) and "no study row" not in repr(logs)
    assert all("exc_info" not in e for e in logs)


def test_request_logs_name_routes_only() -> None:
    """Every request is logged (debug) by its route: identifiers and unknown paths are not."""
    with capture_logs() as logs, _ops(lambda uid: {"studies": []}) as address:
        assert _fetch(address, f"/studies/{SECRET_UID}?x=1") == 404
        assert _fetch(address, "/studies") == 200
        assert _fetch(address, f"/{SECRET_UID}/metrics") == 404
    routes = [e["route"] for e in logs if e["event"] == "ops request"]
    assert routes == ["/studies/{uid}", "/studies", "{unknown}"]
    assert SECRET_UID not in repr(logs)


def test_an_error_escaping_a_request_is_logged_safely() -> None:
    """What escapes a handler reaches socketserver's handle_error, which would print a plain
    traceback (with the message) to stderr: it is a safe log line instead."""
    server = OpsServer("127.0.0.1", 0, metrics=Metrics(), ready=lambda: None, studies=lambda u: {})
    try:
        with capture_logs() as logs:
            try:
                raise ValueError(f"bad path /studies/{SECRET_UID}")
            except ValueError:
                server._httpd.handle_error(None, ("127.0.0.1", 1))
    finally:
        server.stop()
    [failed] = logs
    assert failed["event"] == "ops request failed" and failed["error"] == "ValueError"
    assert SECRET_UID not in repr(logs)
