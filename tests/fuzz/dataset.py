"""Dataset-layer fuzzing: byte-level mutations of real DICOM files, run through the node's path.

A case is a seed file (pydicom's bundled test files and ``pydicom-data``'s, small ones only) and
a few mutations (:class:`Op`) applied at element boundaries — bit flips, overwritten lengths,
VRs and tags, inserted, deleted, duplicated or swapped elements, truncation, odd values.
:class:`DatasetHarness` runs the result the way the node does: the door check
(:func:`dicomgate.checks.check_header`), ingest into a spool and a SQLite state store
(:class:`dicomgate.ingest.Ingest`), then the pipeline's worker stages
(:func:`dicomgate.pipeline._work.process_instance`: read, validate, :func:`deidentify`,
:func:`verify_no_phi`, encode).

What is *not* a crash: a :class:`~dicomgate.checks.Refusal` from the door check, a non-success
:class:`~dicomgate.ingest.StoreOutcome`, a :class:`~dicomgate.pipeline._work.WorkResult` that
quarantines (``process_instance`` turns every documented refusal of a stage into one). Anything
raised is a crash: the node would log "processing failed" (a bug in a stage) or worse.

Ops are plain tuples of ints and bytes so that both ``random.Random`` (``bench/fuzz``) and
hypothesis (``tests/fuzz``, which shrinks a failing case) can draw them.
"""

from __future__ import annotations

import contextlib
import functools
import random
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pydicom
from pydicom.datadict import dictionary_VR

from dicomgate.checks import Refusal, check_header
from dicomgate.deid import DeidConfig
from dicomgate.ingest import Ingest, StoreRequest
from dicomgate.pipeline._work import WorkOrder, WorkResult, process_instance
from dicomgate.pipeline.validate import AcceptRules
from dicomgate.pseudonym import Pseudonymizer
from dicomgate.spool import Spool
from dicomgate.state.sqlite import SqliteStateStore
from dicomgate.status import Status

__all__ = [
    "OPS",
    "DatasetHarness",
    "Op",
    "apply_ops",
    "elements",
    "random_ops",
    "seed_files",
]

#: seeds larger than this are left out (each case reads, de-identifies and writes its file)
MAX_SEED_SIZE = 160 * 1024
_KEY = b"f" * 40
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR"}
_LONG_VRS |= {b"UT", b"UV"}
_VRS = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV", b"\x00\x00", b"zz", b"\xff\xff",
]  # fmt: skip
_LENGTHS = [
    0, 1, 2, 3, 4, 7, 8, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF, 0x10000, 0x7FFFFFFF,
    0x80000000, 0xFFFFFFFE, 0xFFFFFFFF,
]  # fmt: skip
_TAGS = [
    0x00000000, 0x00020010, 0x00080005, 0x00080016, 0x00080018, 0x00080020, 0x00080060,
    0x00081115, 0x00081140, 0x00100010, 0x00100020, 0x00100030, 0x0020000D, 0x0020000E,
    0x00280002, 0x00280004, 0x00280008, 0x00280010, 0x00280011, 0x00280100, 0x00280101,
    0x00281201, 0x00283010, 0x00400275, 0x0040A730, 0x00880200, 0x00091010, 0x00090010,
    0x50000010, 0x60003000, 0x7FE00008, 0x7FE00010, 0xFFFCFFFC, 0xFFFEE000, 0xFFFEE00D,
    0xFFFEE0DD, 0xFFFFFFFF,
]  # fmt: skip
_VALUES = [
    b"", b"\x00", b" ", b"\\", b"\\\\\\\\", b"1.2.3", b"1.2.840.10008.5.1.4.1.1.2 ",
    b"1..2", b"01.2", b"A" * 70, b"1" * 80, b"-1", b"99999999999999999999", b"1e309", b"nan",
    b"ISO 2022 IR 87\\ISO 2022 IR 149", b"ISO_IR 192", b"GB18030", b"bogus charset",
    b"\x1b$B\x1b(B", b"\xff\xfe\xfd", "Дорожная^Ольга".encode(), b"19000101", b"20241301",
    b"246060", b"Y", b"YBR_FULL_422", b"PALETTE COLOR", b"MONOCHROME1", b"\x00\x10",
    b"\xff\xff", b"\x00\x00\x01\x00", b"US", b"DOE^JANE", b"^", b"=^^^=",
]  # fmt: skip


