"""A byte-level shortcut for the query that dominates real traffic: A/AAAA of a known mesh name.

dnslib builds objects for every field, which costs ~80 µs per query; this
path reads the few fields it needs and writes the same bytes dnslib would
(a property test holds the two to byte equality). Anything unusual —
compression, other types, unknown names, EDNS versions, trailing bytes —
returns None and takes the general path in `answer.py`.
"""

from __future__ import annotations

import struct

from gossipmesh.dns.directory import MeshDirectory
from gossipmesh.names import is_valid_label

TYPE_A = 1
TYPE_AAAA = 28
TYPE_OPT = 41
CLASS_IN = 1
_COUNTS = struct.Struct("!HHHH")
_ANSWER = struct.Struct("!HHHIH")
_OPT = struct.Struct("!BHHIH")


def answer_known_address(
    wire: bytes,
    view: MeshDirectory,
    suffix: bytes,
    ttl: int,
    udp_payload: int,
) -> bytes | None:
    """The full response to a plain A/AAAA query for a mesh name the view holds, else None."""
    if len(wire) < 17 or wire[2] & 0xFE:  # QR, opcode, AA, TC must be zero
        return None
    qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(wire, 4)
    if qdcount != 1 or ancount or nscount or arcount > 1:
        return None
    offset = 12
    labels: list[bytes] = []
    while True:
        length = wire[offset]
        if length == 0:
            break
        if length > 63 or len(labels) == 2:
            return None
        labels.append(wire[offset + 1 : offset + 1 + length])
        offset += 1 + length
        if offset >= len(wire):
            return None
    question_end = offset + 5
    if len(labels) != 2 or question_end > len(wire) or labels[1].lower() != suffix:
        return None
    qtype = (wire[offset + 1] << 8) | wire[offset + 2]
    qclass = (wire[offset + 3] << 8) | wire[offset + 4]
    if qclass != CLASS_IN or qtype not in (TYPE_A, TYPE_AAAA):
        return None
    opt = b""
    if arcount:
        if len(wire) < question_end + 11 or wire[question_end] != 0:
            return None
        _, rtype, _, opt_ttl, rdlength = _OPT.unpack_from(wire, question_end)
        if rtype != TYPE_OPT or (opt_ttl >> 16) & 0xFF or question_end + 11 + rdlength != len(wire):
            return None
        opt = _OPT.pack(0, TYPE_OPT, udp_payload, opt_ttl & 0x8000, 0)
    elif question_end != len(wire):
        return None
    try:
        label = labels[0].lower().decode("ascii")
    except UnicodeDecodeError:
        return None
    if not is_valid_label(label):
        return None
    host = view.host_by_name(label)
    if host is None:
        return None
    if qtype == TYPE_A:
        if host.ipv4 is None:
            return None
        rdata = host.ipv4.packed
    else:
        rdata = host.ipv6.packed
    flags = bytes((0x84 | (wire[2] & 0x01), 0x80 | (wire[3] & 0x10)))
    counts = _COUNTS.pack(1, 1, 0, 1 if arcount else 0)
    answer = _ANSWER.pack(0xC00C, qtype, CLASS_IN, ttl, len(rdata)) + rdata
    return wire[:2] + flags + counts + wire[12:question_end] + answer + opt
