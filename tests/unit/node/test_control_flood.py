"""A member flooding node control messages: the excess is dropped and counted, the rest works."""

from __future__ import annotations

from gossipmesh.node.control import CONTROL_BURST
from gossipmesh.node.messages import encode_record_request

from .harness import CoreNet
from .test_core import CONVERGE, routes_to, run_until_true


def test_a_flood_of_record_requests_is_cut_to_the_burst_and_counted() -> None:
    net = CoreNet(3)
    net.start()
    victim, flooder, bystander = (m.core for m in net.members)
    run_until_true(
        net,
        lambda: (
            routes_to(victim, flooder.identity.node_id)
            and routes_to(victim, bystander.identity.node_id)
        ),
        CONVERGE,
    )
    request = encode_record_request([bystander.identity.node_id])
    flood = int(CONTROL_BURST) * 3
    for _ in range(flood):
        flooder.send_control(victim.identity.node_id, request)
    flooder._service()  # what every call into a core ends with: its output to the outbox
    net.settle()
    limited = victim.counters.control_rate_limited
    assert flood - CONTROL_BURST - 100 <= limited <= flood - CONTROL_BURST + 100

    # Others are not limited by it, and the flooder is served again once it slows down.
    before = bystander.counters.records_not_newer
    bystander.send_control(victim.identity.node_id, request)
    bystander._service()
    net.settle()
    assert victim.counters.control_rate_limited == limited
    net.run_for(10.0)
    flooder.send_control(victim.identity.node_id, request)
    flooder._service()
    net.settle()
    assert victim.counters.control_rate_limited == limited
    assert bystander.counters.records_not_newer > before  # its request was answered
