"""The connection table: bounded, expired incrementally, hard to flush with a flood.

Each flow is stored under two keys, one per direction (`in_map[key_in]` for
packets from the mesh, `out_map[key_out]` for packets into it), in one dict
pair per protocol family, so that a packet's own bytes sliced out are the
key and an established flow costs one dict look-up.

Expiry: a flow lives while `now < seen + timeout`. Refreshing it is one
store (`flow.seen = now`); a heap holds one entry per flow with a deadline
no later than its real one. `expire` pops due entries a bounded number at a
time: a flow refreshed since goes back in at its new deadline, so a busy
flow is looked at once per timeout, never once per packet. `next_due` is
the heap's first deadline: while `now < next_due` no flow in the table has
expired, which is what lets the filter's fast path skip the per-flow check.

The bound (MAX_FLOWS): when the table is full, a new flow first takes the
place of an expired one, then of the oldest *unconfirmed* flow (TCP before
its handshake completed or after FIN/RST, UDP, echo and other protocols
before any reply). Confirmed flows are never evicted; when every flow is
confirmed, the new flow is refused (`table_full`). Confirmation needs an
answer from the other side, so a flood of new flows can only push out other
unconfirmed flows, and MAX_FLOWS_PER_SOURCE keeps one mesh source from
holding more than a quarter of the table with flows it opened.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Final

from gossipmesh.policy.counters import FilterCounters
from gossipmesh.policy.packet import (
    ECHO_REPLY,
    ECHO_REQUEST,
    TCP,
    UDP,
    Kind,
    PacketInfo,
    reverse_transport_key,
    transport_key,
)
from gossipmesh.policy.peer import PeerIdentity

MAX_FLOWS: Final = 65_536
MAX_FLOWS_PER_SOURCE: Final = 16_384
"""Flows that one mesh source (a certified name, or an address without one) may open here."""
EXPIRY_BUDGET: Final = 256
"""Heap entries `expire` looks at per call, so no single packet pays for a mass expiry."""

TCP_SYN_TIMEOUT: Final = 120.0
"""Seconds a TCP handshake may take (SYN sent, SYN-ACK seen, or picked up mid-stream)."""
TCP_ESTABLISHED_TIMEOUT: Final = 7200.0
TCP_CLOSING_TIMEOUT: Final = 60.0
"""After a FIN: the other side's FIN and the last ACKs, or a half-closed stream that keeps going."""
TCP_CLOSED_TIMEOUT: Final = 10.0
"""After a RST: its retransmissions and stragglers pass, then the flow is gone."""
UDP_TIMEOUT: Final = 60.0
UDP_REPLIED_TIMEOUT: Final = 180.0
ECHO_TIMEOUT: Final = 30.0
OTHER_TIMEOUT: Final = 60.0
"""Other IP protocols (GRE, SCTP, ESP...), tracked by addresses alone, as UDP is."""
OTHER_REPLIED_TIMEOUT: Final = 180.0

FRAGMENT_TIMEOUT: Final = 30.0
"""How long later fragments of an admitted first fragment pass (Linux's ipfrag_time)."""
MAX_FRAGMENTED: Final = 4096
"""Fragmented datagrams remembered at once; the oldest is forgotten first."""

UNKNOWN: Final = object()
"""`Flow.remote` before any packet of the flow came from the mesh."""
TABLE_FULL: Final = "table_full"
SOURCE_LIMIT: Final = "source_limit"


class State:
    """A flow's state (plain ints, like packet.Kind, for speed)."""

    SYN_SENT: Final = 1
    SYN_RECEIVED: Final = 2
    PICKED_UP: Final = 3
    """TCP first seen mid-stream (no SYN): established once the other side answers."""
    ESTABLISHED: Final = 4
    CLOSING: Final = 5
    CLOSED: Final = 6
    UNREPLIED: Final = 7
    REPLIED: Final = 8


class FlowClass:
    TCP: Final = 1
    UDP: Final = 2
    ECHO: Final = 3
    OTHER: Final = 4


