"""DICOM TLS (issue 12, item 1): DCMTK and pynetdicom peers over TLS, mutual TLS, AE titles
bound to certificate subjects, TLS-only mode, certificate reload (in process and on SIGHUP)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicomgate.scp._guard import AUTHENTICATION_FAILED, TLS_HANDSHAKE_FAILED, SecurityEvent
from dicomgate.scp._tls import client_context
from dicomgate.testing import write_tiny_study
from tests.helpers import (
    NodeHandle,
    associate,
    dicomgate_cli,
    serve_process,
    start_node,
    wait_for,
)
from tests.tls_certs import CertAuthority, Issued

# pynetdicom's requestor leaves its SSLSocket unclosed when the server refuses it after the
# client's side of a TLS 1.3 handshake completed (client certificate refused); the warning
# surfaces at garbage collection, in whichever test runs then.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@dataclass
class Pki:
    ca: CertAuthority
    server: Issued
    server2: Issued  # same CA, another subject: the reload target
    client: Issued  # CN=CT1
    pacs: Issued  # CN=pacs, O=Hospital
    stranger_ca: CertAuthority
    stranger: Issued  # CN=CT1, from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = CertAuthority(d / "ca")
    other = CertAuthority(d / "other", name="another CA")
    return Pki(
        ca=ca,
        server=ca.issue("server", "dicomgate-1", server=True),
        server2=ca.issue("server2", "dicomgate-2", server=True),
        client=ca.issue("ct1", "CT1", server=False),
        pacs=ca.issue("pacs", "pacs", server=False, organization="Hospital"),
        stranger_ca=other,
        stranger=other.issue("stranger", "CT1", server=False),
    )


def _tls_settings(pki: Pki, *, mutual: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "tls_port": 0,
        "tls_cert_file": pki.server.cert,
        "tls_key_file": pki.server.key,
        **({"tls_ca_file": pki.ca.cert} if mutual else {}),
        **extra,
    }


def _tls_port(handle: NodeHandle) -> int:
    assert handle.node.scp is not None
    address = handle.node.scp.tls_address
    assert address is not None
    return address[1]


def _tls_associate(
    port: int, pki: Pki, *, client: Issued | None, aet: str = "PYNETDICOM", ca: Path | None = None
) -> Any:
    ctx = client_context(
        ca_file=ca or pki.ca.cert,
        cert_file=client.cert if client else None,
        key_file=client.key if client else None,
    )
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="DICOMGATE", tls_args=(ctx, "localhost"))


def _server_cn(assoc: Any) -> str:
    cert = assoc.dul.socket.socket.getpeercert()
    return dict(rdn[0] for rdn in cert["subject"])["commonName"]


def _rejection(assoc: Any) -> tuple[int, int, int]:
    rj = assoc.acceptor.primitive
    return (rj.result, rj.result_source, rj.diagnostic)


def _tls_node(tmp_path: Path, pki: Pki, events: list[SecurityEvent], **overrides: Any) -> Any:
    handle = start_node(tmp_path / "data", **{**_tls_settings(pki), **overrides})
    node = handle.__enter__()
    assert node.node.scp is not None
    node.node.scp.gate.on_event = events.append  # the audit trail's hook
    return handle, node


@pytest.fixture
def tls_node(tmp_path: Path, pki: Pki) -> Iterator[tuple[NodeHandle, list[SecurityEvent]]]:
    """A node with a plaintext and a mutual-TLS listener; security events collected."""
    events: list[SecurityEvent] = []
    ctx, node = _tls_node(tmp_path, pki, events)
    try:
        yield node, events
    finally:
        ctx.__exit__(None, None, None)


def _dcmtk(
    tool: str, dcmtk: dict[str, str], port: int, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk[tool], "-aet", "CT1", "-aec", "DICOMGATE", *args, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def test_dcmtk_stores_a_study_over_mutual_tls(
    tls_node: tuple[NodeHandle, list[SecurityEvent]],
    pki: Pki,
    dcmtk: dict[str, str],
    tmp_path: Path,
) -> None:
    """DCMTK echoscu and storescu with +tls KEY CERT +cf CA: C-ECHO, then a study stored."""
    node, events = tls_node
    port = _tls_port(node)
    tls = ["+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca.cert)]
    echo = _dcmtk("echoscu", dcmtk, port, *tls)
    assert echo.returncode == 0, echo.stderr
    study = write_tiny_study(tmp_path / "study", 5)
    store = subprocess.run(
        [dcmtk["storescu"], "-aet", "CT1", "-aec", "DICOMGATE", *tls, "+sd", "+r",
         "127.0.0.1", str(port), str(tmp_path / "study")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TCP_NODELAY": "1"},
    )  # fmt: skip
    assert store.returncode == 0, store.stderr
    assert len(node.spool_files) == len(study)
    assert events == []


def test_plaintext_to_the_tls_port_fails(
    tls_node: tuple[NodeHandle, list[SecurityEvent]], pki: Pki, dcmtk: dict[str, str]
) -> None:
    """A plaintext association to the TLS port fails, is logged as a TLS failure, and the
    node serves TLS and plaintext peers afterwards."""
    node, events = tls_node
    port = _tls_port(node)
    plain = associate("127.0.0.1", port)
    assert not plain.is_established
    assert _dcmtk("echoscu", dcmtk, port).returncode != 0
    assert wait_for(lambda: len(events) >= 2)
    assert {e.kind for e in events} == {TLS_HANDSHAKE_FAILED}
    assert all(e.listener == "dicom-tls" and e.peer.startswith("127.0.0.1:") for e in events)
    ok = _tls_associate(port, pki, client=pki.client)
    assert ok.is_established
    ok.release()
    still = associate(node.host, node.port)
    assert still.is_established
    still.release()


def test_client_certificate_from_another_ca_fails(
    tls_node: tuple[NodeHandle, list[SecurityEvent]], pki: Pki, dcmtk: dict[str, str]
) -> None:
    """Mutual TLS: a client certificate from another CA, or none, is refused at the handshake."""
    node, events = tls_node
    port = _tls_port(node)
    other = ["+tls", str(pki.stranger.key), str(pki.stranger.cert), "+cf", str(pki.ca.cert)]
    assert _dcmtk("echoscu", dcmtk, port, *other).returncode != 0
    no_cert = _tls_associate(port, pki, client=None)
    assert not no_cert.is_established
    assert wait_for(lambda: len(events) >= 2)
    assert [e.kind for e in events] == [TLS_HANDSHAKE_FAILED] * 2
    assert any("certificate" in e.reason for e in events), events


def test_server_only_tls_accepts_anonymous_clients(
    tmp_path: Path, pki: Pki, dcmtk: dict[str, str]
) -> None:
    """Without tls_ca_file no client certificate is asked for (DCMTK +tla -ic... is anonymous;
    here +tls with a key pair the node does not check, and pynetdicom without one)."""
    with start_node(tmp_path / "d", **_tls_settings(pki, mutual=False)) as node:
        port = _tls_port(node)
        assoc = _tls_associate(port, pki, client=None)
        assert assoc.is_established
        assert _server_cn(assoc) == "dicomgate-1"
        assoc.release()
        anon = _dcmtk("echoscu", dcmtk, port, "+tla", "+cf", str(pki.ca.cert))
        assert anon.returncode == 0, anon.stderr


def test_weak_protocols_and_ciphers_are_refused(
    tls_node: tuple[NodeHandle, list[SecurityEvent]], pki: Pki
) -> None:
    """BCP 195: TLS 1.1 and TLS 1.2 with CBC or static-RSA suites fail; TLS 1.3 works."""
    node, _ = tls_node
    port = _tls_port(node)

    def handshake(configure: Any) -> str | None:
        ctx = client_context(
            ca_file=pki.ca.cert, cert_file=pki.client.cert, key_file=pki.client.key
        )
        configure(ctx)
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                return tls.version()
        except (ssl.SSLError, OSError):
            return None

    def tls11(ctx: ssl.SSLContext) -> None:
        with warnings.catch_warnings():  # deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")

    def tls12(ciphers: str) -> Any:
        def configure(ctx: ssl.SSLContext) -> None:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(ciphers)

        return configure

    assert handshake(tls11) is None
    assert handshake(tls12("AES128-SHA:AES256-SHA:ECDHE-RSA-AES128-SHA")) is None  # CBC
    assert handshake(tls12("AES128-GCM-SHA256:AES256-GCM-SHA384")) is None  # RSA key exchange
    assert handshake(tls12("ECDHE-RSA-AES128-GCM-SHA256")) == "TLSv1.2"
    assert handshake(tls12("ECDHE-RSA-CHACHA20-POLY1305")) == "TLSv1.2"
    assert handshake(lambda ctx: None) == "TLSv1.3"


def test_calling_ae_bound_to_certificate_subject(tmp_path: Path, pki: Pki) -> None:
    """tls_ae_subjects: CT1 must present CN=CT1, PACS the full subject CN=pacs,O=Hospital;
    another certificate or plaintext gets A-ASSOCIATE-RJ permanent, reason 3 (calling AE
    title not recognized), reported as an authentication failure. Unbound titles are free."""
    events: list[SecurityEvent] = []
    ctx, node = _tls_node(
        tmp_path, pki, events, tls_ae_subjects={"CT1": "CT1", "PACS": "O=Hospital,CN=pacs"}
    )
    try:
        port = _tls_port(node)
        ok = _tls_associate(port, pki, client=pki.client, aet="CT1")
        assert ok.is_established
        ok.release()
        pacs = _tls_associate(port, pki, client=pki.pacs, aet="PACS")
        assert pacs.is_established
        pacs.release()
        free = _tls_associate(port, pki, client=pki.client, aet="OTHER")
        assert free.is_established
        free.release()

        wrong = _tls_associate(port, pki, client=pki.client, aet="PACS")
        assert wrong.is_rejected
        assert _rejection(wrong) == (1, 1, 3)
        plain = associate(node.host, node.port, aet="CT1")
        assert plain.is_rejected
        assert _rejection(plain) == (1, 1, 3)

        assert [e.kind for e in events] == [AUTHENTICATION_FAILED] * 2
        assert events[0].calling_ae == "PACS" and events[0].tls_subject == "CN=CT1"
        assert events[0].rj == (1, 1, 3) and events[0].listener == "dicom-tls"
        assert events[1].listener == "dicom" and events[1].tls_subject is None
    finally:
        ctx.__exit__(None, None, None)


def test_tls_only_refuses_plaintext(tmp_path: Path, pki: Pki, dcmtk: dict[str, str]) -> None:
    """plaintext = false: the plaintext port is not opened and the only port speaks TLS."""
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with start_node(tmp_path / "d", port=free_port, plaintext=False, **_tls_settings(pki)) as node:
        assert node.node.scp is not None and node.node.scp.plaintext_address is None
        port = _tls_port(node)
        assert node.port == port  # Node.start() returns the TLS address
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", free_port), timeout=5).close()
        assert not associate("127.0.0.1", port).is_established
        assert _dcmtk("echoscu", dcmtk, port).returncode != 0
        tls = ["+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca.cert)]
        assert _dcmtk("echoscu", dcmtk, port, *tls).returncode == 0


def test_echo_command_speaks_tls(tmp_path: Path, pki: Pki) -> None:
    """dicomgate echo --tls (the health check of a TLS-only node), with and without a client
    certificate, verifying the node's certificate or not."""
    with start_node(tmp_path / "d", plaintext=False, **_tls_settings(pki)) as node:
        port = str(_tls_port(node))
        mutual = ["--tls", "--ca", str(pki.ca.cert), "--cert", str(pki.client.cert)]
        ok = dicomgate_cli("echo", "127.0.0.1", port, *mutual, "--key", str(pki.client.key))
        assert ok.returncode == 0, ok.stderr
        assert "success" in ok.stdout
        no_cert = dicomgate_cli("echo", "127.0.0.1", port, "--tls", "--ca", str(pki.ca.cert))
        assert no_cert.returncode == 1
        plain = dicomgate_cli("echo", "127.0.0.1", port)
        assert plain.returncode == 1
        loopback = dicomgate_cli(
            "echo", "127.0.0.1", port, "--tls", "--no-verify",
            "--cert", str(pki.client.cert), "--key", str(pki.client.key),
        )  # fmt: skip
        assert loopback.returncode == 0, loopback.stderr
        bad_usage = dicomgate_cli("echo", "127.0.0.1", port, "--ca", str(pki.ca.cert))
        assert bad_usage.returncode == 2


