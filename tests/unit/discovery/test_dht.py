"""The DHT on loopback, small meshes: refusals, hostile replies, restart, bootstrap, transport."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from kademlia.node import Node

from gossipmesh.discovery import Discovery
from gossipmesh.discovery.peer_cache import cache_path
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.names import key_name
from gossipmesh.records import (
    Endpoint,
    EndpointKind,
    NodeRecord,
    RefusalReason,
    decode_node_record,
)
from gossipmesh.wire import MessageType
from tests.unit.discovery.loopback import LoopbackNode, closing, open_node, run, wait_for

FAST = dict(rpc_timeout=0.5)


async def mesh(count: int, **options: Any) -> list[LoopbackNode]:
    """`count` started nodes, bootstrapped from the first, each with its records published."""
    nodes = [await open_node(f"host-{i}", **(FAST | options)) for i in range(count)]
    await nodes[0].discovery.start()
    await asyncio.gather(*(n.discovery.start([nodes[0].address]) for n in nodes[1:]))
    results = await asyncio.gather(*(n.discovery.publish(*n.templates()) for n in nodes))
    assert all(r.ok for r in results)
    return nodes


def as_kademlia_node(node: LoopbackNode) -> Node:
    host, port = node.address
    return Node(node.identity.node_id, host, port)


def refused(nodes: list[LoopbackNode], reason: RefusalReason) -> int:
    return sum(n.discovery.stats.refused[reason.value] for n in nodes)


def test_refusals_are_neither_stored_nor_served_and_are_counted() -> None:
    run(_refusals(), timeout=30)


async def _refusals() -> None:
    honest = await mesh(4)
    attacker = await open_node("mallory", **FAST)  # type: ignore[arg-type]
    outsider = await open_node("outsider", secret=NetworkSecret(b"another network's secret!"))
    async with closing([*honest, attacker, outsider]):
        await attacker.discovery.start([honest[0].address])
        alice, bob = honest[0], honest[1]
        genuine = alice.discovery.current_node_record()
        assert genuine is not None
        protocol = attacker.discovery._server.protocol  # type: ignore[union-attr]
        now = int(attacker.discovery.now())

        async def store_everywhere(key: bytes, value: bytes) -> list[Any]:
            replies = await asyncio.gather(
                *(protocol.call_store(as_kademlia_node(n), key, value) for n in honest)
            )
            return [reply for answered, reply in replies if answered]

        # A forged record: Alice's, with Mallory's endpoint and Alice's old signature.
        forged = replace(genuine, endpoints=(Endpoint(EndpointKind.HOST, "192.0.2.66", 1),))
        assert await store_everywhere(alice.identity.node_id, forged.encode()) == [False] * 4
        assert refused(honest, RefusalReason.BAD_SIGNATURE) == 4

        # A replay: Alice's previous record after she published a newer one.
        await alice.discovery.publish(*alice.templates())
        assert await store_everywhere(alice.identity.node_id, genuine.encode()) == [False] * 4
        assert refused(honest, RefusalReason.STALE_SEQUENCE) == 4

        # Mallory's own records: expired, from the future, oversized, under Alice's key.
        mallory = attacker.identity

        def mallorys(issued_at: int, lifetime: int = 60, **changes: Any) -> bytes:
            return (
                NodeRecord(mallory.public_key, 7, issued_at, issued_at + lifetime, **changes)
                .signed(mallory)
                .encode()
            )

        key = mallory.node_id
        assert await store_everywhere(key, mallorys(now - 120)) == [False] * 4
        assert await store_everywhere(key, mallorys(now + 3600)) == [False] * 4
        assert await store_everywhere(key, b"\x01" + bytes(4000)) == [False] * 4
        assert await store_everywhere(alice.identity.node_id, mallorys(now)) == [False] * 4
        assert refused(honest, RefusalReason.EXPIRED) == 4
        assert refused(honest, RefusalReason.FROM_FUTURE) == 4
        assert refused(honest, RefusalReason.OVERSIZED) == 4
        assert refused(honest, RefusalReason.WRONG_KEY) == 4

        for node in honest:
            held = node.discovery.stored_record(alice.identity.node_id)
            assert held is None or held == alice.discovery.current_node_record()
            assert node.discovery.stored_record(mallory.node_id) is None
        # None of it is served: Alice's genuine newest record is, Mallory's id has nothing.
        found = await bob.discovery.lookup_node(alice.identity.node_id)
        assert found == alice.discovery.current_node_record()
        assert await bob.discovery.lookup_node(mallory.node_id) is None
        assert sum(n.discovery.stats.rpc_errors for n in honest) == 0

        # Without the network secret: nothing opens, nothing is learned or stored.
        dropped_before = alice.discovery.stats.datagrams_dropped
        assert await outsider.discovery.start([alice.address]) == 0
        assert alice.discovery.stats.datagrams_dropped > dropped_before
        assert not (await outsider.discovery.publish(*outsider.templates())).ok
        assert await outsider.discovery.lookup_node(alice.identity.node_id) is None
        assert await bob.discovery.lookup_node(outsider.identity.node_id) is None
        assert await bob.discovery.lookup_name("outsider") is None


def test_hostile_member_replies_do_not_break_lookups() -> None:
    run(_hostile_replies(), timeout=30)


async def _hostile_replies() -> None:
    honest = await mesh(3)
    hostile = await open_node("hostile", **FAST)  # type: ignore[arg-type]
    victim = await open_node("victim", **FAST)  # type: ignore[arg-type]
    async with closing([*honest, hostile, victim]):
        await hostile.discovery.start([honest[0].address])
        protocol: Any = hostile.discovery._server.protocol  # type: ignore[union-attr]
        garbage: list[object] = [
            {"value": [1, [2]]},
            {"value": b"\x01\x01junk"},
            {"no": "value"},
            [[1, 2, 3], "x", [b"short", "127.0.0.1", 1]],
            None,
        ]
        answers = iter(garbage * 100)
        protocol.rpc_find_value = lambda sender, nodeid, key: next(answers)
        protocol.rpc_find_node = lambda sender, nodeid, key: next(answers)

        # Knowing only the hostile node, lookups end in None, never in an exception.
        # (Keys no one holds, so the hostile node's welcome push of records it holds
        # does not answer them from the victim's own storage.)
        await victim.discovery.start([hostile.address])
        for _ in range(5):
            assert await victim.discovery.lookup_node(Identity.generate().node_id) is None
        assert await victim.discovery.lookup_name("nobody-has-this") is None
        assert sum(victim.discovery.stats.refused.values()) > 0
        for target in honest:
            found = await victim.discovery.lookup_node(target.identity.node_id)
            assert found is None or found.public_key == target.identity.public_key
        # With an honest peer as well, the genuine records are found.
        await victim.discovery._server.bootstrap([honest[0].address])  # type: ignore[union-attr]
        for target in honest:
            found = await victim.discovery.lookup_node(target.identity.node_id)
            assert found is not None and found.public_key == target.identity.public_key
        # A resent sealed datagram (an eavesdropper's replay) is not answered again.
        captured: list[bytes] = []
        original_send = victim.discovery._transport._send  # type: ignore[union-attr]

        def capture(datagram: bytes, addr: tuple[str, int]) -> None:
            captured.append(datagram)
            original_send(datagram, addr)

        victim.discovery._transport._send = capture  # type: ignore[union-attr]
        await victim.discovery._server.protocol.ping(honest[0].address, bytes(20))  # type: ignore[union-attr]
        victim.discovery._transport._send = original_send  # type: ignore[union-attr]
        receiver = honest[0].discovery
        answered = receiver.stats.datagrams_sent
        receiver.datagram_received(captured[0], victim.address)
        assert receiver.stats.datagrams_replayed == 1
        assert receiver.stats.datagrams_sent == answered
        # A sealed but malformed RPC from a member is counted, not raised.
        seal = victim.discovery._seal
        before = victim.discovery.stats.rpc_malformed
        for plaintext in (
            b"\x00" + bytes(20) + b"\xc1",
            b"\x00" + bytes(20) + b"\x92\x01\x02",
            b"x",
        ):
            victim.discovery.datagram_received(seal.seal(plaintext), hostile.address)
        assert victim.discovery.stats.rpc_malformed == before + 3


def test_restart_rejoins_from_the_peer_cache(tmp_path: Path) -> None:
    run(_restart(tmp_path), timeout=30)


async def _restart(state_dir: Path) -> None:
    others = await mesh(4)
    async with closing(others):
        first = await open_node("phoenix", state_dir=state_dir, **FAST)  # type: ignore[arg-type]
        async with closing([first]):
            assert await first.discovery.start([others[0].address]) > 0
            assert (await first.discovery.publish(*first.templates())).ok
            old = first.discovery.current_node_record()
            assert old is not None
        cache = json.loads(cache_path(state_dir).read_text())
        assert cache["peers"] and cache["last_sequence"] >= old.sequence

        # Same key, same state directory, no bootstrap: it rejoins from the cache,
        # and its new records supersede the old ones (the sequence carried over).
        again = await open_node("phoenix", identity=first.identity, state_dir=state_dir, **FAST)  # type: ignore[arg-type]
        async with closing([again]):
            assert await again.discovery.start() > 0
            assert again.discovery.cache_problem is None
            result = await again.discovery.publish(*again.templates())
            assert result.ok
            new = again.discovery.current_node_record()
            assert new is not None and new.sequence > old.sequence
            assert new.endpoints_of(EndpointKind.HOST)[0].port == again.address[1]
            found = await others[1].discovery.lookup_node(first.identity.node_id)
            assert found == new
            assert (await again.discovery.lookup_name("host-2")) is not None


def test_corrupt_cache_is_reported_and_ignored(tmp_path: Path) -> None:
    run(_corrupt_cache(tmp_path), timeout=30)


async def _corrupt_cache(state_dir: Path) -> None:
    others = await mesh(2)
    cache_path(state_dir).write_bytes(b"\x80\x04\x95not json at all")
    node = await open_node("survivor", state_dir=state_dir, **FAST)  # type: ignore[arg-type]
    async with closing([*others, node]):
        assert await node.discovery.start([others[0].address]) > 0
        assert node.discovery.cache_problem is not None
        assert "peers.json" in node.discovery.cache_problem
        assert node.discovery.stats.cache_errors == 1
    # Stopping rewrote it as a valid cache.
    assert json.loads(cache_path(state_dir).read_text())["peers"]


def test_bootstrap_by_host_name_and_reflexive_endpoint() -> None:
    run(_host_name(), timeout=30)


async def _host_name() -> None:
    others = await mesh(3)
    node = await open_node("named", **FAST)  # type: ignore[arg-type]
    async with closing([*others, node]):
        assert await node.discovery.start([("localhost", others[0].address[1])]) > 0
        reflexive = node.discovery.reflexive_endpoint()
        assert reflexive == Endpoint(EndpointKind.REFLEXIVE, *node.address)
        await node.discovery.publish(*node.templates())
        found = await others[2].discovery.lookup_name("named")
        assert found is not None
        # Every node also answers to its key name, which needs no name record.
        for seeker in (others[2], node):
            by_key_name = await seeker.discovery.lookup_name(key_name(node.identity.node_id))
            assert by_key_name is not None and by_key_name.public_key == found.public_key
        missing = key_name(Identity.generate().node_id)
        assert await node.discovery.lookup_name(missing) is None
        assert found.endpoints_of(EndpointKind.REFLEXIVE) == (reflexive,)
        # Unresolvable names are reported and skipped, not fatal.
        late = await open_node("late", **FAST)  # type: ignore[arg-type]
        async with closing([late]):
            joined = await late.discovery.start(
                [("no-such-host.invalid", 1), ("127.0.0.1", others[0].address[1])]
            )
            assert joined > 0


def test_runs_on_an_injected_in_memory_network() -> None:
    """No sockets: the transport is a callable, the only I/O the DHT does."""
    run(_in_memory(), timeout=30)


async def _in_memory() -> None:
    loop = asyncio.get_running_loop()
    secret = NetworkSecret(b"in-memory network secret 0123456")
    nodes: dict[tuple[str, int], Discovery] = {}
    wire: list[int] = []

    def sender(source: tuple[str, int]) -> Any:
        def send(datagram: bytes, addr: tuple[str, int]) -> None:
            assert datagram[0] == MessageType.DHT
            wire.append(len(datagram))
            target = nodes.get(addr)
            if target is not None:
                loop.call_later(0.001, target.datagram_received, datagram, source)

        return send

    fake_wall = 2_000_000_000.0
    for i in range(6):
        address = (f"10.0.0.{i + 1}", 4000)
        nodes[address] = Discovery(
            Identity.generate(),
            secret,
            sender(address),
            rpc_timeout=0.5,
            wall_clock=lambda: fake_wall,
        )
    addresses = list(nodes)
    await nodes[addresses[0]].start()
    for address in addresses[1:]:
        await nodes[address].start([addresses[0]])
    for address, discovery in nodes.items():
        template = NodeRecord(
            discovery.identity.public_key,
            0,
            0,
            1,
            endpoints=(Endpoint(EndpointKind.HOST, address[0], address[1]),),
        )
        assert (await discovery.publish(template)).ok
        record = discovery.current_node_record()
        assert record is not None and record.issued_at == int(fake_wall)
        assert discovery.reflexive_endpoint() == Endpoint(EndpointKind.REFLEXIVE, *address)
    for seeker in nodes.values():
        for target in nodes.values():
            found = await seeker.lookup_node(target.identity.node_id)
            assert found is not None and decode_node_record(found.encode()) == found
    assert sum(wire) == sum(d.stats.bytes_sent for d in nodes.values())
    for discovery in nodes.values():
        await discovery.stop()


def test_lookups_before_start_and_after_stop_are_none() -> None:
    async def body() -> None:
        node = await open_node("idle")
        async with closing([node]):
            assert await node.discovery.lookup_node(bytes(20)) is None
            node.discovery.datagram_received(b"\x05" + bytes(40), ("127.0.0.1", 1))
            assert node.discovery.stats.datagrams_dropped == 1
            await node.discovery.start()
            await node.discovery.stop()
            assert await node.discovery.lookup_name("idle") is None
            assert await wait_for(lambda: True, timeout=1)

    run(body(), timeout=10)


def test_known_peer_ids_are_the_ids_of_known_peers() -> None:
    async def body() -> None:
        idle = await open_node("idle")
        async with closing([idle]):
            assert idle.discovery.known_peer_ids() == []  # before start: no routing table
        nodes = await mesh(3)
        async with closing(nodes):
            for node in nodes:
                ids = node.discovery.known_peer_ids()
                assert ids == [p.node_id for p in node.discovery.known_peers()]
                others = {n.identity.node_id for n in nodes if n is not node}
                assert set(ids) == others  # three nodes all know each other; never themselves

    run(body(), timeout=30)


def test_a_contested_name_goes_to_the_earliest_claim_whatever_the_order() -> None:
    run(_contested_name(), timeout=30)


async def _contested_name() -> None:
    others = await mesh(3)
    early = await open_node("shared", **FAST)  # type: ignore[arg-type]
    late = await open_node("shared", **FAST)  # type: ignore[arg-type]
    async with closing([*others, early, late]):
        for node in (early, late):
            await node.discovery.start([others[0].address])

        def claiming(node: LoopbackNode, since: int) -> tuple[NodeRecord, Any]:
            record, name = node.templates()
            return (replace(record, name_claimed_since=since), replace(name, claimed_since=since))

        # The later claim is published first; the earlier one still takes the name.
        assert (await late.discovery.publish(*claiming(late, 2000))).ok
        await early.discovery.publish(*claiming(early, 1000))
        for seeker in others:
            found = await seeker.discovery.lookup_name("shared")
            assert found is not None and found.public_key == early.identity.public_key
        # Republishing the later claim changes nothing: refused by the holders (or
        # already by the late node itself, when it holds the earlier claim).
        await late.discovery.publish(*claiming(late, 2000))
        assert refused([*others, early, late], RefusalReason.NAME_TAKEN) > 0
        for seeker in others:
            found = await seeker.discovery.lookup_name("shared")
            assert found is not None and found.public_key == early.identity.public_key
