"""Property tests: random and mutated query bytes never crash the core nor stop the server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from dnslib import EDNS0, QTYPE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipmesh.dns.answer import Drop, MeshAnswerer, NeedsForward, NeedsLookup, Reply, Transport
from gossipmesh.dns.resolver import MeshResolver
from gossipmesh.dns.server import DnsServer, serve_dns
from tests.unit.dns.support import sample_directory

NAMES = ["server.mesh", "gm-aaaaaaaaaaaaaaaa.mesh", "mesh", "2.1.64.100.in-addr.arpa", "x.example"]
TYPES = ["A", "AAAA", "PTR", "SOA", "NS", "ANY", "MX", "TXT"]


def valid_query(name: str, qtype: str, edns: bool, query_id: int = 0x4242) -> bytes:
    query = DNSRecord(DNSHeader(id=query_id, rd=1), q=DNSQuestion(name, getattr(QTYPE, qtype)))
    if edns:
        query.add_ar(EDNS0(udp_len=1232))
    return bytes(query.pack())


@st.composite
def mutated_queries(draw: st.DrawFn) -> bytes:
    wire = bytearray(
        valid_query(
            draw(st.sampled_from(NAMES)),
            draw(st.sampled_from(TYPES)),
            draw(st.booleans()),
            draw(st.integers(0, 0xFFFF)),
        )
    )
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "set", "cut", "insert", "dup"]))
        position = draw(st.integers(0, max(0, len(wire) - 1)))
        if action == "flip" and wire:
            wire[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and wire:
            wire[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del wire[position:]
        elif action == "insert":
            wire[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "dup":
            wire += wire[12:]
    return bytes(wire)


any_bytes = st.one_of(st.binary(max_size=600), mutated_queries())


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire=any_bytes, tcp=st.booleans())
def test_core_never_raises_and_replies_parse(wire: bytes, tcp: bool) -> None:
    answerer = MeshAnswerer()
    transport = Transport.TCP if tcp else Transport.UDP
    outcome = answerer.answer(wire, sample_directory(), transport)
    if isinstance(outcome, NeedsLookup):
        outcome = answerer.answer_lookup(outcome, None)
    elif isinstance(outcome, NeedsForward):
        outcome = answerer.answer_forward(outcome, None)
    if isinstance(outcome, Drop):
        return
    assert isinstance(outcome, Reply)
    response = DNSRecord.parse(outcome.wire)
    assert response.header.qr == 1
    assert response.header.id == int.from_bytes(wire[:2], "big")
    assert len(outcome.wire) <= (65535 if tcp else 1232)


class ServerThread:
    """The real servers on their own event loop, so hypothesis can drive them synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.server: DnsServer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        resolver = MeshResolver(sample_directory(), lookup_timeout=0.2)
        self.server = self.loop.run_until_complete(serve_dns(resolver, "127.0.0.1", 0))
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(10), "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port


@pytest.fixture(scope="module")
def live_server() -> Iterator[ServerThread]:
    with ServerThread() as server:
        yield server


def udp_exchange(port: int, wire: bytes, expect_id: int) -> DNSRecord:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))
        sock.send(wire)
        for _ in range(10):
            response = DNSRecord.parse(sock.recv(65535))
            if response.header.id == expect_id:
                return response
    raise AssertionError("no answer with the expected id")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=any_bytes)
def test_udp_server_answers_the_next_valid_query(live_server: ServerThread, garbage: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(garbage, ("127.0.0.1", live_server.port))
    query = DNSRecord.question("server.mesh")
    response = udp_exchange(live_server.port, query.pack(), query.header.id)
    assert str(response.a.rdata) == "100.64.1.2"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=any_bytes)
def test_tcp_server_answers_the_next_valid_query(live_server: ServerThread, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=2) as sock:
        sock.sendall(len(garbage).to_bytes(2, "big") + garbage)
        with contextlib.suppress(OSError):
            sock.recv(65535)  # an answer, or the server closing a silent connection
    query = DNSRecord.question("server.mesh", "AAAA")
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=2) as sock:
        wire = query.pack()
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        length = int.from_bytes(_recv_exactly(sock, 2), "big")
        response = DNSRecord.parse(_recv_exactly(sock, length))
    assert response.header.id == query.header.id
    assert str(response.a.rdata) == "fd12:3456:789a::1"


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    for _ in range(size + 1):
        if len(data) == size:
            return data
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    raise AssertionError(f"connection closed after {len(data)} of {size} bytes")