def _swap_certificate(pki: Pki, live: Path) -> tuple[Path, Path]:
    """Copies of the server certificate and key the node reads (replaced later)."""
    live.mkdir(parents=True, exist_ok=True)
    cert, key = live / "server.pem", live / "server.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    return cert, key


def _replace(src: Issued, cert: Path, key: Path) -> None:
    for source, target in ((src.cert, cert), (src.key, key)):
        tmp = target.with_suffix(".new")
        shutil.copy(source, tmp)
        tmp.replace(target)  # atomic, as a certificate manager writes them


def test_reload_keeps_open_associations(tmp_path: Path, pki: Pki) -> None:
    """Node.reload_tls(): an association opened before keeps working on the old certificate;
    one opened after gets the new certificate. A broken file keeps the old context."""
    cert, key = _swap_certificate(pki, tmp_path / "live")
    overrides = _tls_settings(pki, tls_cert_file=cert, tls_key_file=key)
    with start_node(tmp_path / "d", **overrides) as node:
        port = _tls_port(node)
        before = _tls_associate(port, pki, client=pki.client)
        assert before.is_established and _server_cn(before) == "dicomgate-1"
        _replace(pki.server2, cert, key)
        assert node.node.reload_tls()
        after = _tls_associate(port, pki, client=pki.client)
        assert after.is_established and _server_cn(after) == "dicomgate-2"
        assert before.send_c_echo().Status == 0  # the old association carries on
        before.release()
        after.release()
        key.write_text("not a key")
        assert not node.node.reload_tls()
        again = _tls_associate(port, pki, client=pki.client)
        assert again.is_established and _server_cn(again) == "dicomgate-2"
        again.release()


