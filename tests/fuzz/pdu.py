"""PDU-layer fuzzing: what a broken or hostile peer can put on the wire, against a live node.

A case is a list of byte strings (:class:`PduCase`): the first is sent at once; before each
further one the fuzzer waits for the node's answer to the previous (an A-ASSOCIATE-AC, a
C-STORE response), so a P-DATA case really reaches an *established* association. Then the
fuzzer half-closes the connection and reads until the node closes its side — a node that keeps
a connection open after the peer's EOF (longer than :data:`HANG_AFTER` s) counts as a hang.

Kinds (:data:`KINDS`): random bytes and random PDU headers; A-ASSOCIATE-RQs built with
pynetdicom's PDU classes and then mutated (item lengths near 0 and 2¹⁶−1, PDU lengths near 0
and 2³²−1, bad item types, truncation, duplicated items, huge user identity, odd presentation
contexts); P-DATA-TF after a real association (PDV lengths near 0 and 2³², wrong context ids,
fragments out of order, wrong last-fragment and command flags, half-sent datasets then close,
abort or release, corrupt command sets); A-RELEASE / A-ABORT / A-ASSOCIATE-AC at odd times.

Every case is a pure function of ``random.Random`` (``bench/fuzz`` seeds one per case), and a
case is stored as its parts (:func:`dump_case` / :func:`load_case`) under
``tests/fuzz/corpus/pdu/`` to be replayed.
"""

from __future__ import annotations

import contextlib
import io
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import build_context
from pynetdicom.transport import AddressInformation

from dicomgate.testing import make_ct_instance
from tests.helpers import associate, send_files, wait_for

__all__ = [
    "HANG_AFTER",
    "KINDS",
    "PduCase",
    "dump_case",
    "leftovers",
    "load_case",
    "make_case",
    "node_health",
    "run_case",
    "thread_deaths",
]

#: seconds the node may keep a connection open after the peer's EOF before it is a hang
HANG_AFTER = 10.0
_CT = "1.2.840.10008.5.1.4.1.1.2"
_VERIFICATION = "1.2.840.10008.1.1"


@dataclass
class PduCase:
    kind: str
    parts: list[bytes]


# -- building blocks ------------------------------------------------------------------------------
def _pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def _item(item_type: int, body: bytes, length: int | None = None) -> bytes:
    if item_type < 0:  # already encoded (bytes flipped across items)
        return body
    return (
        struct.pack(">BBH", item_type, 0, (len(body) if length is None else length) & 0xFFFF) + body
    )


