"""The verifier on the real-world corpus: exact on clean output, and it catches a skipped row.

(a) Every file of :func:`real_world_files` (and its planted copy) de-identified with the default
settings: the verifier raises nothing the independent leak checker (tests/deid/leakcheck.py)
would not also call a leak.  (b) On the planted copies, an engine that skips one identifying
row (that row's action turned into K; for the planted private copies, a site "keep" override)
leaves the planted value in the output — and the verifier finds it wherever it is.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomgate.deid import Profile, deidentify, verify_no_phi
from tests.deid.helpers import profile, pseudonymizer
from tests.deid.leakcheck import leaks, where
from tests.deid.planted import Planted, planted_copy
from tests.deid.realworld import real_world_files

# Burned-in suspects would be held back before the walk: every file is walked here.
PROFILE = profile(burned_in_policy="allow")


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corpus is full of pydicom's value warnings
        yield


def _deidentified(ds: Dataset, prof: Profile = PROFILE) -> Dataset:
    result = deidentify(ds, prof, pseudonymizer())
    assert result.dataset is not None, result.quarantine_reason
    return result.dataset


def _beyond_leakcheck(original: Dataset, out: Dataset) -> set[str]:
    """Where the verifier reports a value the leak checker does not see there."""
    flagged = {f.location for f in verify_no_phi(original, out, PROFILE)}
    return flagged - {location for _, location in leaks(original, out)}


def _files() -> tuple[Path, ...]:
    files = real_world_files()
    assert len(files) >= 200, "pydicom's test files and pydicom-data are test dependencies"
    return files


def test_clean_originals_raise_nothing_leakcheck_would_not() -> None:
    """(a) On every real-world file, each finding is an exact value the leak checker sees."""
    paranoid: dict[str, set[str]] = {}
    for path in _files():
        original = dcmread(path)
        extra = _beyond_leakcheck(original, _deidentified(original))
        if extra:
            paranoid[path.name] = extra
    assert not paranoid, paranoid


def test_planted_copies_are_clean_and_raise_nothing_leakcheck_would_not() -> None:
    """(a) on the planted copies too; and the engine leaves none of the planted values."""
    paranoid: dict[str, set[str]] = {}
    leaked: dict[str, set[str]] = {}
    for path in _files():
        planted = planted_copy(path)
        out = _deidentified(planted.dataset)
        extra = _beyond_leakcheck(planted.dataset, out)
        if extra:
            paranoid[path.name] = extra
        found = where((v for values in planted.values.values() for v in values), out)
        if found:
            leaked[path.name] = found
    assert not paranoid, paranoid
    assert not leaked, leaked


def _weakened(tag: int) -> Profile:
    """The default profile with one row skipped: its action turned into K."""
    if tag >> 16 & 1:  # a private attribute: the site "keep" override
        return dataclasses.replace(
            PROFILE, overrides=MappingProxyType({**PROFILE.overrides, tag: "K"})
        )
    return dataclasses.replace(PROFILE, rules=MappingProxyType({**PROFILE.rules, tag: "K"}))


def _missed(planted: Planted) -> tuple[dict[str, set[str]], set[int]]:
    """For each planted row skipped in turn: where the planted value is left that the verifier
    does not report, and the top-level rows whose skipping left nothing (must be none)."""
    missed: dict[str, set[str]] = {}
    silent: set[int] = set()
    for tag in planted.public_tags + planted.private_tags:
        out = _deidentified(planted.dataset, _weakened(tag))
        truth = where(planted.values[tag], out)
        if not truth:
            # Nested in a sequence the profile removes: skipping the row leaks nothing.
            if tag in planted.dataset:
                silent.add(tag)
            continue
        found = {f.location for f in verify_no_phi(planted.dataset, out, PROFILE)}
        if truth - found:
            missed[f"{tag:08X}"] = truth - found
    return missed, silent


def test_an_engine_that_skips_a_row_is_always_caught() -> None:
    """(b) On every planted copy, for every identifying row present, skipping it is caught at
    every place the planted value is left."""
    missed: dict[str, dict[str, set[str]]] = {}
    silent: dict[str, set[int]] = {}
    for path in _files():
        m, s = _missed(planted_copy(path))
        if m:
            missed[path.name] = m
        if s:
            silent[path.name] = s
    assert not missed, missed
    assert not silent, silent
