"""What stock `kademlia` 2.2.3 / `rpcudp` 5.0.1 do, checked: the reasons for our extensions.

If an upgrade changes any of these, revisit the matching override in
gossipmesh/discovery (these tests then fail on purpose).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from kademlia.network import Server
from kademlia.protocol import KademliaProtocol

from gossipmesh.discovery.protocol import RecordProtocol
from tests.unit.discovery.loopback import run


async def _pair() -> tuple[Any, Any]:
    first, second = Server(), Server()
    await first.listen(0, interface="127.0.0.1")
    await second.listen(0, interface="127.0.0.1")
    for server in (first, second):
        server.protocol._wait_timeout = 0.3
    port = second.transport.get_extra_info("sockname")[1]
    assert await first.bootstrap([("127.0.0.1", port)])
    return first, second


def test_stock_set_reports_success_when_every_peer_refused() -> None:
    async def body() -> None:
        first, second = await _pair()
        try:
            second.protocol.rpc_store = lambda sender, nodeid, key, value: False
            # `any()` over (answered, result) tuples: a refusal still counts as success.
            assert await first.set("key", "value") is True
            assert second.storage.get(first.node.id) is None
        finally:
            first.stop()
            second.stop()

    run(body(), timeout=10)


def test_stock_set_raises_when_no_peer_answers() -> None:
    async def body() -> None:
        first, second = await _pair()
        second.stop()
        try:
            with pytest.raises(ValueError):  # max() of an empty list
                await first.set("key", "value")
        finally:
            first.stop()

    run(body(), timeout=10)


def test_stock_store_accepts_any_value_under_any_key() -> None:
    async def body() -> None:
        first, second = await _pair()
        try:
            address = ("127.0.0.1", second.transport.get_extra_info("sockname")[1])
            answered, stored = await first.protocol.store(address, first.node.id, b"k" * 20, b"x")
            assert answered and stored is True
            assert second.storage.get(b"k" * 20) == b"x"
        finally:
            first.stop()
            second.stop()

    run(body(), timeout=10)


def test_stock_welcome_hashes_stored_keys_again() -> None:
    """Stored keys are already digests; welcome_if_new digests them again (our fix uses the key)."""
    stock = inspect.getsource(KademliaProtocol.welcome_if_new)
    assert "Node(digest(key))" in stock
    ours = inspect.getsource(RecordProtocol.welcome_if_new)
    assert "Node(key)" in ours and "digest" not in ours


def test_stock_rpcudp_parses_garbage_in_a_task_that_raises() -> None:
    async def body() -> None:
        protocol = KademliaProtocol(Server().node, None, 20)
        with pytest.raises(Exception):  # noqa: B017 - umsgpack raises several types
            await protocol._solve_datagram(b"\x00" + bytes(20) + b"\xc1", ("127.0.0.1", 1))

    run(body(), timeout=5)
