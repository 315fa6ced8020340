"""The filter's slow path: every packet the fast path does not settle with one look-up.

It parses the packet (gossipmesh.policy.packet), follows or opens its flow
in the table (gossipmesh.policy.conntrack, states), asks the compiled
policy about new flows from the mesh, admits later fragments of admitted
first fragments, and lets ICMP errors in only about flows sent from here.
Every drop is counted by its reason.
"""

from __future__ import annotations

from gossipmesh.policy.conntrack import SOURCE_LIMIT, UNKNOWN, Flow, FlowTable, FragmentTable
from gossipmesh.policy.counters import FilterCounters
from gossipmesh.policy.evaluate import CompiledPolicy
from gossipmesh.policy.packet import Kind, PacketInfo, parse_packet
from gossipmesh.policy.peer import PeerIdentity
from gossipmesh.policy.states import advance, initial_state

_TRACKED = frozenset({Kind.TRANSPORT, Kind.ECHO, Kind.OTHER})


class Tracker:
    """The table, the fragments and the policy, for packets that need a closer look."""

    def __init__(
        self,
        table: FlowTable,
        counters: FilterCounters,
        compiled: CompiledPolicy | None,
    ) -> None:
        self.table = table
        self.counters = counters
        self.compiled = compiled
        self.fragments = FragmentTable()

    def inbound(self, packet: bytes, source: PeerIdentity | None, now: float) -> bool:
        counters = self.counters
        if now >= self.table.next_due:
            self.table.expire(now)
        info = parse_packet(packet)
        if info is None:
            counters.malformed += 1
            return False
        kind = info.kind
        if kind == Kind.FRAGMENT:
            assert info.fragment is not None
            if self.fragments.passes(info.fragment, now):
                return True
            counters.fragment += 1
            return False
        if kind == Kind.ICMP_ERROR:
            return self._related(info, source, now)
        if kind == Kind.ICMP_REFUSED:
            counters.icmp_refused += 1
            return False
        if kind == Kind.ICMP_OTHER:
            return self._decide(info, source)  # informational ICMP: a rule, but no state
        allowed = self._track(info, source, now, True)
        if allowed and info.fragment is not None:
            self.fragments.admit(info.fragment, now)
        return allowed

    def outbound(self, packet: bytes, now: float) -> None:
        if now >= self.table.next_due:
            self.table.expire(now)
        info = parse_packet(packet)
        if info is not None and info.kind in _TRACKED:
            self._track(info, None, now, False)

    def still_allowed(self, flow: Flow) -> bool:
        """Whether the current policy would open this flow from the mesh now."""
        compiled = self.compiled
        if compiled is None:
            return False
        source, destination, protocol, port = flow.opening()
        return compiled.allows(flow.identity, source, destination, protocol, port)

    def _track(
        self, info: PacketInfo, source: PeerIdentity | None, now: float, inbound: bool
    ) -> bool:
        """A packet that belongs to a flow: follow the flow, or open one (policy permitting)."""
        table = self.table
        keys = table.keys(info, inbound)
        flow = (keys[0] if inbound else keys[1]).get(keys[2] if inbound else keys[3])
        if flow is not None:
            if flow.alive(now) and advance(table, flow, info, flow.opened_inbound == inbound):
                flow.seen = now
                if inbound and flow.remote is UNKNOWN:
                    flow.remote = source.name if source is not None else None
                return True
            if not flow.alive(now):
                self.counters.expired += 1
            table.remove(flow)
        if inbound and not self._decide(info, source):
            return False
        opens = initial_state(info)
        if opens is None:
            return True
        created = table.create(keys, *opens, info, inbound, source, now)
        if isinstance(created, Flow):
            if inbound:
                created.remote = source.name if source is not None else None
                self.counters.new_inbound += 1
            else:
                self.counters.new_outbound += 1
            return True
        if created == SOURCE_LIMIT:
            self.counters.source_limit += 1
        else:
            self.counters.table_full += 1
        return False

    def _decide(self, info: PacketInfo, source: PeerIdentity | None) -> bool:
        """The policy's answer for a new flow from the mesh, counted when it is no."""
        compiled = self.compiled
        if compiled is None:
            self.counters.no_policy += 1
            return False
        if compiled.allows(source, info.source, info.destination, info.protocol, info.port):
            return True
        self.counters.no_rule += 1
        return False

    def _related(self, info: PacketInfo, source: PeerIdentity | None, now: float) -> bool:
        """An ICMP error passes only about a packet sent from here, and only to its sender.

        Once a flow has had packets from the mesh, errors about it must come
        through the same peer: another member cannot cut our flows with a
        third one, nor shrink their path MTU, by guessing their ports.
        """
        quoted = info.quoted
        assert quoted is not None
        if quoted.source == info.destination:
            _, out_map, _, key_out = self.table.keys(quoted, False)
            flow = out_map.get(key_out)
            if flow is not None and flow.alive(now):
                sender = source.name if source is not None else None
                if flow.remote is UNKNOWN or flow.remote == sender:
                    self.counters.related += 1
                    return True
        self.counters.icmp_unrelated += 1
        return False
