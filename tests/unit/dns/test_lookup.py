"""`resolve_for_cli` (what `gossipmesh resolve` prints) and the peer-table adapter."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from dataclasses import dataclass

from dnslib import DNSRecord

from gossipmesh.dns.answer import Transport
from gossipmesh.dns.directory import IPAddress, MeshHost
from gossipmesh.dns.forward import AiodnsForwarder
from gossipmesh.dns.lookup import resolve_for_cli
from gossipmesh.dns.node_view import PeerTableView
from gossipmesh.dns.resolver import MeshResolver
from tests.unit.dns.support import SERVER, fake_upstream, run, sample_directory


def test_mesh_names_from_the_table_and_the_dht() -> None:
    async def scenario() -> None:
        view = sample_directory()
        table = await resolve_for_cli("server.mesh", view)
        assert table == {
            "query": "server.mesh",
            "found": True,
            "source": "records",
            "rcode": "NOERROR",
            "name": "server",
            "key_name": SERVER.key_name,
            "fqdn": "server.mesh.",
            "ipv4": "100.64.1.2",
            "ipv6": "fd12:3456:789a::1",
        }
        assert (await resolve_for_cli("SERVER", view))["ipv4"] == "100.64.1.2"
        dht = await resolve_for_cli("faraway.mesh.", view)
        assert dht["found"] and dht["source"] == "dht" and view.lookups == ["faraway"]
        missing = await resolve_for_cli("nobody.mesh", view)
        assert missing["found"] is False and missing["rcode"] == "NXDOMAIN"
        by_address = await resolve_for_cli("100.64.1.2", view)
        assert by_address["fqdn"] == "server.mesh." and by_address["source"] == "records"
        assert (await resolve_for_cli("bad_name", view))["found"] is False
        json.dumps(table)

    run(scenario())


def test_slow_dht_is_reported_not_waited_for() -> None:
    class SlowDirectory:
        def host_by_name(self, label: str) -> MeshHost | None:
            return None

        def host_by_address(self, address: IPAddress) -> MeshHost | None:
            return None

        async def lookup_name(self, label: str) -> MeshHost | None:
            await asyncio.sleep(30)
            return None

    async def scenario() -> None:
        result = await resolve_for_cli("x.mesh", SlowDirectory(), lookup_timeout=0.1)
        assert result["rcode"] == "SERVFAIL" and "timed out" in result["error"]
        resolver = MeshResolver(SlowDirectory(), lookup_timeout=0.1)
        wire = await resolver.resolve(DNSRecord.question("x.mesh").pack(), Transport.UDP)
        assert wire is not None and DNSRecord.parse(wire).header.rcode == 2

    run(scenario())


def test_other_names_go_upstream() -> None:
    async def scenario() -> None:
        async with fake_upstream() as (upstream, _):
            forwarder = AiodnsForwarder([upstream], timeout=2.0)
            try:
                result = await resolve_for_cli(
                    "www.example.test", sample_directory(), forwarder=forwarder
                )
                assert result["found"] and result["addresses"] == ["192.0.2.1"]
                assert result["source"] == "upstream"
                missing = await resolve_for_cli(
                    "nothing.example.test", sample_directory(), forwarder=forwarder
                )
                assert missing["found"] is False and missing["rcode"] == "NXDOMAIN"
            finally:
                await forwarder.close()
        alone = await resolve_for_cli("www.example.test", sample_directory())
        assert alone["found"] is False and alone["rcode"] == "SERVFAIL"

    run(scenario())


@dataclass(frozen=True)
class Peer:
    name: str | None
    key_name: str
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address


class Table:
    """Shaped like gossipmesh.directory.Directory's look-ups."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def lookup_name(self, label: str) -> Peer | None:
        return self.peer if label in (self.peer.name, self.peer.key_name) else None

    def lookup_address(self, address: IPAddress) -> Peer | None:
        routed = ipaddress.ip_network("100.90.0.0/24")
        if address in (self.peer.ipv4, self.peer.ipv6) or address in routed:
            return self.peer
        return None


def test_peer_table_view_adapts_the_node_directory() -> None:
    peer = Peer("db", "gm-dddddddddddddddd", ipaddress.IPv4Address("100.65.0.1"), SERVER.ipv6)

    async def dht(label: str) -> Peer | None:
        return peer if label == "later" else None

    view = PeerTableView(Table(peer), dht)
    host = view.host_by_name("db")
    assert host is not None and host.ipv4 == peer.ipv4 and host.key_name == peer.key_name
    assert view.host_by_address(ipaddress.IPv4Address("100.65.0.1")) == host
    assert view.host_by_address(ipaddress.IPv4Address("100.90.0.7")) is None, "routed, not its own"
    assert run(view.lookup_name("later")) == host
    assert run(view.lookup_name("never")) is None
    assert run(PeerTableView(Table(peer)).lookup_name("later")) is None
