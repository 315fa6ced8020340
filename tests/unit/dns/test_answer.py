"""The answering core, checked by parsing its bytes with dnslib."""

from __future__ import annotations

import ipaddress

import pytest
from dnslib import EDNS0, QTYPE, RR, TXT, DNSHeader, DNSRecord
from dnslib.buffer import Buffer

from gossipmesh.dns.answer import (
    Drop,
    MeshAnswerer,
    NeedsForward,
    NeedsLookup,
    Reply,
    Transport,
    UpstreamAnswer,
)
from gossipmesh.dns.config import ResolverConfig
from tests.unit.dns.support import FAR_AWAY, LAPTOP, SERVER, sample_directory

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5


def ask(
    name: str,
    qtype: str = "A",
    *,
    answerer: MeshAnswerer | None = None,
    edns: EDNS0 | None = None,
    transport: Transport = Transport.UDP,
) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    if edns is not None:
        query.add_ar(edns)
    outcome = (answerer or MeshAnswerer()).answer(query.pack(), sample_directory(), transport)
    assert isinstance(outcome, Reply), outcome
    response = DNSRecord.parse(outcome.wire)
    assert response.header.id == query.header.id
    assert response.header.qr == 1
    return response


def rdata(response: DNSRecord) -> list[tuple[str, str]]:
    return [(QTYPE.get(rr.rtype), str(rr.rdata)) for rr in response.rr]


def assert_negative(response: DNSRecord, rcode: int, zone: str = "mesh.") -> None:
    assert response.header.rcode == rcode
    assert response.header.aa == 1
    assert response.rr == []
    [soa] = response.auth
    assert QTYPE.get(soa.rtype) == "SOA"
    assert str(soa.rname) == zone
    assert soa.ttl == ResolverConfig().negative_ttl
    assert soa.rdata.times[-1] == ResolverConfig().negative_ttl


def test_name_answers_a_and_aaaa_authoritatively() -> None:
    response = ask("server.mesh", "A")
    assert response.header.rcode == NOERROR and response.header.aa == 1
    assert rdata(response) == [("A", "100.64.1.2")]
    assert response.rr[0].ttl == ResolverConfig().answer_ttl
    assert rdata(ask("server.mesh", "AAAA")) == [("AAAA", "fd12:3456:789a::1")]


def test_key_name_answers_like_the_name() -> None:
    assert rdata(ask(f"{SERVER.key_name}.mesh", "A")) == [("A", "100.64.1.2")]
    assert rdata(ask(f"{LAPTOP.key_name}.mesh", "AAAA")) == [("AAAA", "fd12:3456:789a::2")]


def test_names_are_case_insensitive_and_the_question_is_echoed() -> None:
    response = ask("SeRvEr.MeSh", "A")
    assert rdata(response) == [("A", "100.64.1.2")]
    assert str(response.q.qname) == "SeRvEr.MeSh."
    assert str(response.rr[0].rname) == "SeRvEr.MeSh."


def test_any_gives_both_addresses() -> None:
    assert sorted(rdata(ask("server.mesh", "ANY"))) == [
        ("A", "100.64.1.2"),
        ("AAAA", "fd12:3456:789a::1"),
    ]


@pytest.mark.parametrize("qtype", ["MX", "TXT", "SRV", "PTR", "NS", "SOA", "CNAME"])
def test_existing_name_without_that_type_is_nodata(qtype: str) -> None:
    assert_negative(ask("server.mesh", qtype), NOERROR)


def test_node_without_ipv4_is_nodata_for_a() -> None:
    assert_negative(ask(f"{LAPTOP.key_name}.mesh", "A"), NOERROR)


@pytest.mark.parametrize(
    "name", ["deeper.server.mesh", "bad_label.mesh", "-dash.mesh", "a.b.c.mesh"]
)
def test_names_that_cannot_exist_are_nxdomain(name: str) -> None:
    assert_negative(ask(name), NXDOMAIN)


def test_unknown_label_asks_the_slow_path_then_answers() -> None:
    answerer = MeshAnswerer()
    outcome = answerer.answer(
        DNSRecord.question("faraway.mesh").pack(), sample_directory(), Transport.UDP
    )
    assert isinstance(outcome, NeedsLookup)
    assert outcome.label == "faraway"
    found = DNSRecord.parse(answerer.answer_lookup(outcome, FAR_AWAY).wire)
    assert rdata(found) == [("A", "100.127.0.9")]
    missing = DNSRecord.parse(answerer.answer_lookup(outcome, None).wire)
    assert_negative(missing, NXDOMAIN)
    wrong = DNSRecord.parse(answerer.answer_lookup(outcome, SERVER).wire)
    assert_negative(wrong, NXDOMAIN)


def test_apex_soa_ns_and_addresses() -> None:
    soa = ask("mesh", "SOA")
    assert soa.header.aa == 1
    [record] = soa.rr
    assert QTYPE.get(record.rtype) == "SOA"
    assert str(record.rdata.mname) == "mesh."
    ns = ask("mesh", "NS")
    assert rdata(ns) == [("NS", "mesh.")]
    assert sorted(str(rr.rdata) for rr in ns.ar) == ["100.100.100.100", "fd00::53"]
    assert rdata(ask("mesh", "A")) == [("A", "100.100.100.100")]
    assert_negative(ask("mesh", "MX"), NOERROR)


