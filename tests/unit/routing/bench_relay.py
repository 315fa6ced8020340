"""Benchmark (not a test): the cost of one relay forwarding decision through RoutingCore.

PYTHONPATH=. .venv/bin/python tests/unit/routing/bench_relay.py
"""

from __future__ import annotations

import time

from gossipmesh.routing.core import ViaRelay
from tests.unit.routing.harness import Mesh, identity_for


def main(count: int = 100_000) -> None:
    mesh = Mesh(seed=1)
    a, b, c = (mesh.add_node(identity_for(i, b"bench")) for i in range(3))
    mesh.connect(a, b, 0.001)
    mesh.connect(b, c, 0.001)
    mesh.run_until_true(lambda: mesh.cores[a].route(c) is not None, 10)
    source, relay = mesh.cores[a], mesh.cores[b]
    inner = bytes(1400)
    envelopes = []
    for _ in range(count):
        plan = source.plan_send(c, inner)
        assert isinstance(plan, ViaRelay)
        envelopes.append(plan.payload)
    now = mesh.now
    started = time.perf_counter()
    for index, envelope in enumerate(envelopes):
        relay.receive_control(a, envelope, now + index * 1e-6)
        relay.messages_to_send()
    elapsed = time.perf_counter() - started
    print(f"{elapsed / count * 1e6:.2f} µs per relayed envelope (decision + stats), {count} runs")
    started = time.perf_counter()
    for _ in range(count):
        source.plan_send(c, inner)
    elapsed = time.perf_counter() - started
    print(f"{elapsed / count * 1e6:.2f} µs per plan_send that wraps for a relay")
    assert relay.relay.counts["forwarded"] == count


if __name__ == "__main__":
    main()
