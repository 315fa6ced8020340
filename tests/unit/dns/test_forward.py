"""Forwarding with aiodns to a local dnslib upstream, including one that never answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dnslib import QTYPE, DNSRecord

from gossipmesh.dns.answer import Transport
from gossipmesh.dns.forward import AiodnsForwarder, read_upstreams
from gossipmesh.dns.resolver import MeshResolver
from tests.unit.dns.support import BIG_TXT, fake_upstream, run, sample_directory

NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3


async def forwarded(resolver: MeshResolver, name: str, qtype: str) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    wire = await resolver.resolve(query.pack(), Transport.TCP)
    assert wire is not None
    response = DNSRecord.parse(wire)
    assert response.header.id == query.header.id and response.header.aa == 0
    return response


def records(response: DNSRecord) -> list[tuple[str, str, str, int]]:
    return [(str(rr.rname), QTYPE.get(rr.rtype), str(rr.rdata), rr.ttl) for rr in response.rr]


def test_common_types_are_rebuilt_faithfully() -> None:
    async def scenario() -> None:
        async with fake_upstream() as (upstream, fake):
            forwarder = AiodnsForwarder([upstream], timeout=2.0)
            resolver = MeshResolver(sample_directory(), forwarder=forwarder)
            try:
                expect = {
                    ("www.example.test", "A"): [("www.example.test.", "A", "192.0.2.1", 300)],
                    ("alias.example.test", "A"): [
                        ("alias.example.test.", "CNAME", "www.example.test.", 120),
                        ("www.example.test.", "A", "192.0.2.1", 300),
                    ],
                    ("v6.example.test", "AAAA"): [("v6.example.test.", "AAAA", "2001:db8::1", 300)],
                    ("example.test", "MX"): [("example.test.", "MX", "10 mail.example.test.", 300)],
                    ("example.test", "TXT"): [("example.test.", "TXT", '"v=spf1 -all"', 300)],
                    ("example.test", "NS"): [("example.test.", "NS", "ns.example.test.", 300)],
                    ("example.test", "CAA"): [
                        ("example.test.", "CAA", '0 issue "ca.example"', 300)
                    ],
                    ("_ssh._tcp.example.test", "SRV"): [
                        ("_ssh._tcp.example.test.", "SRV", "0 5 22 www.example.test.", 300)
                    ],
                    ("1.2.0.192.in-addr.arpa", "PTR"): [
                        ("1.2.0.192.in-addr.arpa.", "PTR", "www.example.test.", 300)
                    ],
                }
                for (name, qtype), wanted in expect.items():
                    response = await forwarded(resolver, name, qtype)
                    assert response.header.rcode == NOERROR, (name, qtype)
                    assert records(response) == wanted, (name, qtype)
                soa = await forwarded(resolver, "example.test", "SOA")
                assert soa.rr[0].rdata.times == (7, 3600, 600, 86400, 300)
                big = await forwarded(resolver, "big.example.test", "TXT")
                assert sorted(b"".join(rr.rdata.data) for rr in big.rr) == BIG_TXT
                assert ("www.example.test.", "A") in fake.queries
            finally:
                await forwarder.close()

    run(scenario())


def test_negative_and_failed_upstream_answers() -> None:
    async def scenario() -> None:
        async with fake_upstream() as (upstream, _):
            forwarder = AiodnsForwarder([upstream], timeout=2.0)
            resolver = MeshResolver(sample_directory(), forwarder=forwarder)
            try:
                nx = await forwarded(resolver, "nothing.example.test", "A")
                assert nx.header.rcode == NXDOMAIN and nx.rr == []
                nodata = await forwarded(resolver, "www.example.test", "AAAA")
                assert nodata.header.rcode == NOERROR and nodata.rr == []
                fail = await forwarded(resolver, "fail.example.test", "A")
                assert fail.header.rcode == SERVFAIL
            finally:
                await forwarder.close()

    run(scenario())


def test_upstream_that_never_answers_gives_servfail_within_the_timeout() -> None:
    async def scenario() -> None:
        async with fake_upstream(silent=True) as (upstream, fake):
            timeout = 0.6
            forwarder = AiodnsForwarder([upstream], timeout=timeout)
            resolver = MeshResolver(sample_directory(), forwarder=forwarder)
            loop = asyncio.get_running_loop()
            try:
                started = loop.time()
                response = await forwarded(resolver, "www.example.test", "A")
                elapsed = loop.time() - started
                assert response.header.rcode == SERVFAIL
                assert elapsed < timeout + 0.5
                assert fake.queries, "the query did reach the silent upstream"
                # The mesh keeps answering while an upstream hangs.
                concurrent = [forwarded(resolver, "www.example.test", "A") for _ in range(5)]
                local = await resolver.resolve(
                    DNSRecord.question("server.mesh").pack(), Transport.UDP
                )
                assert local is not None and DNSRecord.parse(local).header.rcode == NOERROR
                for response in await asyncio.gather(*concurrent):
                    assert response.header.rcode == SERVFAIL
            finally:
                await forwarder.close()

    run(scenario())


def test_no_upstreams_or_no_forwarder_is_servfail_at_once() -> None:
    async def scenario() -> None:
        for forwarder in (AiodnsForwarder([], timeout=5.0), None):
            resolver = MeshResolver(sample_directory(), forwarder=forwarder)
            response = await asyncio.wait_for(forwarded(resolver, "example.com", "A"), 1.0)
            assert response.header.rcode == SERVFAIL

    run(scenario())


def test_read_upstreams_skips_our_own_resolver(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# comment\n; other comment\nsearch lan\n"
        "nameserver 100.100.100.100\nnameserver 192.0.2.53\nnameserver fd00::53\n"
        "nameserver 2001:db8::53\nnameserver fe80::1%eth0\nnameserver not-an-ip\n"
        "nameserver 192.0.2.53\noptions edns0\n"
    )
    assert read_upstreams(conf) == ["192.0.2.53", "2001:db8::53", "fe80::1%eth0"]
    assert read_upstreams(conf, exclude=["192.0.2.53"])[0] == "100.100.100.100"
    assert read_upstreams(tmp_path / "missing") == []


def test_an_upstream_c_ares_rejects_is_a_failure_not_an_exception() -> None:
    async def scenario() -> None:
        forwarder = AiodnsForwarder(["not-an-address"], timeout=0.5)
        try:
            assert await forwarder.forward("example.com", "A") is None
        finally:
            await forwarder.close()

    run(scenario())


def test_pending_slow_paths_are_bounded() -> None:
    async def scenario() -> None:
        async with fake_upstream(silent=True) as (upstream, fake):
            forwarder = AiodnsForwarder([upstream], timeout=5.0)
            resolver = MeshResolver(sample_directory(), forwarder=forwarder, max_pending=0)
            try:
                response = await asyncio.wait_for(forwarded(resolver, "example.test", "A"), 1.0)
                assert response.header.rcode == SERVFAIL
                assert fake.queries == [], "over the bound, nothing is sent upstream"
            finally:
                await forwarder.close()

    run(scenario())
