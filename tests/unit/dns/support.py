"""Helpers for the resolver tests: a sample mesh, a local upstream, and dig."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
from collections.abc import Awaitable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from dnslib import AAAA, CAA, CNAME, MX, NS, PTR, QTYPE, RR, SOA, SRV, TXT, A, DNSRecord

from gossipmesh.dns.directory import InMemoryDirectory, MeshHost

T = TypeVar("T")

SERVER = MeshHost(
    name="server",
    key_name="gm-aaaaaaaaaaaaaaaa",
    ipv4=ipaddress.IPv4Address("100.64.1.2"),
    ipv6=ipaddress.IPv6Address("fd12:3456:789a::1"),
)
LAPTOP = MeshHost(
    name=None,
    key_name="gm-bbbbbbbbbbbbbbbb",
    ipv4=None,
    ipv6=ipaddress.IPv6Address("fd12:3456:789a::2"),
)
FAR_AWAY = MeshHost(
    name="faraway",
    key_name="gm-cccccccccccccccc",
    ipv4=ipaddress.IPv4Address("100.127.0.9"),
    ipv6=ipaddress.IPv6Address("fdff::9"),
)
"""Known only to the slow path (the DHT stand-in)."""


def sample_directory() -> InMemoryDirectory:
    return InMemoryDirectory([SERVER, LAPTOP], remote=[FAR_AWAY])


def run(coroutine: Awaitable[T], timeout: float = 20.0) -> T:
    """Run one test coroutine with a deadline, so no test can hang."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


# -- a small authoritative upstream on loopback ------------------------------

BIG_TXT = [bytes([65 + i]) * 240 for i in range(4)]


def upstream_zone() -> dict[tuple[str, str], list[RR]]:
    soa = SOA("ns.example.test.", "admin.example.test.", (7, 3600, 600, 86400, 300))
    return {
        ("www.example.test.", "A"): [
            RR("www.example.test.", QTYPE.A, rdata=A("192.0.2.1"), ttl=300)
        ],
        ("alias.example.test.", "A"): [
            RR("alias.example.test.", QTYPE.CNAME, rdata=CNAME("www.example.test."), ttl=120),
            RR("www.example.test.", QTYPE.A, rdata=A("192.0.2.1"), ttl=300),
        ],
        ("v6.example.test.", "AAAA"): [
            RR("v6.example.test.", QTYPE.AAAA, rdata=AAAA("2001:db8::1"), ttl=300)
        ],
        ("example.test.", "MX"): [
            RR("example.test.", QTYPE.MX, rdata=MX("mail.example.test.", 10), ttl=300)
        ],
        ("example.test.", "TXT"): [
            RR("example.test.", QTYPE.TXT, rdata=TXT([b"v=spf1 -all"]), ttl=300)
        ],
        ("example.test.", "NS"): [
            RR("example.test.", QTYPE.NS, rdata=NS("ns.example.test."), ttl=300)
        ],
        ("example.test.", "SOA"): [RR("example.test.", QTYPE.SOA, rdata=soa, ttl=300)],
        ("example.test.", "CAA"): [
            RR("example.test.", QTYPE.CAA, rdata=CAA(0, "issue", "ca.example"), ttl=300)
        ],
        ("_ssh._tcp.example.test.", "SRV"): [
            RR(
                "_ssh._tcp.example.test.",
                QTYPE.SRV,
                rdata=SRV(0, 5, 22, "www.example.test."),
                ttl=300,
            )
        ],
        ("1.2.0.192.in-addr.arpa.", "PTR"): [
            RR("1.2.0.192.in-addr.arpa.", QTYPE.PTR, rdata=PTR("www.example.test."), ttl=300)
        ],
        ("big.example.test.", "TXT"): [
            RR("big.example.test.", QTYPE.TXT, rdata=TXT([chunk]), ttl=300) for chunk in BIG_TXT
        ],
    }


class FakeUpstream(asyncio.DatagramProtocol):
    """Answers from `upstream_zone`; `silent=True` makes it a black hole."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.zone = upstream_zone()
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        request = DNSRecord.parse(data)
        question = request.q
        name = str(question.qname).lower()
        qtype = QTYPE.get(question.qtype)
        self.queries.append((name, qtype))
        if self.silent or self.transport is None:
            return
        reply = request.reply()
        if name == "fail.example.test.":
            reply.header.rcode = 2
        elif (name, qtype) in self.zone:
            for record in self.zone[(name, qtype)]:
                reply.add_answer(record)
        else:
            known = {owner for owner, _ in self.zone}
            reply.header.rcode = 0 if name in known else 3
            soa = self.zone[("example.test.", "SOA")][0]
            reply.add_auth(soa)
        self.transport.sendto(reply.pack(), addr)


@asynccontextmanager
async def fake_upstream(silent: bool = False) -> Any:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: FakeUpstream(silent), local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        yield f"127.0.0.1:{port}", protocol
    finally:
        transport.close()


# -- dig ----------------------------------------------------------------------

DIG = shutil.which("dig")


async def dig(port: int, *args: str, timeout: float = 10.0) -> str:
    """Run dig against 127.0.0.1:port and return its output (+tries=1, bounded)."""
    assert DIG is not None
    process = await asyncio.create_subprocess_exec(
        DIG,
        "@127.0.0.1",
        "-p",
        str(port),
        "+tries=1",
        "+time=5",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return output.decode()


def answer_lines(output: str) -> Iterator[list[str]]:
    """The records of dig +noall +answer output, split into fields."""
    for line in output.splitlines():
        if line and not line.startswith(";"):
            yield line.split()
