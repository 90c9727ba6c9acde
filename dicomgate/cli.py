"""The ``dicomgate`` command: serve, echo, status (and the commands other subpackages add)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dicomgate.config import (
    CONFIG_ENV,
    ECHO_AET_ENV,
    Settings,
    SettingsError,
    load_settings,
    unknown_environment,
)

if TYPE_CHECKING:  # the store's modules are imported by the commands that need them
    from dicomgate.audit import AuditTrail
    from dicomgate.state import StateStore

__all__ = ["main"]

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar=CONFIG_ENV,
    help="TOML settings file (environment variables and flags override it).",
)
_data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Spool, state and key."
)


def settings_or_exit(
    config_file: Path | None,
    *,
    flag_names: dict[str, str] | None = None,
    warn_environment: bool = True,
    **overrides: Any,
) -> Settings:
    """Load settings; on an invalid one print the message naming it and exit with status 2.

    ``overrides`` are the command's flags, by setting name; an invalid one is reported as the
    flag (``--data-dir``), which ``flag_names`` spells when it is not the setting's name with
    dashes.  Unknown ``DICOMGATE_*`` variables are warned about on stderr, unless the caller
    logs them itself (``serve``: its stderr is the structured log).
    """
    names = {k: "--" + k.replace("_", "-") for k in overrides} | (flag_names or {})
    try:
        settings = load_settings(config_file, flag_names=names, **overrides)
    except SettingsError as exc:
        for warning in unknown_environment():
            click.echo(f"dicomgate: warning: {warning}", err=True)
        for line in str(exc).splitlines():
            click.echo(f"dicomgate: {line}", err=True)
        sys.exit(2)
    if warn_environment:
        for warning in unknown_environment():
            click.echo(f"dicomgate: warning: {warning}", err=True)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dicomgate")
def main() -> None:
    """dicomgate: receive DICOM studies, de-identify them, deliver them with expiring links."""


@main.command()
@_config_option
@click.option("--host", help="Address to listen on [0.0.0.0].")
@click.option("--port", type=int, help="TCP port [11112].")
@click.option("--ae-title", help="This node's AE title [DICOMGATE].")
@_data_dir_option
@click.option("--destination", help="s3://bucket/prefix or file:///path.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]))
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    help="Node processes sharing the port (SO_REUSEPORT); 0: one per core [workers setting: 0].",
)
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run the node: the DICOM SCP (C-ECHO, C-STORE) and the delivery pipeline.

    With more than one worker (the default on a multi-core machine) each worker is a node of
    its own on the same port, sharing the data directory, spool and state store.
    """
    from dicomgate._process import available_cpus
    from dicomgate.node import run_node
    from dicomgate.supervisor import run_workers

    settings = settings_or_exit(config_file, warn_environment=False, **flags)
    workers = settings.workers or available_cpus()
    if workers == 1:
        sys.exit(run_node(settings, warnings=unknown_environment()))
    sys.exit(run_workers(settings, workers, warnings=unknown_environment()))


@main.command()
@click.argument("host")
@click.argument("port", type=int)
@click.option(
    "--aet",
    envvar=ECHO_AET_ENV,
    default="DICOMGATE_SCU",
    show_default=True,
    help=f"Our (calling) AE title [${ECHO_AET_ENV}]; a node with allowed_calling_ae_titles "
    "must list it.",
)
@click.option("--aec", help="The called AE title [the ae_title setting: DICOMGATE].")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait.")
@click.option("--tls", is_flag=True, help="DICOM TLS (the node's tls_port, 2762 by default).")
@click.option(
    "--ca",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="With --tls: CA certificates (PEM) that issued the node's certificate [system CAs].",
)
@click.option(
    "--cert",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="With --tls: our client certificate chain (PEM), for a node with mutual TLS.",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="With --tls: the private key of --cert (PEM).",
)
@click.option(
    "--server-name",
    help="With --tls: the name the node's certificate must carry [HOST].",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="With --tls: do not check the node's certificate (a health check of the node itself "
    "over loopback; never across a network).",
)
@_config_option
def echo(
    host: str,
    port: int,
    aet: str,
    aec: str | None,
    timeout: float,
    tls: bool,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    server_name: str | None,
    no_verify: bool,
    config_file: Path | None,
) -> None:
    """Send a C-ECHO; exit status 0 on success, 1 otherwise (for health checks).

    The defaults come from the node's settings (--config, DICOMGATE_* variables), so a health
    check run beside the node addresses it by its own AE title. --tls speaks DICOM TLS (a
    TLS-only node); --cert/--key present a client certificate (a node with tls_ca_file).
    """
    import ssl

    from dicomgate.scp import echo as send_echo
    from dicomgate.scp._tls import client_context

    settings = settings_or_exit(config_file)
    called = aec or settings.ae_title
    context = None
    if (ca or cert or key or server_name or no_verify) and not tls:
        click.echo(
            "dicomgate: --ca, --cert, --key, --server-name and --no-verify need --tls", err=True
        )
        sys.exit(2)
    if (cert is None) != (key is None):
        click.echo("dicomgate: --cert and --key go together", err=True)
        sys.exit(2)
    if tls:
        try:
            context = client_context(ca_file=ca, cert_file=cert, key_file=key, verify=not no_verify)
        except (OSError, ssl.SSLError) as exc:
            click.echo(f"dicomgate: cannot use the TLS files: {exc}", err=True)
            sys.exit(2)
    ok, message = send_echo(
        host,
        port,
        calling_ae=aet,
        called_ae=called,
        timeout=timeout,
        tls=context,
        server_name=server_name,
    )
    click.echo(message, err=not ok)
    allowed = settings.allowed_calling_ae_titles
    if not ok and allowed and aet.strip() not in allowed:
        # The usual cause of a failing health check on a locked-down node (PS3.8 Table 9-21
        # reason 3, calling AE title not recognised): say what to change.
        click.echo(
            f"dicomgate: the calling AE title {aet} is not in allowed_calling_ae_titles "
            f"({', '.join(allowed)}); pass --aet or set {ECHO_AET_ENV} to one of them, "
            "or add it to the list",
            err=True,
        )
    sys.exit(0 if ok else 1)