def _split_items(body: bytes) -> list[tuple[int, bytes]]:
    items, pos = [], 0
    while pos + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, pos)
        items.append((item_type, body[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return items


def _associate_rq(called: str = "DICOMGATE", user_identity: bytes | None = None) -> bytes:
    """A valid A-ASSOCIATE-RQ (Verification, CT Image Storage), encoded by pynetdicom."""
    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title = "FUZZER"
    prim.called_ae_title = called
    prim.calling_presentation_address = AddressInformation("127.0.0.1", 104)
    prim.called_presentation_address = AddressInformation("127.0.0.1", 11112)
    contexts = []
    for i, (abstract, syntaxes) in enumerate(
        [
            (_VERIFICATION, [ImplicitVRLittleEndian]),
            (_CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        ]
    ):
        cx = build_context(abstract, syntaxes)
        cx.context_id = 2 * i + 1
        contexts.append(cx)
    prim.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.1.1"
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = "FUZZ_1"
    user_info: list[object] = [max_length, impl, version]
    if user_identity is not None:
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 1
        identity.primary_field = user_identity
        user_info.append(identity)
    prim.user_information = user_info
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return bytes(pdu.encode())


_RQ = _associate_rq()
_FIXED = _RQ[6:74]  # protocol version, reserved, called and calling AE titles, reserved
_ITEMS = _split_items(_RQ[74:])


def _store_fragments(ctx_id: int = 3, max_pdu: int = 1024) -> list[tuple[int, int, bytes]]:
    """(context id, message control header, bytes) of each PDV of one small C-STORE-RQ."""
    ds = make_ct_instance(generate_uid(), generate_uid(), 1, rows=16, columns=16)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    prim = C_STORE()
    prim.MessageID = 1
    prim.AffectedSOPClassUID = _CT
    prim.AffectedSOPInstanceUID = ds.SOPInstanceUID
    prim.Priority = 2
    prim.DataSet = io.BytesIO(buf.getvalue())
    msg = C_STORE_RQ()
    msg.primitive_to_message(prim)
    out = []
    for p_data in msg.encode_msg(ctx_id, max_pdu):
        for cid, data in p_data.presentation_data_value_list:
            out.append((cid, data[0], bytes(data[1:])))
    return out


def _p_data(
    pdvs: list[tuple[int, int, bytes]], pdv_length: Callable[[int], int] | None = None
) -> bytes:
    body = b""
    for i, (cid, mch, data) in enumerate(pdvs):
        length = len(data) + 2 if pdv_length is None else pdv_length(i)
        body += struct.pack(">LBB", length & 0xFFFFFFFF, cid & 0xFF, mch & 0xFF) + data
    return _pdu(0x04, body)


_RELEASE_RQ = _pdu(0x05, b"\x00" * 4)
_RELEASE_RP = _pdu(0x06, b"\x00" * 4)
_ABORT = _pdu(0x07, b"\x00\x00\x00\x00")
_ASSOCIATE_AC = _pdu(0x02, _RQ[6:])
_INTERESTING_32 = [0, 1, 2, 3, 5, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFE, 0xFFFFFFFF]
_INTERESTING_16 = [0, 1, 2, 3, 4, 0x7FFF, 0xFFFE, 0xFFFF]


def _random_bytes(rng: random.Random) -> list[bytes]:
    choice = rng.randrange(4)
    if choice == 0:  # anything
        return [rng.randbytes(rng.randrange(1, 300))]
    if choice == 1:  # a header of a real PDU type, then garbage
        body = rng.randbytes(rng.randrange(0, 200))
        length = rng.choice([len(body), *_INTERESTING_32, rng.getrandbits(32)])
        return [_pdu(rng.randrange(1, 8), body, length)]
    if choice == 2:  # an unknown PDU type
        return [_pdu(rng.choice([0, 8, 0x44, 0x99, 0xFF]), rng.randbytes(rng.randrange(0, 64)))]
    return [_RQ[: rng.randrange(1, len(_RQ))] + rng.randbytes(rng.randrange(0, 64))]


def _mutated_rq(rng: random.Random) -> list[bytes]:
    items = list(_ITEMS)
    fixed = bytearray(_FIXED)
    lengths: dict[int, int] = {}
    pdu_length: int | None = None
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(11)
        i = rng.randrange(len(items)) if items else 0
        if op == 0 and items:  # item length near 0 / 2^16-1
            lengths[i] = rng.choice([*_INTERESTING_16, len(items[i][1]) + rng.choice((-1, 1))])
        elif op == 1 and items:  # bad item type
            items[i] = (rng.choice([0, 0x11, 0x22, 0x33, 0x53, 0x60, 0xFF]), items[i][1])
        elif op == 2 and items:  # a duplicated item
            items.insert(rng.randrange(len(items) + 1), items[i])
        elif op == 3 and items:  # an item dropped
            items.pop(i)
        elif op == 4:  # huge user identity (sub-item lengths are 16 bits; the item's too)
            size = rng.choice([0, 1, 2000, 65300, 60000, 0xFFFF])
            rq = b"" if size >= 60000 else _associate_rq(user_identity=b"u" * size)
            items = _split_items(rq[74:]) if rq else [*items, (80, rng.randbytes(size))]
        elif op == 5:  # PDU length near 0 / 2^32-1
            pdu_length = rng.choice(_INTERESTING_32)
        elif op == 6 and items:  # sub-items of a presentation context or user information
            item_type, body = items[i]
            subs = _split_items(body[4:] if item_type == 0x20 else body)
            if subs:
                j = rng.randrange(len(subs))
                sub_type, sub_body = subs[j]
                subs[j] = rng.choice(
                    [
                        (sub_type, b""),
                        (sub_type, rng.randbytes(rng.randrange(1, 80))),
                        (rng.randrange(256), sub_body),
                        (sub_type, sub_body * 40),
                    ]
                )
                joined = b"".join(_item(t, b) for t, b in subs)
                items[i] = (item_type, body[:4] + joined if item_type == 0x20 else joined)
        elif op == 7 and items:  # presentation context id: 0, even, 255; result byte garbage
            item_type, body = items[i]
            if item_type == 0x20 and len(body) >= 4:
                items[i] = (
                    item_type,
                    bytes([rng.choice([0, 2, 255])]) + rng.randbytes(3) + body[4:],
                )
        elif op == 8:  # protocol version, AE titles
            at = rng.randrange(len(fixed))
            fixed[at : at + 16] = rng.choice(
                [b"\x00" * 16, b" " * 16, rng.randbytes(16), b"\\" * 16]
            )[: len(fixed) - at]
        elif op == 9:  # bytes flipped anywhere in the items
            body = bytearray(b"".join(_item(t, b) for t, b in items))
            if body:
                body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            items = [(-1, bytes(body))]
        else:  # many presentation contexts
            items += [
                (0x20, bytes([2 * k + 5 & 0xFF]) + b"\x00\xff\x00" + _ITEMS[1][1][4:])
                for k in range(rng.choice((10, 130)))
            ]
    body = bytes(fixed) + b"".join(_item(t, b, lengths.get(k)) for k, (t, b) in enumerate(items))
    data = _pdu(0x01, body, pdu_length)
    if rng.random() < 0.2:  # truncated: half an A-ASSOCIATE-RQ, then EOF
        data = data[: rng.randrange(1, len(data))]
    return [data]


def _mutated_p_data(rng: random.Random) -> list[bytes]:
    pdvs = _store_fragments(max_pdu=rng.choice((256, 1024, 16384)))
    pdus: list[bytes] = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(12)
        i = rng.randrange(len(pdvs))
        cid, mch, data = pdvs[i]
        if op == 0:  # PDV length near 0 / 2^32
            bad = rng.choice([*_INTERESTING_32, len(data) + 1, len(data) + 3])
            pdus = [
                _p_data([p], (lambda _k, bad=bad: bad) if k == i else None)
                for k, p in enumerate(pdvs)
            ]
            break
        if op == 1:  # wrong context id: none, even, not accepted
            pdvs[i] = (rng.choice([0, 2, 5, 7, 255, 1]), mch, data)
        elif op == 2 and len(pdvs) > 1:  # fragments out of order
            j = rng.randrange(len(pdvs))
            pdvs[i], pdvs[j] = pdvs[j], pdvs[i]
        elif op == 3:  # last-fragment / command flags wrong
            pdvs[i] = (cid, mch ^ rng.choice((1, 2, 3, 0xF0)), data)
        elif op == 4:  # half-sent dataset: stop part-way
            pdvs = pdvs[: max(1, rng.randrange(len(pdvs)))]
        elif op == 5:  # a fragment duplicated
            pdvs.insert(i, pdvs[i])
        elif op == 6:  # corrupt bytes (command set or dataset)
            if data:
                b = bytearray(data)
                for _ in range(rng.randrange(1, 6)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
                pdvs[i] = (cid, mch, bytes(b))
        elif op == 7:  # a fragment cut short
            pdvs[i] = (cid, mch, data[: rng.randrange(len(data) + 1)])
        elif op == 8:  # an empty P-DATA-TF or an empty PDV
            pdvs.insert(i, (cid, mch, b""))
        elif op == 9:  # dataset before its command
            pdvs = [p for p in pdvs if not p[1] & 1] + [p for p in pdvs if p[1] & 1]
        elif op == 10:  # everything in one P-DATA-TF
            pdus = [_p_data(pdvs)]
            break
        else:  # the command on the Verification context
            pdvs = [(1 if m & 1 else c, m, d) for c, m, d in pdvs]
    if not pdus:
        pdus = [_p_data([p]) for p in pdvs]
    if rng.random() < 0.3:  # a PDU cut in the middle
        k = rng.randrange(len(pdus))
        pdus = [*pdus[:k], pdus[k][: rng.randrange(1, len(pdus[k]))]]
    ending = rng.choice([b"", _RELEASE_RQ, _ABORT, _RELEASE_RQ + _RELEASE_RQ, _RQ])
    return [_RQ, b"".join(pdus) + ending]


def _odd_times(rng: random.Random) -> list[bytes]:
    """A-RELEASE / A-ABORT / A-ASSOCIATE-AC where they do not belong."""
    odd = [_RELEASE_RQ, _RELEASE_RP, _ABORT, _ASSOCIATE_AC, _pdu(0x03, b"\x00\x01\x01\x01")]
    choice = rng.randrange(4)
    if choice == 0:  # instead of an A-ASSOCIATE-RQ
        return [rng.choice(odd)]
    if choice == 1:  # right after it, before the answer
        return [_RQ + rng.choice(odd)]
    if choice == 2:  # on an established association, before or mid-message
        pdvs = _store_fragments(max_pdu=256)
        cut = rng.randrange(len(pdvs) + 1)
        return [_RQ, b"".join(_p_data([p]) for p in pdvs[:cut]) + rng.choice(odd) + _RELEASE_RQ]
    # after the release request: more PDUs
    return [_RQ, _RELEASE_RQ + rng.choice(odd) + _p_data(_store_fragments()[:1])]


KINDS: dict[str, Callable[[random.Random], list[bytes]]] = {
    "random-bytes": _random_bytes,
    "associate-rq": _mutated_rq,
    "p-data": _mutated_p_data,
    "odd-times": _odd_times,
}


def make_case(rng: random.Random) -> PduCase:
    kind = rng.choices(list(KINDS), weights=(2, 3, 4, 1))[0]
    return PduCase(kind, KINDS[kind](rng))


# -- running a case -------------------------------------------------------------------------------
def _read_pdu(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        if not chunk:
            return head
        head += chunk
    (length,) = struct.unpack(">L", head[2:6])
    body = b""
    while len(body) < length:
        chunk = sock.recv(min(65536, length - len(body)))
        if not chunk:
            break
        body += chunk
    return head + body


@dataclass
class CaseOutcome:
    answers: list[int]  # PDU types the node sent (first byte of each PDU read between parts)
    hang: bool  # the node kept the connection open HANG_AFTER s after our EOF


def run_case(host: str, port: int, case: PduCase) -> CaseOutcome:
    """Send the case's parts (waiting for one answer between them), half-close, read to EOF."""
    answers: list[int] = []
    with socket.create_connection((host, port), timeout=HANG_AFTER) as sock:
        try:
            for k, part in enumerate(case.parts):
                if k:
                    answer = _read_pdu(sock)
                    if not answer:
                        break  # the node closed: nothing more to say
                    answers.append(answer[0])
                    if answer[0] != 0x02:  # not accepted: the rest would go nowhere
                        break
                sock.sendall(part)
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + HANG_AFTER
            while time.monotonic() < deadline:
                if not sock.recv(65536):
                    return CaseOutcome(answers, hang=False)
        except TimeoutError:
            return CaseOutcome(answers, hang=True)
        except OSError:  # reset or broken pipe: the node closed on us
            return CaseOutcome(answers, hang=False)
    return CaseOutcome(answers, hang=True)


def dump_case(case: PduCase) -> bytes:
    """A case as a file: its kind, then each part prefixed by its length."""
    kind = case.kind.encode()
    return bytes([len(kind)]) + kind + b"".join(struct.pack(">L", len(p)) + p for p in case.parts)


def load_case(data: bytes) -> PduCase:
    kind, pos, parts = data[1 : 1 + data[0]].decode(), 1 + data[0], []
    while pos < len(data):
        (length,) = struct.unpack_from(">L", data, pos)
        parts.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return PduCase(kind, parts)


# -- after a batch: is the node healthy? ---------------------------------------------------------
def leftovers(data_dir: Path) -> list[Path]:
    """Files in any ``spool/.../incoming/`` (never acknowledged: must not stay)."""
    return sorted(p for p in data_dir.glob("spool/**/incoming/*") if p.is_file())


def node_health(host: str, port: int, data_dir: Path, scratch: Path) -> list[str]:
    """What is wrong with the node after a batch (empty: healthy): it answers C-ECHO, stores a
    valid instance (0x0000), and nothing is left in ``incoming/``."""
    problems = []
    assoc = associate(host, port)
    if not assoc.is_established:
        problems.append("C-ECHO: association not established")
    else:
        status = assoc.send_c_echo()
        if not status or status.Status != 0:
            problems.append("C-ECHO failed")
        assoc.release()
    scratch.mkdir(parents=True, exist_ok=True)
    ds = make_ct_instance(generate_uid(), generate_uid(), 1, rows=16, columns=16)
    path = scratch / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    try:
        statuses = send_files(host, port, [path], timeout=30)
        if statuses != [0]:
            problems.append(f"C-STORE of a valid instance: {statuses}")
    except ConnectionError as exc:
        problems.append(f"C-STORE: {exc}")
    finally:
        path.unlink(missing_ok=True)
    if not wait_for(lambda: not leftovers(data_dir), timeout=15):
        problems.append(f"left in incoming/: {len(leftovers(data_dir))} file(s)")
    return problems


@contextlib.contextmanager
def thread_deaths() -> Iterator[list[str]]:
    """Collect the threads that die of an exception meanwhile (in this process)."""
    died: list[str] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        died.append(f"{name}: {args.exc_type.__name__}")
        previous(args)

    threading.excepthook = hook
    try:
        yield died
    finally:
        threading.excepthook = previous