class Op(NamedTuple):
    """One mutation: ``kind`` picks the operation (mod :data:`OPS`), ``where`` an element or
    position (mod what exists), ``what`` a value from the op's table (or raw), ``data`` bytes
    to insert or write."""

    kind: int
    where: int
    what: int
    data: bytes = b""


class Element(NamedTuple):
    start: int  # the tag
    vr_at: int | None  # explicit VR only
    length_at: int
    length_size: int  # 2 or 4
    value_at: int
    length: int
    end: int  # value_at + length (value_at for SQ/items/undefined: their content follows)


def _dataset_start(data: bytes) -> tuple[int, bool, bool]:
    """Where the dataset starts after the File Meta, and its encoding (implicit, little)."""
    if data[128:132] != b"DICM":
        return 0, True, True
    pos = 132
    ts = b""
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        length_at, size = (pos + 8, 4) if data[pos + 4 : pos + 6] in _LONG_VRS else (pos + 6, 2)
        length = int.from_bytes(data[length_at : length_at + size], "little")
        value_at = length_at + size
        if data[pos + 2 : pos + 4] == b"\x10\x00":
            ts = data[value_at : value_at + length].rstrip(b"\x00 ")
        pos = value_at + length
    implicit = ts == b"1.2.840.10008.1.2"
    little = ts != b"1.2.840.10008.1.2.2"
    return pos, implicit, little


def elements(data: bytes, limit: int = 4000) -> list[Element]:
    """The element (and item) headers of a file, walked leniently — into sequences and items,
    stopping at anything that does not look like an element. File Meta elements included."""
    found: list[Element] = []
    start, implicit, little = _dataset_start(data)
    order = "little" if little else "big"
    if start > 132:  # the File Meta: explicit VR little endian
        _walk(data, 132, start, False, "little", found, limit)
    _walk(data, start, len(data), implicit, order, found, limit)
    return found


def _walk(
    data: bytes, pos: int, end: int, implicit: bool, order: str, found: list[Element], limit: int
) -> None:
    endian = "<" if order == "little" else ">"
    end = min(end, len(data))  # a File Meta group length may claim more than there is
    while pos + 8 <= end and len(found) < limit:
        group, elem = struct.unpack_from(f"{endian}HH", data, pos)
        tag = group << 16 | elem
        vr = data[pos + 4 : pos + 6]
        if group == 0xFFFE or implicit:
            vr_at, length_at, size = None, pos + 4, 4
        elif vr in _LONG_VRS:
            vr_at, length_at, size = pos + 4, pos + 8, 4
        elif b"AA" <= vr <= b"ZZ":
            vr_at, length_at, size = pos + 4, pos + 6, 2
        else:
            return
        if length_at + size > end:
            return
        length = int.from_bytes(data[length_at : length_at + size], order)  # type: ignore[arg-type]
        value_at = length_at + size
        container = (group == 0xFFFE and elem == 0xE000) or vr == b"SQ" or length == 0xFFFFFFFF
        if implicit and not container and group != 0xFFFE:
            with contextlib.suppress(KeyError):
                container = dictionary_VR(tag) == "SQ"
        if tag == 0x7FE00010 and length == 0xFFFFFFFF:
            container = True  # encapsulated fragments: items, walked as such
        next_at = value_at if container else value_at + length
        found.append(Element(pos, vr_at, length_at, size, value_at, length, next_at))
        pos = next_at


def _put(data: bytearray, at: int, size: int, value: int, order: str = "little") -> None:
    if at >= 0 and at + size <= len(data):
        data[at : at + size] = (value % (1 << (8 * size))).to_bytes(size, order)  # type: ignore[arg-type]


def _op_flip(data: bytearray, els: list[Element], op: Op) -> bytearray:
    if data:
        # mostly the header region, where the structure is
        at = op.where % min(len(data), 4096 if op.what % 4 else len(data))
        data[at] ^= 1 << (op.what % 8)
    return data


def _op_overwrite_byte(data: bytearray, els: list[Element], op: Op) -> bytearray:
    if data:
        at = op.where % min(len(data), 4096)
        data[at] = op.what % 256
    return data


def _pick(els: list[Element], where: int) -> Element | None:
    return els[where % len(els)] if els else None


