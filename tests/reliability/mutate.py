"""Mutations of valid seeds: byte-level (AFL-style) and structure-aware (lengths re-fixed).

Every function takes a `random.Random`, so a case is reproduced from its seed alone. The
structure-aware ones keep the outer framing valid (PDU length, PDV item) so that a mutation
deep inside a command set or a data set reaches the decoder that owns it.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from typing import Final

from minipacs.proto.pdu_codec import PDU_HEADER_LENGTH, encode_pdata

from .corpus import Seeds

# Values that sit on boundaries: zero, one, sign bits, all ones, common limits.
INTERESTING_8: Final = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF)
INTERESTING_16: Final = (0x0000, 0x0001, 0x0002, 0x0040, 0x0041, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
INTERESTING_32: Final = (0x00000000, 0x00000001, 0x00000004, 0x00004000, 0x00010000,
                         0x00100000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
# Peer-supplied strings that broke servers before (issue 13): path tricks, control
# characters, bytes outside the default repertoire, values one past their VR's maximum.
HOSTILE_STRINGS: Final = (
    b"../../evil", b"..", b"/tmp/abs", b"1.2\n3", b"1.2\x1b[2J", b"1.2\x003", b"A" * 64,
    b"1." + b"2" * 70, b"1.2.3.4.\xe9", b"EVIL\nFAKE LINE", b"\x1b[2J", b"\x00" * 16,
    b"\xff" * 16, b"1..2", b"1.2.", b"", b" ", b"\\\\", b"*", b"?" * 65, b"\xc3\xa9" * 40,
)
_BIG_U32: Final = struct.Struct(">I")


def _offset(rng: random.Random, data: bytearray, width: int = 1) -> int:
    return rng.randrange(max(len(data) - width + 1, 1))


def flip_bit(rng: random.Random, data: bytearray) -> None:
    if data:
        data[_offset(rng, data)] ^= 1 << rng.randrange(8)


def set_byte(rng: random.Random, data: bytearray) -> None:
    if data:
        data[_offset(rng, data)] = rng.choice(INTERESTING_8)


def random_byte(rng: random.Random, data: bytearray) -> None:
    if data:
        data[_offset(rng, data)] = rng.randrange(256)


def set_word(rng: random.Random, data: bytearray) -> None:
    """An interesting 16- or 32-bit value, either byte order (PDUs are big endian, DIMSE little)."""
    width = rng.choice((2, 4))
    if len(data) < width:
        return
    value = rng.choice(INTERESTING_16 if width == 2 else INTERESTING_32)
    order = rng.choice(("big", "little"))
    at = _offset(rng, data, width)
    data[at:at + width] = value.to_bytes(width, order)


def insert_bytes(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.choice((1, 2, 4, 16, 256)))


def delete_range(rng: random.Random, data: bytearray) -> None:
    if data:
        at = _offset(rng, data)
        del data[at:at + rng.choice((1, 2, 4, 16, 256))]


def duplicate_range(rng: random.Random, data: bytearray) -> None:
    if data:
        at = _offset(rng, data)
        chunk = data[at:at + rng.choice((2, 8, 64, 512))]
        data[at:at] = chunk * rng.choice((1, 2, 16))


def truncate(rng: random.Random, data: bytearray) -> None:
    if data:
        del data[rng.randrange(len(data)):]


def hostile_string(rng: random.Random, data: bytearray) -> None:
    """Replace a run of printable ASCII (a UID, an AE title, a name) with a hostile value."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, byte in enumerate(data):
        printable = 0x20 <= byte < 0x7F
        if printable and start is None:
            start = i
        elif not printable and start is not None:
            if i - start >= 4:
                runs.append((start, i))
            start = None
    if start is not None and len(data) - start >= 4:
        runs.append((start, len(data)))
    if not runs:
        return
    begin, end = rng.choice(runs)
    value = rng.choice(HOSTILE_STRINGS)
    if rng.random() < 0.5:  # keep the length (the element stays framed), else resize it
        value = value[: end - begin].ljust(end - begin, b"\0")
    data[begin:end] = value


BYTE_MUTATORS: Final[Sequence[Callable[[random.Random, bytearray], None]]] = (
    flip_bit, set_byte, random_byte, set_word, insert_bytes, delete_range, duplicate_range,
    truncate, hostile_string,
)


def mutate_bytes(rng: random.Random, seed: bytes, *, rounds: int | None = None) -> bytes:
    """`seed` after 1-8 random byte-level mutations (1-2 most of the time)."""
    data = bytearray(seed)
    count = rounds if rounds is not None else rng.choice((1, 1, 1, 2, 2, 3, 4, 8))
    for _ in range(count):
        rng.choice(BYTE_MUTATORS)(rng, data)
    return bytes(data)


def fix_pdu_length(data: bytes) -> bytes:
    """Set the PDU length field to what follows the header (PS3.8 §9.3.1)."""
    if len(data) < PDU_HEADER_LENGTH:
        return data
    return data[:2] + _BIG_U32.pack(len(data) - PDU_HEADER_LENGTH) + data[PDU_HEADER_LENGTH:]