def test_ptr_for_mesh_ipv4_and_ipv6() -> None:
    v4 = ask(ipaddress.IPv4Address("100.64.1.2").reverse_pointer, "PTR")
    assert rdata(v4) == [("PTR", "server.mesh.")]
    v6 = ask(LAPTOP.ipv6.reverse_pointer, "PTR")
    assert rdata(v6) == [("PTR", f"{LAPTOP.key_name}.mesh.")]
    resolver = ask("100.100.100.100.in-addr.arpa", "PTR")
    assert rdata(resolver) == [("PTR", "mesh.")]


def test_reverse_negative_answers_carry_the_reverse_zone_soa() -> None:
    assert_negative(ask("9.9.64.100.in-addr.arpa", "PTR"), NXDOMAIN, "64.100.in-addr.arpa.")
    assert_negative(ask("2.1.64.100.in-addr.arpa", "A"), NOERROR, "64.100.in-addr.arpa.")
    assert_negative(ask("1.64.100.in-addr.arpa", "PTR"), NOERROR, "64.100.in-addr.arpa.")
    assert_negative(ask("x.2.1.64.100.in-addr.arpa", "PTR"), NXDOMAIN, "64.100.in-addr.arpa.")
    assert_negative(ask("0.0.d.f.ip6.arpa", "PTR"), NOERROR, "d.f.ip6.arpa.")
    soa = ask("65.100.in-addr.arpa", "SOA")
    assert [QTYPE.get(rr.rtype) for rr in soa.rr] == ["SOA"]


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("example.com", "A"),
        ("1.2.0.192.in-addr.arpa", "PTR"),  # outside the mesh CIDR
        ("1.1.1.128.100.in-addr.arpa", "PTR"),
        ("100.in-addr.arpa", "NS"),  # covers more than the mesh
        ("1.0.0.2.ip6.arpa", "PTR"),
        ("mesh.example.com", "AAAA"),
        (".", "NS"),
    ],
)
def test_other_names_are_forwarded(name: str, qtype: str) -> None:
    outcome = MeshAnswerer().answer(
        DNSRecord.question(name, qtype).pack(), sample_directory(), Transport.UDP
    )
    assert isinstance(outcome, NeedsForward)
    assert outcome.qtype == qtype


def test_forwarded_answers_are_not_authoritative_and_failures_are_servfail() -> None:
    answerer = MeshAnswerer()
    outcome = answerer.answer(
        DNSRecord.question("example.com").pack(), sample_directory(), Transport.UDP
    )
    assert isinstance(outcome, NeedsForward)
    failed = DNSRecord.parse(answerer.answer_forward(outcome, None).wire)
    assert failed.header.rcode == SERVFAIL and failed.header.aa == 0
    assert str(failed.q.qname) == "example.com."
    nx = DNSRecord.parse(answerer.answer_forward(outcome, UpstreamAnswer(rcode=NXDOMAIN)).wire)
    assert nx.header.rcode == NXDOMAIN and nx.header.aa == 0


def test_type_aiodns_cannot_ask_is_notimp() -> None:
    assert ask("example.com", "HTTPS").header.rcode == NOTIMP
    assert ask("example.com", "DNSKEY").header.rcode == NOTIMP


def test_zone_transfers_and_other_classes_are_refused() -> None:
    assert ask("mesh", "AXFR").header.rcode == REFUSED
    query = DNSRecord.question("version.bind", "TXT", "CH")
    outcome = MeshAnswerer().answer(query.pack(), sample_directory(), Transport.UDP)
    assert isinstance(outcome, Reply)
    assert DNSRecord.parse(outcome.wire).header.rcode == REFUSED


def test_suffix_is_configurable() -> None:
    answerer = MeshAnswerer(ResolverConfig(suffix="Corp"))
    assert rdata(ask("server.corp", answerer=answerer)) == [("A", "100.64.1.2")]
    assert rdata(ask("corp", "NS", answerer=answerer)) == [("NS", "corp.")]
    ptr = ask("2.1.64.100.in-addr.arpa", "PTR", answerer=answerer)
    assert rdata(ptr) == [("PTR", "server.corp.")]
    outcome = answerer.answer(
        DNSRecord.question("server.mesh").pack(), sample_directory(), Transport.UDP
    )
    assert isinstance(outcome, NeedsForward)


def test_configured_cidr_decides_the_reverse_zone() -> None:
    answerer = MeshAnswerer(ResolverConfig(ipv4_network=ipaddress.IPv4Network("10.20.0.0/16")))
    assert_negative(
        ask("9.9.20.10.in-addr.arpa", "PTR", answerer=answerer), NXDOMAIN, "20.10.in-addr.arpa."
    )
    outcome = answerer.answer(
        DNSRecord.question("2.1.64.100.in-addr.arpa", "PTR").pack(),
        sample_directory(),
        Transport.UDP,
    )
    assert isinstance(outcome, NeedsForward)