@main.group()
def state() -> None:
    """The state store (DICOMGATE_STATE): create it, or migrate an older one."""


@state.command("init")
@_config_option
@_data_dir_option
def state_init(config_file: Path | None, data_dir: Path | None) -> None:
    """Create the state store (SQLite file, DynamoDB table) if missing; migrate an old one.

    A node does this itself at start-up; run it ahead (from a deploy job) where nodes should
    find everything in place.
    """
    from dicomgate.state import StateError, open_state

    settings = settings_or_exit(config_file, data_dir=data_dir)
    try:
        with open_state(settings, create=True) as store:
            studies = len(store.status_report()["studies"])
    except StateError as exc:
        click.echo(f"dicomgate: {exc} (DICOMGATE_STATE)", err=True)
        sys.exit(1)
    where = settings.state_path if settings.state == "sqlite" else settings.state
    click.echo(f"state store ready: {where} ({studies} studies)")


@state.command("migrate")
@_config_option
@_data_dir_option
def state_migrate(config_file: Path | None, data_dir: Path | None) -> None:
    """Move an existing store to this version's schema, keeping every row (never creates)."""
    from dicomgate.state import StateError, open_state

    settings = settings_or_exit(config_file, data_dir=data_dir)
    if settings.state == "sqlite" and not settings.state_path.exists():
        click.echo(f"dicomgate: no state store at {settings.state_path}", err=True)
        sys.exit(1)
    try:
        with open_state(settings, create=False) as store:
            rows = len(store.instances())
    except StateError as exc:
        click.echo(f"dicomgate: {exc} (DICOMGATE_STATE)", err=True)
        sys.exit(1)
    click.echo(f"state store migrated: {rows} instances kept")


@contextlib.contextmanager
def _audit_trail(settings: Settings) -> Iterator[AuditTrail]:
    """The node's audit file for a one-shot command (each message fsync'd; the node's sender
    forwards it); the null trail, with a warning, when it cannot be used."""
    from dicomgate.audit import NULL_TRAIL, trail_for
    from dicomgate.pseudonym import Pseudonymizer, secret_key_for

    trail = NULL_TRAIL
    try:
        if settings.audit_enabled:
            pseudonymizer = Pseudonymizer(secret_key_for(settings).value)
            trail = trail_for(settings, pseudonymizer, background=False).open()
    except (OSError, ValueError) as exc:
        click.echo(f"dicomgate: warning: audit trail unavailable ({type(exc).__name__})", err=True)
        trail = NULL_TRAIL
    try:
        yield trail
    finally:
        trail.close()


def _open_store(settings: Settings) -> StateStore:
    """The node's state store, read-only; exits with a message when there is none."""
    from dicomgate.state import StateError, open_state

    if settings.state == "sqlite" and not settings.state_path.exists():
        click.echo(f"dicomgate: no state store at {settings.state_path}", err=True)
        sys.exit(1)
    try:
        return open_state(settings, readonly=True, create=False)
    except StateError as exc:
        click.echo(f"dicomgate: {exc} (DICOMGATE_STATE)", err=True)
        sys.exit(1)


