"""Association policy: calling/called AE titles and peer networks, refused with A-ASSOCIATE-RJ."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from dicomgate.scp import AccessPolicy
from tests.helpers import associate, start_node


def _rejection(assoc: object) -> tuple[int, int, int]:
    rj = assoc.acceptor.primitive  # type: ignore[attr-defined]
    return (rj.result, rj.result_source, rj.diagnostic)


def test_unknown_calling_ae_rejected_reason_3(tmp_path: Path, dcmtk: dict[str, str]) -> None:
    """A calling AE title not on the allow list is rejected permanently, reason 3."""
    with start_node(tmp_path / "d", allowed_calling_ae_titles=["CT1", "PACS"]) as n:
        stranger = associate(n.host, n.port, aet="STRANGER")
        assert stranger.is_rejected
        assert _rejection(stranger) == (1, 1, 3)

        friend = associate(n.host, n.port, aet="PACS")
        assert friend.is_established
        friend.release()

        dcmtk_rejected = subprocess.run(
            [dcmtk["echoscu"], "-aet", "STRANGER", "-aec", "DICOMGATE", n.host, str(n.port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert dcmtk_rejected.returncode != 0
        assert "Calling AE Title Not Recognized" in dcmtk_rejected.stderr + dcmtk_rejected.stdout


def test_wrong_called_ae_rejected_reason_7(tmp_path: Path) -> None:
    """An association to another called AE title is rejected permanently, reason 7."""
    with start_node(tmp_path / "d") as n:
        wrong = associate(n.host, n.port, aec="OTHER")
        assert wrong.is_rejected
        assert _rejection(wrong) == (1, 1, 7)


def test_called_ae_not_required(tmp_path: Path) -> None:
    """With require_called_ae_title off, any called AE title is accepted."""
    with start_node(tmp_path / "d", require_called_ae_title=False) as n:
        assoc = associate(n.host, n.port, aec="ANYTHING")
        assert assoc.is_established
        assoc.release()


def test_peer_network_not_allowed_rejected(tmp_path: Path) -> None:
    """A peer outside the allowed networks is rejected (permanent, no reason given)."""
    with start_node(tmp_path / "d", allowed_networks=["10.0.0.0/8", "192.168.0.0/16"]) as n:
        assoc = associate(n.host, n.port)
        assert assoc.is_rejected
        assert _rejection(assoc) == (1, 1, 1)


def test_peer_network_allowed(tmp_path: Path) -> None:
    """A peer inside an allowed network associates normally."""
    with start_node(tmp_path / "d", allowed_networks=["127.0.0.0/8"]) as n:
        assoc = associate(n.host, n.port)
        assert assoc.is_established
        assoc.release()


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("127.0.0.1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped IPv6 on a dual-stack socket
        ("10.1.2.3", False),
        ("not-an-address", False),
    ],
)
def test_policy_network_matching(peer: str, allowed: bool) -> None:
    """Network rules match IPv4, IPv4-mapped IPv6, and refuse unparseable peers."""
    policy = AccessPolicy(
        ae_title="DICOMGATE", allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    decision = policy.check(calling_ae="X", called_ae="DICOMGATE", peer_address=peer)
    assert (decision is None) is allowed