def mutate_pdu(rng: random.Random, seeds: Seeds) -> bytes:
    """One mutated PDU: byte mutations of an association, control or P-DATA PDU with the
    header length re-fixed half the time, a splice of two, or a mutated command set in a
    well-framed P-DATA-TF."""
    kind = rng.random()
    if kind < 0.25:
        command = mutate_bytes(rng, rng.choice(seeds.command_sets))
        context = rng.choice((1, 1, 3, 5, 7, 2, 255))
        return encode_pdata(context, command, is_command=True, is_last=rng.random() < 0.9)
    if kind < 0.6:
        seed = rng.choice(seeds.associate)
        if rng.random() < 0.6:
            return mutate_associate(rng, seed)
    elif kind < 0.75:
        seed = rng.choice(seeds.control)
    else:
        seed = rng.choice(seeds.pdata)
    if rng.random() < 0.1:  # splice: the head of one PDU, the tail of another
        other = rng.choice(seeds.pdus)
        cut = rng.randrange(len(seed) + 1)
        return fix_pdu_length(seed[:cut] + other[rng.randrange(len(other) + 1):])
    mutated = mutate_bytes(rng, seed)
    return fix_pdu_length(mutated) if rng.random() < 0.6 else mutated


# Items that hold sub-items after a fixed prefix (PS3.8 §9.3.2.2, §9.3.2.3, §9.3.3.2).
_PARENTS: Final = {0x20: 4, 0x21: 4, 0x50: 0}
_ASSOCIATE_ITEMS_AT: Final = PDU_HEADER_LENGTH + 68  # after the fixed fields (PS3.8 §9.3.2)
_ITEM: Final = struct.Struct(">BBH")


class _Item:
    """One item of an A-ASSOCIATE PDU: its type, and raw value or prefix plus sub-items."""

    __slots__ = ("children", "item_type", "prefix", "value")

    def __init__(self, item_type: int, value: bytes) -> None:
        self.item_type = item_type
        self.value = value
        self.prefix = b""
        self.children: list[_Item] | None = None
        if item_type in _PARENTS and len(value) >= _PARENTS[item_type]:
            size = _PARENTS[item_type]
            parsed = _parse_items(value[size:])
            if parsed is not None:
                self.prefix, self.children = value[:size], parsed

    def encode(self) -> bytes:
        value = self.value if self.children is None else \
            self.prefix + b"".join(child.encode() for child in self.children)
        return _ITEM.pack(self.item_type, 0, min(len(value), 0xFFFF)) + value

    def walk(self) -> list[tuple[list[_Item], int]]:
        """(siblings, index) of every item below this one."""
        out: list[tuple[list[_Item], int]] = []
        if self.children is not None:
            for index, child in enumerate(self.children):
                out.append((self.children, index))
                out.extend(child.walk())
        return out


def _parse_items(data: bytes) -> list[_Item] | None:
    items: list[_Item] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _ITEM.size:
            return None
        item_type, _, length = _ITEM.unpack_from(data, offset)
        offset += _ITEM.size
        if offset + length > len(data):
            return None
        items.append(_Item(item_type, data[offset:offset + length]))
        offset += length
    return items


def mutate_associate(rng: random.Random, pdu: bytes) -> bytes:
    """An A-ASSOCIATE-RQ/AC with one item changed and every enclosing length fixed, so
    that the change reaches the decoder of that very item (PS3.8 §9.3.2, PS3.7 Annex D)."""
    root = _Item(0, b"")
    root.children = _parse_items(pdu[_ASSOCIATE_ITEMS_AT:])
    if root.children is None or not root.children:
        return mutate_bytes(rng, pdu)
    siblings, index = rng.choice(root.walk())
    item = siblings[index]
    action = rng.randrange(6)
    if action == 0:
        siblings.pop(index)
    elif action == 1:
        siblings.insert(index, siblings[index])
    elif action == 2:
        siblings.insert(index, _Item(rng.choice((*range(0x10, 0x60, 0x10), *range(0x50, 0x5B),
                                                 rng.randrange(256))),
                                     rng.randbytes(rng.choice((0, 1, 2, 4, 8, 64)))))
    elif action == 3 and len(siblings) > 1:
        other = rng.randrange(len(siblings))
        siblings[index], siblings[other] = siblings[other], siblings[index]
    elif action == 4:
        item.item_type = rng.randrange(256) if rng.random() < 0.3 else item.item_type ^ 1
    else:
        item.children = None
        item.value = mutate_bytes(rng, item.encode()[_ITEM.size:])
    fixed = pdu[PDU_HEADER_LENGTH:_ASSOCIATE_ITEMS_AT]
    if rng.random() < 0.2:
        fixed = mutate_bytes(rng, fixed)
    body = fixed + b"".join(child.encode() for child in root.children)
    return pdu[:2] + _BIG_U32.pack(len(body)) + body


def chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """`data` cut at random points, as a socket may deliver it (one piece a third of the time)."""
    if len(data) < 2 or rng.random() < 0.34:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