def test_sighup_swaps_certificates_while_an_association_is_open(tmp_path: Path, pki: Pki) -> None:
    """dicomgate serve as a process: SIGHUP reloads the certificate for new connections while
    an association opened before it stays open and answers C-ECHO."""
    cert, key = _swap_certificate(pki, tmp_path / "live")
    env = {
        "DICOMGATE_TLS_PORT": "0",
        "DICOMGATE_TLS_CERT_FILE": str(cert),
        "DICOMGATE_TLS_KEY_FILE": str(key),
        "DICOMGATE_TLS_CA_FILE": str(pki.ca.cert),
    }
    with serve_process(tmp_path / "d", env=env) as proc:
        assert wait_for(lambda: proc.events("node started"), timeout=30)
        started = proc.events("node started")[0]
        tls_port = int(started["tls_listen"].rsplit(":", 1)[1])
        assert started["listen"] != "disabled (TLS only)"
        before = _tls_associate(tls_port, pki, client=pki.client)
        assert before.is_established and _server_cn(before) == "dicomgate-1"
        _replace(pki.server2, cert, key)
        proc.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: proc.events("tls certificates reloaded"), timeout=30)
        assert proc.events("tls certificates reloaded")[0]["subject"] == "CN=dicomgate-2"
        after = _tls_associate(tls_port, pki, client=pki.client)
        assert after.is_established and _server_cn(after) == "dicomgate-2"
        assert before.send_c_echo().Status == 0
        before.release()
        after.release()
        assert proc.proc.poll() is None  # SIGHUP did not stop it


