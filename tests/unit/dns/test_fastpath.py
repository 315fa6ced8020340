"""The byte-level fast path must give exactly the bytes of the general dnslib path."""

from __future__ import annotations

from dnslib import EDNS0, QTYPE, DNSHeader, DNSQuestion, DNSRecord, EDNSOption
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.dns.answer import MeshAnswerer, Reply, Transport
from gossipmesh.dns.fastpath import answer_known_address
from tests.unit.dns.support import LAPTOP, SERVER, sample_directory

NAMES = [
    "server.mesh",
    f"{SERVER.key_name}.mesh",
    f"{LAPTOP.key_name}.mesh",
    "faraway.mesh",
    "mesh",
    "a.server.mesh",
    "server.mesh.example",
    "bad_name.mesh",
]


def random_case(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    header = DNSHeader(
        id=draw(st.integers(0, 0xFFFF)),
        rd=draw(st.integers(0, 1)),
        cd=draw(st.integers(0, 1)),
        ad=draw(st.integers(0, 1)),
    )
    name = random_case(draw, draw(st.sampled_from(NAMES)))
    qtype = getattr(QTYPE, draw(st.sampled_from(["A", "AAAA", "MX", "ANY"])))
    qclass = draw(st.sampled_from([1, 1, 255]))
    query = DNSRecord(header, q=DNSQuestion(name, qtype, qclass))
    if draw(st.booleans()):
        options = [EDNSOption(10, draw(st.binary(min_size=8, max_size=8)))]
        query.add_ar(
            EDNS0(
                udp_len=draw(st.integers(0, 0xFFFF)),
                version=draw(st.sampled_from([0, 0, 1])),
                flags="do" if draw(st.booleans()) else "",
                opts=options if draw(st.booleans()) else [],
            )
        )
    return bytes(query.pack()) + draw(st.sampled_from([b"", b"", b"\x00"]))


@settings(max_examples=1500, deadline=None)
@given(wire=queries(), tcp=st.booleans())
def test_fast_path_equals_the_general_path(wire: bytes, tcp: bool) -> None:
    transport = Transport.TCP if tcp else Transport.UDP
    view = sample_directory()
    fast = MeshAnswerer().answer(wire, view, transport)
    general = MeshAnswerer(fast_path=False).answer(wire, view, transport)
    if isinstance(fast, Reply) and isinstance(general, Reply):
        assert fast.wire == general.wire
    else:
        assert type(fast) is type(general)


def test_fast_path_takes_the_common_queries() -> None:
    view = sample_directory()
    for name, qtype in (("server.mesh", "A"), ("SERVER.MESH", "AAAA")):
        query = DNSRecord.question(name, qtype)
        assert answer_known_address(bytes(query.pack()), view, b"mesh", 60, 1232) is not None
        query.add_ar(EDNS0(udp_len=4096))
        assert answer_known_address(bytes(query.pack()), view, b"mesh", 60, 1232) is not None
    nodata = DNSRecord.question(f"{LAPTOP.key_name}.mesh", "A").pack()
    assert answer_known_address(bytes(nodata), view, b"mesh", 60, 1232) is None