TIMEOUTS: Final[dict[tuple[int, int], float]] = {
    (FlowClass.TCP, State.SYN_SENT): TCP_SYN_TIMEOUT,
    (FlowClass.TCP, State.SYN_RECEIVED): TCP_SYN_TIMEOUT,
    (FlowClass.TCP, State.PICKED_UP): TCP_SYN_TIMEOUT,
    (FlowClass.TCP, State.ESTABLISHED): TCP_ESTABLISHED_TIMEOUT,
    (FlowClass.TCP, State.CLOSING): TCP_CLOSING_TIMEOUT,
    (FlowClass.TCP, State.CLOSED): TCP_CLOSED_TIMEOUT,
    (FlowClass.UDP, State.UNREPLIED): UDP_TIMEOUT,
    (FlowClass.UDP, State.REPLIED): UDP_REPLIED_TIMEOUT,
    (FlowClass.ECHO, State.UNREPLIED): ECHO_TIMEOUT,
    (FlowClass.ECHO, State.REPLIED): ECHO_TIMEOUT,
    (FlowClass.OTHER, State.UNREPLIED): OTHER_TIMEOUT,
    (FlowClass.OTHER, State.REPLIED): OTHER_REPLIED_TIMEOUT,
}
CONFIRMED: Final = frozenset({State.ESTABLISHED, State.REPLIED})
"""States a flow reaches only with an answer from the other side: never evicted."""
FAST_BOTH_WAYS: Final = frozenset({State.ESTABLISHED, State.CLOSING, State.REPLIED})


class Flow:
    """One tracked flow; `opened_inbound`: the first packet came from the mesh."""

    __slots__ = (
        "entry",
        "fast_in",
        "fast_out",
        "flow_class",
        "identity",
        "in_map",
        "key_in",
        "key_out",
        "opened_inbound",
        "out_map",
        "queued",
        "quota_key",
        "remote",
        "seen",
        "state",
        "timeout",
    )

    def __init__(
        self,
        flow_class: int,
        opened_inbound: bool,
        identity: PeerIdentity | None,
        now: float,
    ) -> None:
        self.flow_class = flow_class
        self.opened_inbound = opened_inbound
        self.identity = identity
        """Who opened it from the mesh: a new policy version re-decides with it."""
        self.seen = now
        self.timeout = 0.0
        self.state = State.UNREPLIED
        self.fast_in = self.fast_out = False
        self.entry = -1
        """The sequence number of this flow's live heap entry; -1 once removed."""
        self.queued = False
        """Unconfirmed, and so in the eviction queue (entries are dropped lazily)."""
        self.quota_key: object = None
        self.remote: object = UNKNOWN
        """The name of the mesh peer its packets from the mesh come through (None: a
        peer with no certificate), once one has been seen; ICMP errors about the
        flow must come through the same peer."""
        self.key_in = self.key_out = b""
        self.in_map: dict[bytes, Flow] = {}
        self.out_map: dict[bytes, Flow] = {}

    def alive(self, now: float) -> bool:
        return now < self.seen + self.timeout

    def opening(self) -> tuple[bytes, bytes, int, int]:
        """(source, destination, protocol, port) of its packets from the mesh, from `key_in`.

        Not stored apart: a flow is kept small (the table may hold 65,536),
        and only a new policy version needs these, to re-decide it.
        """
        key = self.key_in
        if self.flow_class == FlowClass.TCP or self.flow_class == FlowClass.UDP:
            size = (len(key) - 4) // 2
            protocol = TCP if self.flow_class == FlowClass.TCP else UDP
            port = int.from_bytes(key[-2:], "big")
            return key[:size], key[size : 2 * size], protocol, port
        if self.flow_class == FlowClass.ECHO:
            size = (len(key) - 4) // 2
            return key[2 : 2 + size], key[2 + size : 2 + 2 * size], key[0], 0
        size = (len(key) - 1) // 2
        return key[1 : 1 + size], key[1 + size :], key[0], 0


FlowMap = dict[bytes, Flow]


