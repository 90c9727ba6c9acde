"""Dataset-layer fuzzing: mutated real DICOM files through the door check, ingest, the
de-identification engine, the verifier and the writer (:class:`DatasetHarness`).

The recorded crash inputs (``corpus/dataset``: minimized, derived from pydicom's and
pydicom-data's public test files or synthetic) must each end as a documented outcome — now an
``invalid dataset`` quarantine naming the element, never a value — in the node's pipeline and
in ``dicomgate deidentify``. Then a short hypothesis run (deterministic) over the seed corpus;
``bench/fuzz --layer dataset`` runs the same mutations by the ten thousand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomgate.deid import DeidConfig, deidentify_file
from dicomgate.quarantine import Rule, rule_of
from tests.fuzz.dataset import OPS, DatasetHarness, Op, apply_ops, seed_files

CORPUS = sorted((Path(__file__).parent / "corpus" / "dataset").glob("*.dcm"))
EXAMPLES = 300


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatasetHarness]:
    h = DatasetHarness(tmp_path_factory.mktemp("fuzz-dataset"))
    yield h
    h.close()


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_recorded_crash_input(path: Path, harness: DatasetHarness, tmp_path: Path) -> None:
    result = harness.run(path.read_bytes())
    assert result.stage in ("refused", "quarantined"), result
    stage, _, reason = result.detail.partition(": ")
    if result.stage == "quarantined":
        # invalid, or pixels that cannot be decoded to look for burned-in text
        assert rule_of(stage, reason) in (Rule.INVALID, Rule.BURNED_IN), result.detail
    # the offline command: the same quarantine, no pydicom message (they quote values)
    offline = deidentify_file(path, tmp_path / "out.dcm", DeidConfig(key=b"k" * 40))
    assert offline.error is None or offline.error.startswith("dataset cannot be parsed"), offline
    assert not (tmp_path / "out.dcm").exists()


_OPS = st.lists(
    st.builds(
        Op,
        st.integers(0, len(OPS) - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=24),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same cases every run (CI); bench/fuzz --seed explores others
    database=None,
    deadline=None,  # OCR of a burned-in suspect takes seconds; hangs are pytest-timeout's
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(seed=st.sampled_from(seed_files()), ops=_OPS)
def test_short_random_run(harness: DatasetHarness, seed: Path, ops: list[Op]) -> None:
    """No mutation of a seed makes any stage raise (hypothesis shrinks a failing case to the
    smallest list of mutations: record its output under corpus/dataset)."""
    harness.run(apply_ops(seed.read_bytes(), ops))