def _op_length(data: bytearray, els: list[Element], op: Op) -> bytearray:
    el = _pick(els, op.where)
    if el is not None:
        table = _LENGTHS if op.what % 3 else [el.length + 1, el.length - 1, el.length * 2]
        value = table[(op.what // 3) % len(table)]
        _put(data, el.length_at, el.length_size, value)
    return data


def _op_vr(data: bytearray, els: list[Element], op: Op) -> bytearray:
    el = _pick([e for e in els if e.vr_at is not None], op.where)
    if el is not None and el.vr_at is not None:
        data[el.vr_at : el.vr_at + 2] = _VRS[op.what % len(_VRS)]
    return data


def _op_tag(data: bytearray, els: list[Element], op: Op) -> bytearray:
    el = _pick(els, op.where)
    if el is not None:
        tag = _TAGS[op.what % len(_TAGS)] if op.what % 5 else op.what & 0xFFFFFFFF
        _put(data, el.start, 2, tag >> 16)
        _put(data, el.start + 2, 2, tag & 0xFFFF)
    return data


def _op_insert(data: bytearray, els: list[Element], op: Op) -> bytearray:
    el = _pick(els, op.where)
    at = el.start if el is not None and op.what % 2 else op.where % (len(data) + 1)
    payload = op.data or bytes([op.what % 256]) * (1 + op.what % 16)
    return data[:at] + payload + data[at:]


def _op_delete(data: bytearray, els: list[Element], op: Op) -> bytearray:
    el = _pick(els, op.where)
    if el is not None and op.what % 2:  # a whole element (header and value)
        end = max(el.end, el.value_at)
        return data[: el.start] + data[end:]
    at = op.where % (len(data) + 1)
    return data[:at] + data[at + 1 + op.what % 64 :]


def _op_truncate(data: bytearray, els: list[Element], op: Op) -> bytearray:
    el = _pick(els, op.where)
    if el is not None and op.what % 3:  # inside or just after an element header
        return data[: min(len(data), el.start + op.what % 14)]
    return data[: op.where % (len(data) + 1)]


def _op_duplicate(data: bytearray, els: list[Element], op: Op) -> bytearray:
    a, b = _pick(els, op.where), _pick(els, op.what)
    if a is None or b is None or a.end <= a.start:
        return data
    chunk = data[a.start : min(a.end, a.start + 65536)]
    return data[: b.start] + chunk + data[b.start :]


def _op_swap(data: bytearray, els: list[Element], op: Op) -> bytearray:
    a, b = _pick(els, op.where), _pick(els, op.what)
    if a is None or b is None:
        return data
    a, b = sorted((a, b))
    if a.end > b.start or a.end <= a.start or b.end <= b.start:
        return data  # nested or empty: not two siblings
    return data[: a.start] + data[b.start : b.end] + data[a.end : b.start] + data[a.start : a.end]


def _op_value(data: bytearray, els: list[Element], op: Op) -> bytearray:
    """Replace a short value (with its length made to match, or not)."""
    el = _pick([e for e in els if e.end > e.value_at and e.length < 256], op.where)
    if el is None:
        return data
    value = op.data or _VALUES[op.what % len(_VALUES)]
    if op.what % 7:  # keep the length consistent most of the time
        if el.length_size == 2 and len(value) > 0xFFFF:
            value = value[:0xFFFF]
        out = data[: el.value_at] + value + data[el.end :]
        _put(out, el.length_at, el.length_size, len(value))
        return out
    return data[: el.value_at] + value + data[el.end :]


def _op_transfer_syntax(data: bytearray, els: list[Element], op: Op) -> bytearray:
    """Claim another transfer syntax in the File Meta (the presentation context's say)."""
    syntaxes = [
        b"1.2.840.10008.1.2\x00", b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.2\x00",
        b"1.2.840.10008.1.2.1.99", b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.90",
        b"1.2.840.10008.1.2.5\x00", b"1.2.3\x00", b"",
    ]  # fmt: skip
    for el in els:
        if data[el.start : el.start + 4] == b"\x02\x00\x10\x00" and el.length_size == 2:
            value = syntaxes[op.what % len(syntaxes)]
            out = data[: el.value_at] + value + data[el.end :]
            _put(out, el.length_at, 2, len(value))
            delta = len(value) - el.length  # keep the group length true
            for g in els:
                if data[g.start : g.start + 4] == b"\x02\x00\x00\x00" and g.length == 4:
                    old = int.from_bytes(out[g.value_at : g.value_at + 4], "little")
                    _put(out, g.value_at, 4, old + delta)
            return out
    return data


OPS = (
    _op_flip,
    _op_overwrite_byte,
    _op_length,
    _op_vr,
    _op_tag,
    _op_insert,
    _op_delete,
    _op_truncate,
    _op_duplicate,
    _op_swap,
    _op_value,
    _op_transfer_syntax,
)


def apply_ops(seed: bytes, ops: Sequence[Op]) -> bytes:
    data = bytearray(seed)
    for op in ops:
        data = OPS[op.kind % len(OPS)](data, elements(bytes(data)), op)
    return bytes(data)


def random_ops(rng: random.Random) -> list[Op]:
    ops = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        data = rng.randbytes(rng.randrange(1, 24)) if rng.random() < 0.2 else b""
        ops.append(Op(rng.randrange(len(OPS)), rng.getrandbits(32), rng.getrandbits(32), data))
    return ops


@functools.cache
def seed_files(max_size: int = MAX_SEED_SIZE) -> tuple[Path, ...]:
    """pydicom's bundled test files and pydicom-data's, up to ``max_size`` bytes each, sorted
    by name (broken ones included: they are good seeds). Public test data, no patient's."""
    paths: list[str] = list(pydicom.data.get_testdata_files())
    try:
        import data_store  # pydicom-data

        root = Path(data_store.__file__).parent / "data"
        paths += [str(p) for p in root.rglob("*") if p.is_file()]
    except ImportError:  # pragma: no cover - a test dependency
        pass
    found = {
        Path(p)
        for p in paths
        if Path(p).is_file()
        and Path(p).suffix.lower() in (".dcm", "")
        and 0 < Path(p).stat().st_size <= max_size
    }
    return tuple(sorted(found, key=lambda p: (p.name, str(p))))


@dataclass
class CaseResult:
    stage: str  # "refused", "not stored", "quarantined", "delivered"
    detail: str = ""


class DatasetHarness:
    """The node's path for one received file, in this process, on a scratch spool and state."""

    def __init__(self, workdir: Path, *, burned_in_policy: str = "clean") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.spool = Spool(workdir / "spool", limit=10**12, min_free=0, node_id="fuzz")
        self.spool.prepare()
        self.state = SqliteStateStore.open(workdir / "state.db")
        self.ingest = Ingest(self.spool, self.state, Pseudonymizer(_KEY), node_id="fuzz")
        self.deid = DeidConfig(key=_KEY, burned_in_policy=burned_in_policy)
        self.rules = AcceptRules()
        self.staging = workdir / "staging"
        self.staging.mkdir(exist_ok=True)
        self._n = 0

    def close(self) -> None:
        self.state.close()

    def run(self, data: bytes) -> CaseResult:
        """Run one case; raises whatever the node's code raised (a crash)."""
        self._n += 1
        received = self.spool.incoming / f"case-{self._n}.dcm"
        received.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's warnings about odd files are fine
                return self._run(received)
        finally:
            received.unlink(missing_ok=True)

    def _run(self, received: Path) -> CaseResult:
        checked = check_header(received, request_sop_class_uid=None, request_sop_instance_uid=None)
        if isinstance(checked, Refusal):
            return CaseResult("refused", checked.reason)
        outcome = self.ingest.store(
            StoreRequest(
                path=received,
                sop_class_uid=checked.sop_class_uid,
                sop_instance_uid=checked.sop_instance_uid,
                calling_ae="FUZZER",
                peer_address="127.0.0.1",
                association_id=f"fuzz-{self._n}",
            )
        )
        if outcome.status != Status.SUCCESS or outcome.record is None:
            return CaseResult("not stored", outcome.reason or "")
        if outcome.duplicate:  # its spool file went with the case that stored it
            return CaseResult("duplicate")
        rec = outcome.record
        assert rec.spool_path is not None
        staged = self.staging / f"case-{self._n}.dcm"
        try:
            result: WorkResult = process_instance(
                WorkOrder(
                    raw_path=str(self.spool.path_of(rec.spool_path)),
                    staging_path=str(staged),
                    deid=self.deid,
                    rules=self.rules,
                )
            )
        finally:
            self.spool.remove(rec.spool_path)
            staged.unlink(missing_ok=True)
        if result.quarantined:
            return CaseResult("quarantined", f"{result.stage}: {result.reason}")
        return CaseResult("delivered")
