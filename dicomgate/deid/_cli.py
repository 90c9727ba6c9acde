"""``dicomgate deidentify IN OUT``: the node's engine, options and key, on files.

IN is a file or a folder tree.  OUT mirrors IN's relative paths by default, or, with
``--rename``, is a folder laid out by the pseudonymized UIDs the output carries,
``<study>/<series>/<instance>.dcm``: the node's delivery layout
(:mod:`dicomgate.delivery.layout`), so offline and delivered output compare file for file, and
no folder holds a whole archive.
Names are kept by default because that is what a folder of de-identified files is expected to
look like and what scripts around it rely on; but input names are often SOP Instance UIDs or
patient names, so ``--rename`` is the choice for output that is shared.  With ``--rename``
nothing this command prints quotes an input name: a file is "input #N", its position in IN's
sorted listing.

Work runs in a process pool over the cores; a progress bar shows on a terminal.  The summary
lists what was quarantined and why; the exit status is 1 when anything was quarantined or
failed, 2 for bad settings.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import click

from dicomgate._logging import configure_logging, configure_worker_logging
from dicomgate.config import CONFIG_ENV, DeidOption
from dicomgate.deid._profile import profile_from_settings
from dicomgate.deid._worker import (
    DeidConfig,
    FileResult,
    _write_atomic,
    deidentify_bytes,
    deidentify_file,
    door_check,
)
from dicomgate.delivery.layout import instance_key
from dicomgate.pseudonym import secret_key_for

__all__ = ["deidentify"]


def _inputs(source: Path, dest: Path) -> list[tuple[Path, Path, str]]:
    """``(input file, output file, relative name)`` for every file under ``source``."""
    if source.is_file():
        target = dest / source.name if dest.is_dir() else dest
        return [(source, target, source.name)]
    pairs = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (.DS_Store, .git) are not instances
        pairs.append((path, dest / rel, rel.as_posix()))
    return pairs


def deidentify_renamed(source: str | Path, dest_root: str | Path, config: DeidConfig) -> FileResult:
    """De-identify ``source`` into ``dest_root/<study>/<series>/<instance>.dcm`` (a pool task).

    The name is made from the UIDs the output carries, so it is whatever the engine wrote
    (pseudonyms, or the originals under ``retain_uids``); :func:`instance_key` refuses anything
    that is not a UID, so a name can never leave ``dest_root``.  Error texts never quote a
    file name (an ``OSError``'s ``filename`` is dropped).
    """
    src = str(source)
    try:
        refused = door_check(Path(source))
        data = Path(source).read_bytes()
    except OSError as exc:
        return FileResult(source=src, error=f"{type(exc).__name__}: {exc.strerror}")
    if refused is not None:
        return refused
    result, out = deidentify_bytes(data, config)
    result = dataclasses.replace(result, source=src)
    if out is None:
        return result
    try:
        key = instance_key(
            result.study_instance_uid or "",
            result.series_instance_uid or "",
            result.sop_instance_uid or "",
        )
    except ValueError:
        return dataclasses.replace(
            result, error="no well-formed Study/Series/SOP Instance UID to name the output by"
        )
    target = Path(dest_root) / key
    try:
        _write_atomic(target, out)
    except OSError as exc:
        return dataclasses.replace(result, error=f"{type(exc).__name__}: {exc.strerror}")
    return dataclasses.replace(result, output=str(target))


def _progress(results: Iterator[FileResult], total: int) -> Iterator[FileResult]:
    if not sys.stderr.isatty():
        yield from results
        return
    from tqdm import tqdm

    yield from tqdm(results, total=total, unit="inst", file=sys.stderr, leave=False)


@click.command("deidentify")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar=CONFIG_ENV,
    help="TOML settings file (environment variables and flags override it).",
)
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Where the key lives."
)
@click.option(
    "--option",
    "options",
    multiple=True,
    type=click.Choice([o.value for o in DeidOption]),
    help="PS3.15 Annex E option (repeatable); replaces deid_options from the settings.",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker processes [all cores].")
@click.option(
    "--rename/--keep-names",
    default=False,
    help="OUT is a folder of <study>/<series>/<instance>.dcm named by the pseudonymized UIDs, "
    "and no input name is printed [--keep-names: OUT mirrors IN's paths].",
)
def deidentify(
    source: Path,
    dest: Path,
    config_file: Path | None,
    data_dir: Path | None,
    options: tuple[str, ...],
    jobs: int | None,
    rename: bool,
) -> None:
    """De-identify IN (a file or a folder tree) into OUT, as the node would (PS3.15 Annex E)."""
    from dicomgate.cli import settings_or_exit

    overrides: dict[str, Any] = {"data_dir": data_dir}
    if options:
        overrides["deid_options"] = list(options)
    settings = settings_or_exit(config_file, flag_names={"deid_options": "--option"}, **overrides)
    # pydicom's warnings quote values (original UIDs): through the redacting pipeline
    log_setup = configure_logging(settings.log_level, settings.log_format)
    try:
        profile_from_settings(settings)  # fail fast on contradictory options or bad overrides
        secret = secret_key_for(settings)
    except (ValueError, OSError) as exc:
        click.echo(f"dicomgate: {exc}", err=True)
        sys.exit(2)
    if secret.origin == "generated":
        # A new key means pseudonyms unrelated to any node's: say so before the work, loudly.
        click.echo(
            f"dicomgate: WARNING: generated a new secret key in {secret.path}: these "
            "pseudonyms will not match any node's. To use a node's key, pass --data-dir with "
            "the node's data directory or set DICOMGATE_SECRET_KEY_FILE to its key file.",
            err=True,
        )
    if dest.resolve() == source.resolve():
        click.echo("dicomgate: OUT must differ from IN", err=True)
        sys.exit(2)
    config = DeidConfig.from_settings(settings, secret.value)
    work = _inputs(source, dest)
    if rename:
        names = {str(src): f"input #{i}" for i, (src, _, _) in enumerate(work, 1)}
    else:
        names = {str(src): rel for src, _, rel in work}
    workers = jobs or os.cpu_count() or 1
    counts: Counter[str] = Counter()
    problems: list[str] = []
    srcs = [src for src, _, _ in work]
    if rename:
        task: Any = deidentify_renamed
        dsts: list[Path] = [dest] * len(work)  # the root: names come from the output
    else:
        task = deidentify_file
        dsts = [dst for _, dst, _ in work]
    if workers == 1 or len(work) <= 1:
        results: Iterator[FileResult] = map(task, srcs, dsts, repeat(config))
        _collect(_progress(results, len(work)), names, counts, problems)
    else:
        chunk = max(1, min(16, len(work) // (workers * 8)))
        with ProcessPoolExecutor(
            max_workers=workers, initializer=configure_worker_logging, initargs=(log_setup,)
        ) as pool:
            results = pool.map(task, srcs, dsts, repeat(config), chunksize=chunk)
            _collect(_progress(results, len(work)), names, counts, problems)
    if rename and problems:
        problems.append("(input #N: the Nth file of IN in sorted path order, hidden files skipped)")
    for line in problems:
        click.echo(line, err=True)
    click.echo(
        f"{counts['written']} written, {counts['quarantined']} quarantined, "
        f"{counts['failed']} failed (of {len(work)} files) -> {dest}"
    )
    sys.exit(1 if counts["quarantined"] or counts["failed"] else 0)


def _collect(
    results: Iterator[FileResult], names: dict[str, str], counts: Counter[str], problems: list[str]
) -> None:
    written: dict[str, str | None] = {}  # output -> sha256: two inputs, one name
    for result in results:
        name = names.get(result.source, "input")
        if result.output in written and written[result.output] != result.sha256:
            counts["failed"] += 1
            problems.append(
                f"failed {name}: another input has the same SOP Instance UID and different "
                "content; only one of them is kept"
            )
            continue
        if result.output is not None:
            written[result.output] = result.sha256
        if result.error is not None:
            counts["failed"] += 1
            problems.append(f"failed {name}: {result.error}")
        elif result.quarantine_reason is not None:
            counts["quarantined"] += 1
            detail = "; ".join(result.findings[:5])
            suffix = f" ({detail})" if detail else ""
            problems.append(f"quarantined {name}: {result.quarantine_reason}{suffix}")
        else:
            counts["written"] += 1