def test_workers_serve_tls_and_reload_on_sighup(
    tmp_path: Path, pki: Pki, dcmtk: dict[str, str]
) -> None:
    """serve --workers 2 with TLS: both listeners are the supervisor's sockets, DCMTK stores
    over mutual TLS to whichever worker accepts, and SIGHUP to the supervisor reaches every
    worker (each reloads its certificate)."""
    cert, key = _swap_certificate(pki, tmp_path / "live")
    env = {
        "DICOMGATE_WORKERS": "2",
        "DICOMGATE_TLS_PORT": "0",
        "DICOMGATE_TLS_CERT_FILE": str(cert),
        "DICOMGATE_TLS_KEY_FILE": str(key),
        "DICOMGATE_TLS_CA_FILE": str(pki.ca.cert),
    }
    with serve_process(tmp_path / "d", env=env, listeners=2) as proc:
        started = proc.events("node started")
        tls_ports = {int(e["tls_listen"].rsplit(":", 1)[1]) for e in started}
        assert len(started) == 2 and len(tls_ports) == 1  # one TLS port, both workers
        [tls_port] = tls_ports
        tls = ["+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca.cert)]
        write_tiny_study(tmp_path / "study", 4)
        for _ in range(3):  # several associations: whichever worker accepts, TLS works
            store = subprocess.run(
                [dcmtk["storescu"], "-aet", "CT1", "-aec", "DICOMGATE", *tls, "+sd", "+r",
                 "127.0.0.1", str(tls_port), str(tmp_path / "study")],
                capture_output=True, text=True, timeout=120,
                env={**os.environ, "TCP_NODELAY": "1"},
            )  # fmt: skip
            assert store.returncode == 0, store.stderr
        _replace(pki.server2, cert, key)
        proc.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: len(proc.events("tls certificates reloaded")) == 2, timeout=30), [
            (e.get("node"), e["event"]) for e in proc.lines if "tls" in e["event"]
        ]
        assert {e["node"] for e in proc.events("tls certificates reloaded")} == {
            e["node_id"] for e in started
        }
        after = _tls_associate(tls_port, pki, client=pki.client)
        assert after.is_established and _server_cn(after) == "dicomgate-2"
        after.release()
