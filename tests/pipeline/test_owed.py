"""A notification that cannot be delivered is never recorded as sent (issue 11, item 6)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydicom import dcmread
from structlog.testing import capture_logs

from dicomgate.testing import write_ct_study
from tests.helpers import send_files, start_node, wait_for
from tests.pipeline.webhook import SECRET, webhook_server


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"  # nothing listens: connection refused, retryable


def test_notification_given_up_stays_owed_and_is_sent_after_restart(tmp_path: Path) -> None:
    """retry_for spent: the study stays owed (metric, status), and the next start announces it."""
    paths = write_ct_study(tmp_path / "s", 2, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    data_dir = tmp_path / "data"
    settings = {"stable_after": 0.3, "retry_for": 1, "notify_webhook_secret": SECRET}
    with (
        capture_logs() as logs,
        start_node(data_dir, pipeline=True, notify_webhook_url=_closed_port_url(), **settings) as n,
    ):
        assert send_files(n.host, n.port, paths) == [0, 0]
        state, registry = n.node.state, n.node.metrics.registry
        assert state is not None
        assert wait_for(lambda: state.study(uid).manifest_version == 1, timeout=20)  # type: ignore[union-attr]
        # given up after retry_for (the publisher says so), not before
        assert wait_for(
            lambda: any(e["event"] == "notification not delivered, study stays owed" for e in logs),
            timeout=20,
        )
        assert wait_for(
            lambda: registry.get_sample_value("dicomgate_notifications_owed") == 1, timeout=20
        )
        failures = registry.get_sample_value(
            "dicomgate_notification_failures_total", {"notifier": "webhook", "retryable": "true"}
        )
        assert failures is not None and failures >= 2  # retried before giving up
        assert state.study(uid).notified_version == 0  # type: ignore[union-attr]
        [study] = state.status_report()["studies"]
        assert study["notified_version"] == 0 and study["manifest_version"] == 1

    with (
        webhook_server() as hook,
        start_node(data_dir, pipeline=True, notify_webhook_url=hook.url, **settings) as n,
    ):
        assert wait_for(lambda: hook.versions() == [1], timeout=20)
        assert n.node.state is not None
        assert wait_for(lambda: n.node.state.study(uid).notified_version == 1, timeout=10)  # type: ignore[union-attr]
        assert hook.latest()["id"].endswith("/v1")
