"""The UDP and TCP servers on 127.0.0.1, checked with dig (an independent implementation)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from dnslib import DNSRecord

from gossipmesh.dns.forward import AiodnsForwarder
from gossipmesh.dns.resolver import MeshResolver
from gossipmesh.dns.server import DnsServer, serve_dns
from tests.unit.dns.support import (
    BIG_TXT,
    DIG,
    LAPTOP,
    SERVER,
    answer_lines,
    dig,
    fake_upstream,
    run,
    sample_directory,
)

pytestmark = pytest.mark.skipif(DIG is None, reason="dig (Debian dnsutils) is not installed")


@asynccontextmanager
async def running_resolver(
    max_tcp_connections: int = 64, tcp_idle_timeout: float = 10.0
) -> AsyncIterator[DnsServer]:
    async with fake_upstream() as (upstream, _):
        forwarder = AiodnsForwarder([upstream], timeout=2.0)
        resolver = MeshResolver(sample_directory(), forwarder=forwarder)
        server = await serve_dns(
            resolver,
            "127.0.0.1",
            0,
            max_tcp_connections=max_tcp_connections,
            tcp_idle_timeout=tcp_idle_timeout,
        )
        try:
            yield server
        finally:
            await server.close()
            await forwarder.close()


def status(output: str) -> str:
    for line in output.splitlines():
        if "->>HEADER<<-" in line:
            return line.split("status: ")[1].split(",")[0]
    raise AssertionError(f"no header in dig output:\n{output}")


def flags(output: str) -> set[str]:
    for line in output.splitlines():
        if line.startswith(";; flags:"):
            return set(line.split(":")[1].split(";")[0].split())
    raise AssertionError(f"no flags in dig output:\n{output}")


def test_dig_sees_every_mesh_record_type_over_udp_and_tcp() -> None:
    async def scenario() -> None:
        async with running_resolver() as server:
            port = server.port
            for transport in ("+notcp", "+tcp"):
                short = await dig(port, transport, "+short", "server.mesh", "A")
                assert short.split() == ["100.64.1.2"]
                short = await dig(port, transport, "+short", "SERVER.Mesh", "AAAA")
                assert short.split() == ["fd12:3456:789a::1"]
                short = await dig(port, transport, "+short", f"{LAPTOP.key_name}.mesh", "AAAA")
                assert short.split() == ["fd12:3456:789a::2"]
                short = await dig(port, transport, "+short", "-x", "100.64.1.2")
                assert short.split() == ["server.mesh."]
                short = await dig(port, transport, "+short", "-x", str(SERVER.ipv6))
                assert short.split() == ["server.mesh."]
                soa = await dig(port, transport, "+noall", "+answer", "mesh", "SOA")
                [[owner, _, _, rtype, mname, *_]] = list(answer_lines(soa))
                assert (owner, rtype, mname) == ("mesh.", "SOA", "mesh.")
                ns = await dig(port, transport, "+short", "mesh", "NS")
                assert ns.split() == ["mesh."]

    run(scenario())


def test_dig_sees_nxdomain_and_nodata_with_the_soa() -> None:
    async def scenario() -> None:
        async with running_resolver() as server:
            nx = await dig(server.port, "nobody-here.mesh", "A")
            assert status(nx) == "NXDOMAIN" and "aa" in flags(nx)
            assert "mesh.\t\t\t10\tIN\tSOA\tmesh. hostmaster.mesh." in nx
            nodata = await dig(server.port, "server.mesh", "MX")
            assert status(nodata) == "NOERROR" and "ANSWER: 0" in nodata
            assert "IN\tSOA\tmesh." in nodata
            reverse_nx = await dig(server.port, "-x", "100.64.9.9")
            assert status(reverse_nx) == "NXDOMAIN"
            assert "64.100.in-addr.arpa." in reverse_nx

    run(scenario())


def test_dig_edns_payload_badvers_and_opcodes() -> None:
    async def scenario() -> None:
        async with running_resolver() as server:
            edns = await dig(server.port, "+bufsize=4096", "server.mesh")
            assert "; EDNS: version: 0, flags:; udp: 1232" in edns
            badvers = await dig(server.port, "+edns=1", "+noednsnegotiation", "server.mesh")
            assert status(badvers) == "BADVERS"
            notimp = await dig(server.port, "+opcode=2", "server.mesh")
            assert status(notimp) == "NOTIMP"
            headless = await dig(server.port, "+header-only", "server.mesh")
            assert status(headless) == "FORMERR"
            chaos = await dig(server.port, "version.bind", "CH", "TXT")
            assert status(chaos) == "REFUSED"
            https = await dig(server.port, "example.test", "HTTPS")
            assert status(https) == "NOTIMP"

    run(scenario())


def test_dig_forwarded_names_and_tc_fallback_to_tcp() -> None:
    async def scenario() -> None:
        async with running_resolver() as server:
            port = server.port
            assert (await dig(port, "+short", "www.example.test")).split() == ["192.0.2.1"]
            mx = await dig(port, "+short", "example.test", "MX")
            assert mx.split() == ["10", "mail.example.test."]
            nx = await dig(port, "nothing.example.test")
            assert status(nx) == "NXDOMAIN" and "aa" not in flags(nx)
            fail = await dig(port, "fail.example.test")
            assert status(fail) == "SERVFAIL"
            # Too big for 512 bytes: TC over UDP, and dig's own retry over TCP gets it all.
            truncated = await dig(port, "+noedns", "+ignore", "big.example.test", "TXT")
            assert "tc" in flags(truncated) and "ANSWER: 0" in truncated
            full = await dig(port, "+noedns", "+short", "big.example.test", "TXT")
            assert full.count('"') == 2 * len(BIG_TXT)
            assert "Truncated, retrying in TCP mode" in await dig(
                port, "+noedns", "big.example.test", "TXT"
            )

    run(scenario())


def test_tcp_connections_are_bounded_and_idle_ones_closed() -> None:
    async def scenario() -> None:
        async with running_resolver(max_tcp_connections=2, tcp_idle_timeout=0.3) as server:
            loop = asyncio.get_running_loop()
            first = await asyncio.open_connection("127.0.0.1", server.port)
            second = await asyncio.open_connection("127.0.0.1", server.port)
            deadline = loop.time() + 2
            while server.tcp_connections < 2 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert server.tcp_connections == 2
            third_reader, third_writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await asyncio.wait_for(third_reader.read(), 2) == b""  # refused: closed
            third_writer.close()
            # An idle connection is closed by the server within its idle timeout.
            assert await asyncio.wait_for(first[0].read(), 2) == b""
            assert await asyncio.wait_for(second[0].read(), 2) == b""
            for _, writer in (first, second):
                writer.close()
            # Pipelined queries on one connection are all answered.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for name in ("server.mesh", "mesh"):
                query = DNSRecord.question(name).pack()
                writer.write(len(query).to_bytes(2, "big") + query)
            for name in ("server.mesh", "mesh"):
                length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 2), "big")
                response = DNSRecord.parse(await reader.readexactly(length))
                assert str(response.q.qname) == f"{name}."
            writer.close()

    run(scenario())


def test_udp_server_survives_garbage_and_answers_next_query() -> None:
    async def scenario() -> None:
        async with running_resolver() as server:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", server.port))
                for garbage in (b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\xff" * 40):
                    await loop.sock_sendall(sock, garbage)
                query = DNSRecord.question("server.mesh")
                await loop.sock_sendall(sock, query.pack())
                for _ in range(10):
                    data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)
                    response = DNSRecord.parse(data)
                    if response.header.id == query.header.id and response.q is not None:
                        break
                else:
                    raise AssertionError("no answer to the valid query")
                assert str(response.a.rdata) == "100.64.1.2"
            finally:
                sock.close()

    run(scenario())


def test_servers_listen_on_ipv6_too() -> None:
    async def scenario() -> None:
        resolver = MeshResolver(sample_directory())
        try:
            server = await serve_dns(resolver, "::1", 0)
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        try:
            process = await asyncio.create_subprocess_exec(
                "dig",
                "@::1",
                "-p",
                str(server.port),
                "+short",
                "+tries=1",
                "+time=3",
                "server.mesh",
                "AAAA",
                stdout=asyncio.subprocess.PIPE,
            )
            output, _ = await asyncio.wait_for(process.communicate(), 10)
            assert output.decode().split() == ["fd12:3456:789a::1"]
        finally:
            await server.close()

    run(scenario())
