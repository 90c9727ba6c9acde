"""``dicomgate deidentify IN OUT``: the node's engine, options and key, on files.

IN is a file or a folder tree; OUT mirrors IN's relative paths.  Work runs in a process pool over
the cores; a progress bar shows on a terminal.  The summary lists what was quarantined and why;
the exit status is 1 when anything was quarantined or failed, 2 for bad settings.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import click

from dicomgate.config import DeidOption
from dicomgate.deid._profile import profile_from_settings
from dicomgate.deid._worker import DeidConfig, FileResult, deidentify_file
from dicomgate.pseudonym import key_for

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
    envvar="DICOMGATE_CONFIG",
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
def deidentify(
    source: Path,
    dest: Path,
    config_file: Path | None,
    data_dir: Path | None,
    options: tuple[str, ...],
    jobs: int | None,
) -> None:
    """De-identify IN (a file or a folder tree) into OUT, as the node would (PS3.15 Annex E)."""
    from dicomgate.cli import settings_or_exit

    overrides: dict[str, Any] = {"data_dir": data_dir}
    if options:
        overrides["deid_options"] = list(options)
    settings = settings_or_exit(config_file, **overrides)
    try:
        profile_from_settings(settings)  # fail fast on contradictory options or bad overrides
        key = key_for(settings)
    except (ValueError, OSError) as exc:
        click.echo(f"dicomgate: {exc}", err=True)
        sys.exit(2)
    if dest.resolve() == source.resolve():
        click.echo("dicomgate: OUT must differ from IN", err=True)
        sys.exit(2)
    config = DeidConfig.from_settings(settings, key)
    work = _inputs(source, dest)
    names = {str(src): rel for src, _, rel in work}
    workers = jobs or os.cpu_count() or 1
    counts: Counter[str] = Counter()
    problems: list[str] = []
    srcs = [src for src, _, _ in work]
    dsts = [dst for _, dst, _ in work]
    if workers == 1 or len(work) <= 1:
        results: Iterator[FileResult] = map(deidentify_file, srcs, dsts, repeat(config))
        _collect(_progress(results, len(work)), names, counts, problems)
    else:
        chunk = max(1, min(16, len(work) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(deidentify_file, srcs, dsts, repeat(config), chunksize=chunk)
            _collect(_progress(results, len(work)), names, counts, problems)
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
    for result in results:
        name = names.get(result.source, result.source)
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
