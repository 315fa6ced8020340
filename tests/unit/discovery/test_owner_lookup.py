"""A node's record can be fetched from the node itself, even when nobody else holds it.

kademlia's neighbour lists never contain the contact whose id is the key, so
without the fix in RecordServer.fetch the first node of a mesh (which
published when it had no peers) could not be found until it republished.
"""

from __future__ import annotations

from tests.unit.discovery.loopback import closing, open_node, run

FAST = {"rpc_timeout": 0.5, "record_lifetime": 60}


def test_first_nodes_record_is_found_from_the_node_itself() -> None:
    run(_first_node(), timeout=30)


async def _first_node() -> None:
    first = await open_node("first", **FAST)  # type: ignore[arg-type]
    joiner = await open_node("joiner", **FAST)  # type: ignore[arg-type]
    async with closing([first, joiner]):
        assert await first.discovery.start() == 0
        lonely = await first.discovery.publish(*first.templates())
        assert not lonely.node.ok  # no peer to store on: only the first node has it
        assert await joiner.discovery.start([first.address]) > 0
        # kademlia may hand the joiner a copy when it joins (welcome_if_new), but
        # only when the joiner is closer to the key than the owner's other
        # contacts; drop that copy so the lookup must go to the owner itself.
        joiner.discovery._server.storage._entries.clear()  # type: ignore[union-attr]
        assert joiner.discovery.stored_record(first.identity.node_id) is None
        found = await joiner.discovery.lookup_node(first.identity.node_id)
        assert found is not None and found == first.discovery.current_node_record()