def test_edns_is_echoed_with_our_payload_and_the_do_bit() -> None:
    response = ask("server.mesh", edns=EDNS0(udp_len=4096, flags="do"))
    [opt] = [rr for rr in response.ar if rr.rtype == QTYPE.OPT]
    assert opt.rclass == ResolverConfig().udp_payload
    assert opt.ttl & 0x8000
    plain = ask("server.mesh")
    assert [rr for rr in plain.ar if rr.rtype == QTYPE.OPT] == []


def test_unknown_edns_version_is_badvers() -> None:
    response = ask("server.mesh", edns=EDNS0(udp_len=1232, version=1))
    [opt] = [rr for rr in response.ar if rr.rtype == QTYPE.OPT]
    assert (opt.ttl >> 24) == 1 and response.header.rcode == 0  # BADVERS = 16
    assert response.rr == []


def big_forward(answerer: MeshAnswerer, transport: Transport, edns: EDNS0 | None) -> DNSRecord:
    query = DNSRecord.question("big.example.com", "TXT")
    if edns is not None:
        query.add_ar(edns)
    outcome = answerer.answer(query.pack(), sample_directory(), transport)
    assert isinstance(outcome, NeedsForward)
    records = tuple(
        RR("big.example.com", QTYPE.TXT, rdata=TXT([bytes([65 + i]) * 200]), ttl=60)
        for i in range(4)
    )
    reply = answerer.answer_forward(outcome, UpstreamAnswer(rcode=NOERROR, answer=records))
    assert len(reply.wire) <= (
        65535 if transport is Transport.TCP else max(512, edns.rclass if edns else 512)
    )
    return DNSRecord.parse(reply.wire)


def test_answers_too_big_for_udp_set_tc_and_fit_the_client_payload() -> None:
    answerer = MeshAnswerer()
    plain = big_forward(answerer, Transport.UDP, None)
    assert plain.header.tc == 1 and plain.rr == []
    assert str(plain.q.qname) == "big.example.com."
    larger = big_forward(answerer, Transport.UDP, EDNS0(udp_len=1232))
    assert larger.header.tc == 0 and len(larger.rr) == 4
    small_edns = big_forward(answerer, Transport.UDP, EDNS0(udp_len=600))
    assert small_edns.header.tc == 1
    tcp = big_forward(answerer, Transport.TCP, None)
    assert tcp.header.tc == 0 and len(tcp.rr) == 4


def raw_query(flags: int, qdcount: int = 1, body: bytes | None = None) -> bytes:
    question = DNSRecord.question("server.mesh").pack()[12:]
    header = (0x1234).to_bytes(2, "big") + flags.to_bytes(2, "big")
    header += qdcount.to_bytes(2, "big") + bytes(6)
    return header + (question if body is None else body)


def answer_raw(wire: bytes) -> DNSRecord | None:
    outcome = MeshAnswerer().answer(wire, sample_directory(), Transport.UDP)
    if isinstance(outcome, Drop):
        return None
    assert isinstance(outcome, Reply)
    return DNSRecord.parse(outcome.wire)


def test_malformed_queries_get_formerr_when_the_header_parses() -> None:
    truncated = answer_raw(raw_query(0x0100, body=b"\x06server\x04me"))
    assert truncated is not None and truncated.header.rcode == FORMERR
    assert truncated.header.id == 0x1234
    no_question = answer_raw(raw_query(0x0100, qdcount=0, body=b""))
    assert no_question is not None and no_question.header.rcode == FORMERR
    two = answer_raw(
        raw_query(0x0100, qdcount=2, body=DNSRecord.question("a.mesh").pack()[12:] * 2)
    )
    assert two is not None and two.header.rcode == FORMERR


def test_garbage_shorter_than_a_header_and_responses_get_silence() -> None:
    assert answer_raw(b"\x12\x34\x01") is None
    assert answer_raw(raw_query(0x8100)) is None  # QR set: a response


def test_unsupported_opcodes_are_notimp() -> None:
    for opcode in (1, 2, 4, 5):
        response = answer_raw(raw_query(0x0100 | opcode << 11))
        assert response is not None
        assert response.header.rcode == NOTIMP
        assert response.header.opcode == opcode


def test_servfail_helper_keeps_the_id() -> None:
    wire = MeshAnswerer().servfail(raw_query(0x0100))
    assert wire is not None
    header = DNSHeader.parse(Buffer(wire))
    assert header.id == 0x1234 and header.rcode == SERVFAIL


def test_label_length_bytes_above_63_are_formerr_not_a_crash() -> None:
    # dnslib reads 0x40 as a 64-byte label; packing it back would raise.
    wire = bytes.fromhex("000000000001000000000000") + b"\x40" + bytes(64) + b"\x00\x00\x01\x00\x01"
    response = answer_raw(wire)
    assert response is not None and response.header.rcode == FORMERR