class FlowTable:
    """The flows, their two keys, their deadlines and the eviction order."""

    def __init__(
        self,
        counters: FilterCounters,
        max_flows: int = MAX_FLOWS,
        max_flows_per_source: int = MAX_FLOWS_PER_SOURCE,
    ) -> None:
        self.counters = counters
        self.max_flows = max_flows
        self.max_flows_per_source = max_flows_per_source
        self.tcp_in: FlowMap = {}
        self.tcp_out: FlowMap = {}
        self.udp_in: FlowMap = {}
        self.udp_out: FlowMap = {}
        self.misc_in: FlowMap = {}
        """ICMP echo and other protocols: the key starts with the protocol number."""
        self.misc_out: FlowMap = {}
        self.count = 0
        self.next_due = float("inf")
        self._heap: list[tuple[float, int, Flow]] = []
        self._sequence = itertools.count()
        self._unconfirmed: deque[Flow] = deque()
        """Oldest first; a flow confirmed or removed since stays until popped (`queued`)."""
        self._per_source: dict[object, int] = {}

    def __len__(self) -> int:
        return self.count

    def flows(self) -> Iterator[Flow]:
        for flow_map in (self.tcp_in, self.udp_in, self.misc_in):
            yield from list(flow_map.values())

    def keys(self, info: PacketInfo, inbound: bool) -> tuple[FlowMap, FlowMap, bytes, bytes]:
        """(in_map, out_map, key_in, key_out) for the flow `info` belongs to."""
        if info.kind == Kind.TRANSPORT:
            own, reverse = transport_key(info), reverse_transport_key(info)
            if info.protocol == TCP:
                maps = (self.tcp_in, self.tcp_out)
            else:
                assert info.protocol == UDP
                maps = (self.udp_in, self.udp_out)
        elif info.kind == Kind.ECHO:
            protocol = info.protocol
            request = info.icmp_type == ECHO_REQUEST[protocol]
            answer = ECHO_REPLY[protocol] if request else ECHO_REQUEST[protocol]
            own = bytes((protocol, info.icmp_type)) + info.source + info.destination + info.ports
            reverse = bytes((protocol, answer)) + info.destination + info.source + info.ports
            maps = (self.misc_in, self.misc_out)
        else:
            prefix = bytes((info.protocol,))
            own, reverse = (
                prefix + info.source + info.destination,
                (prefix + info.destination + info.source),
            )
            maps = (self.misc_in, self.misc_out)
        if inbound:
            return maps[0], maps[1], own, reverse
        return maps[0], maps[1], reverse, own

    def create(
        self,
        keys: tuple[FlowMap, FlowMap, bytes, bytes],
        flow_class: int,
        state: int,
        info: PacketInfo,
        inbound: bool,
        identity: PeerIdentity | None,
        now: float,
    ) -> Flow | str:
        """A new flow in `state`, or TABLE_FULL / SOURCE_LIMIT when there is no room for it."""
        quota_key: object = None
        if inbound:
            quota_key = identity.name if identity is not None else info.source
            if self._per_source.get(quota_key, 0) >= self.max_flows_per_source:
                return SOURCE_LIMIT
        if self.count >= self.max_flows and not self._make_room(now):
            return TABLE_FULL
        flow = Flow(flow_class, inbound, identity, now)
        flow.in_map, flow.out_map, flow.key_in, flow.key_out = keys
        flow.in_map[flow.key_in] = flow
        flow.out_map[flow.key_out] = flow
        self.count += 1
        if quota_key is not None:
            flow.quota_key = quota_key
            self._per_source[quota_key] = self._per_source.get(quota_key, 0) + 1
        self.set_state(flow, state)
        return flow

    def set_state(self, flow: Flow, state: int) -> None:
        timeout = TIMEOUTS[flow.flow_class, state]
        shorter = timeout < flow.timeout or flow.entry < 0
        flow.state = state
        flow.timeout = timeout
        if state in FAST_BOTH_WAYS:
            flow.fast_in = flow.fast_out = True
        elif state == State.UNREPLIED:
            flow.fast_in, flow.fast_out = flow.opened_inbound, not flow.opened_inbound
        else:
            flow.fast_in = flow.fast_out = False
        if state in CONFIRMED:
            flow.queued = False
        elif not flow.queued:
            flow.queued = True
            self._unconfirmed.append(flow)
        if shorter:
            self._push(flow, flow.seen + timeout)

    def remove(self, flow: Flow) -> None:
        if flow.entry < 0:
            return
        flow.entry = -1
        if flow.in_map.get(flow.key_in) is flow:
            del flow.in_map[flow.key_in]
        if flow.out_map.get(flow.key_out) is flow:
            del flow.out_map[flow.key_out]
        flow.queued = False
        if flow.quota_key is not None:
            left = self._per_source[flow.quota_key] - 1
            if left:
                self._per_source[flow.quota_key] = left
            else:
                del self._per_source[flow.quota_key]
        self.count -= 1

    def expire(self, now: float, budget: int = EXPIRY_BUDGET) -> int:
        """Remove flows whose time is up, looking at `budget` heap entries at most."""
        heap = self._heap
        removed = 0
        while heap and heap[0][0] <= now and budget > 0:
            budget -= 1
            _, entry, flow = heapq.heappop(heap)
            if entry != flow.entry:
                continue  # removed, or superseded by an earlier deadline
            deadline = flow.seen + flow.timeout
            if deadline > now:
                self._push(flow, deadline)
            else:
                self.remove(flow)
                removed += 1
        self.next_due = heap[0][0] if heap else float("inf")
        if len(heap) > 2 * self.count + 1024:
            self._rebuild()
        if len(self._unconfirmed) > 2 * self.count + 1024:
            self._unconfirmed = deque(
                dict.fromkeys(flow for flow in self._unconfirmed if flow.queued)
            )
        self.counters.expired += removed
        return removed

    def _push(self, flow: Flow, deadline: float) -> None:
        entry = next(self._sequence)
        flow.entry = entry
        heapq.heappush(self._heap, (deadline, entry, flow))
        if deadline < self.next_due:
            self.next_due = deadline

    def _rebuild(self) -> None:
        """Drop the stale entries (removed flows, superseded deadlines) in one pass."""
        self._heap = [(flow.seen + flow.timeout, flow.entry, flow) for flow in self.flows()]
        heapq.heapify(self._heap)
        self.next_due = self._heap[0][0] if self._heap else float("inf")

    def _make_room(self, now: float) -> bool:
        self.expire(now)
        if self.count < self.max_flows:
            return True
        queue = self._unconfirmed
        while queue:
            oldest = queue.popleft()
            if oldest.queued:
                self.remove(oldest)
                self.counters.evicted += 1
                return True
        return False


class FragmentTable:
    """Datagrams whose first fragment was admitted: their later fragments may pass.

    Later fragments carry no ports, so they cannot be matched to a flow by
    themselves; they pass only within FRAGMENT_TIMEOUT of an admitted first
    fragment of the same datagram (addresses, protocol and identification).
    One that arrives before its first fragment is dropped, so a flood of
    stray fragments costs one dict look-up each and holds no memory.
    """

    def __init__(self, limit: int = MAX_FRAGMENTED, lifetime: float = FRAGMENT_TIMEOUT) -> None:
        self.limit = limit
        self.lifetime = lifetime
        self._deadlines: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._deadlines)

    def admit(self, key: bytes, now: float) -> None:
        deadlines = self._deadlines
        deadlines[key] = now + self.lifetime
        deadlines.move_to_end(key)
        while deadlines:
            oldest, deadline = next(iter(deadlines.items()))
            if deadline > now and len(deadlines) <= self.limit:
                break
            del deadlines[oldest]

    def passes(self, key: bytes, now: float) -> bool:
        deadline = self._deadlines.get(key)
        if deadline is None:
            return False
        if deadline <= now:
            del self._deadlines[key]
            return False
        return True