@main.command()
@_config_option
@_data_dir_option
@click.argument("study", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(
    config_file: Path | None, data_dir: Path | None, study: str | None, as_json: bool
) -> None:
    """Show what the state store holds: nodes, studies and their instances by state."""
    from dicomgate.state import InstanceState

    settings = settings_or_exit(config_file, data_dir=data_dir)
    with _open_store(settings) as store:
        report = store.status_report(study)
        nodes = store.nodes()
        claimed: dict[str, int] = {}
        for in_work in (InstanceState.RECEIVED, InstanceState.PROCESSED):
            for r in store.instances(state=in_work):
                if r.lease_owner is not None:
                    claimed[r.lease_owner] = claimed.get(r.lease_owner, 0) + 1
    _group_quarantined(report["studies"])
    report["nodes"] = [
        {
            "node_id": n.node_id,
            "alive": n.alive,
            "last_heartbeat": n.last_heartbeat,
            "open_associations": n.open_associations,
            "claimed": claimed.get(n.node_id, 0),
        }
        for n in nodes
    ]
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        sys.exit(1 if study and not report["studies"] else 0)
    for n in report["nodes"]:
        click.echo(
            f"node {n['node_id']}  {'alive' if n['alive'] else 'dead'}  "
            f"{n['open_associations']} open associations, {n['claimed']} instances claimed"
        )
    studies = report["studies"]
    if not studies:
        click.echo(f"no study {study}" if study else "no studies")
        sys.exit(1 if study else 0)
    for s in studies:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(s["instances_by_state"].items()))
        click.echo(f"{s['study']}  {s['state']}  {s['instances']} instances ({counts})")
        if s["manifest_version"] and s["instances_by_state"].get("delivered"):
            click.echo(f"    delivered as {s['deid_study']}  manifest v{s['manifest_version']}")
        elif s["manifest_version"]:
            click.echo(
                f"    nothing delivered (every instance held back); reported as "
                f"{s['deid_study']}  manifest v{s['manifest_version']}"
            )
        if s.get("expected"):  # what the sender said (storage commitment, MPPS)
            click.echo(
                f"    expected {s['expected']} instances, {s['expected_received']} received"
                + (f", {len(s['missing'])} missing" if s["missing"] else "")
            )
            for uid in s["missing"]:
                click.echo(f"        missing {uid}")
        if s.get("pending_commitments"):
            click.echo(f"    {len(s['pending_commitments'])} storage commitments pending")
            for txn in s["pending_commitments"]:
                click.echo(f"        transaction {txn}")
        for m in s.get("mpps", []):
            reason = f" ({m['reason']})" if m.get("reason") else ""
            click.echo(f"    procedure step {m['instance']}  {m['status']}{reason}")
        for rule, count in s["quarantined_by_rule"].items():
            click.echo(f"    {rule}: {count} quarantined")
            for q in s["quarantined"]:
                if q["rule"] == rule:
                    click.echo(
                        f"        {q['instance']} (delivered name {q['deid_instance']}, "
                        f"{q['stage']}): {q['reason']}"
                    )


def _group_quarantined(studies: list[dict[str, Any]]) -> None:
    """Name the rule of each quarantined instance (``dicomgate.quarantine``) and count them
    per rule, in the rules' order, for each study of a status report (in place)."""
    from dicomgate.quarantine import Rule, rule_of

    for s in studies:
        counts = dict.fromkeys(Rule, 0)
        for q in s["quarantined"]:
            rule = rule_of(q["stage"], q["reason"])
            q["rule"] = rule.value
            counts[rule] += 1
        s["quarantined_by_rule"] = {r.value: n for r, n in counts.items() if n}


@main.command()
@_config_option
@_data_dir_option
@click.argument("study")
@click.option("--json", "as_json", is_flag=True, help="The link set as JSON.")
@click.option(
    "--expires",
    "expires_in",
    type=click.IntRange(1, 7 * 24 * 3600),
    help="Link lifetime in seconds [link_expiry setting].",
)
@click.option("--destination", help="s3://bucket/prefix or file:///path.")
def links(
    config_file: Path | None,
    data_dir: Path | None,
    study: str,
    as_json: bool,
    expires_in: int | None,
    destination: str | None,
) -> None:
    """Re-issue download links for STUDY (original or pseudonymized Study Instance UID)."""
    import asyncio

    from dicomgate.delivery.errors import DeliveryError
    from dicomgate.delivery.reissue import StudyNotDeliveredError, reissue_links

    settings = settings_or_exit(config_file, data_dir=data_dir, destination=destination)
    with _open_store(settings) as store:
        record = store.study(study)
        what = f"links expires={expires_in or settings.link_expiry}"
        with _audit_trail(settings) as trail:
            try:
                link_set = asyncio.run(reissue_links(settings, store, study, expires_in=expires_in))
            except (StudyNotDeliveredError, DeliveryError) as exc:
                trail.query(
                    study=study,
                    study_uid=record.study_instance_uid if record is not None else None,
                    what=what,
                    outcome="4",
                    description=type(exc).__name__,
                )
                click.echo(f"dicomgate: {exc}", err=True)
                sys.exit(1)
            trail.query(
                study=study,
                study_uid=record.study_instance_uid if record is not None else None,
                what=what,
                description=f"links to manifest v{link_set.manifest_version} issued",
            )
    if as_json:
        click.echo(link_set.model_dump_json(indent=2))
        return
    click.echo(f"study {link_set.study_instance_uid}  manifest v{link_set.manifest_version}")
    if link_set.expires_at is not None:
        click.echo(f"links expire {link_set.expires_at.isoformat()}")
    else:
        click.echo("file paths on this machine (a file:// destination): they do not expire")
    click.echo(f"manifest  {link_set.manifest.url}")
    click.echo(f"index     {link_set.index.url}")
    for inst in link_set.instances:
        click.echo(f"instance  {inst.url}")


from dicomgate.deid._cli import deidentify  # noqa: E402

main.add_command(deidentify)
