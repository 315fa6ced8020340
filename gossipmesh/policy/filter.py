"""`PacketFilter`: the stateful, default-deny filter on packets arriving from the mesh.

Sans-IO like the cores around it: packets and `now` come in through calls,
a bool (or the packets that pass) goes out. Outbound packets (this node's
and its leaves', into the mesh) are only noted, so that their replies pass.

The fast path is the point of the design. A packet of an established TCP
flow or a replied UDP flow (IPv4 without options, IPv6 without extension
headers, not a fragment, no SYN, FIN or RST) costs a few byte compares, one
slice of its own bytes as the key, one dict look-up and one store of `now`:
no parsing, no rule, no allocation beyond the key. It is written out four
times on purpose (one packet or a batch, inbound or outbound): a shared
helper would cost a Python call per packet, a quarter of the fast path.
Everything else (new flows, handshakes, closes, ICMP, fragments, IPv4
options, IPv6 extension headers, a table with flows due to expire) goes to
the `Tracker` (gossipmesh.policy.tracker).

New inbound flows need a rule; with no policy at all (a network with an
authority that has not published one yet) every new inbound flow is
denied (`no_policy`). Replies to flows opened from here always pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from gossipmesh.policy.conntrack import MAX_FLOWS, MAX_FLOWS_PER_SOURCE, Flow, FlowTable
from gossipmesh.policy.counters import FilterCounters
from gossipmesh.policy.evaluate import CompiledPolicy
from gossipmesh.policy.model import Policy
from gossipmesh.policy.peer import PeerIdentity
from gossipmesh.policy.selectors import Network
from gossipmesh.policy.tracker import Tracker


class PacketFilter:
    """Connection tracking plus the compiled policy for one node.

    `local` is this node: its name, groups and own overlay addresses.
    `served` (optional) lists the other prefixes it delivers to (leaves,
    routed subnets); see `CompiledPolicy`. The limits are parameters for
    tests; the defaults are the documented bounds.
    """

    def __init__(
        self,
        local: PeerIdentity,
        policy: Policy | None = None,
        *,
        served: Sequence[Network] | None = None,
        max_flows: int = MAX_FLOWS,
        max_flows_per_source: int = MAX_FLOWS_PER_SOURCE,
    ) -> None:
        self.local = local
        self.counters = FilterCounters()
        self.table = FlowTable(self.counters, max_flows, max_flows_per_source)
        compiled = CompiledPolicy(policy, local, served) if policy is not None else None
        self.tracker = Tracker(self.table, self.counters, compiled)
        self._tcp_in = self.table.tcp_in
        self._udp_in = self.table.udp_in
        self._tcp_out = self.table.tcp_out
        self._udp_out = self.table.udp_out

    @property
    def policy(self) -> Policy | None:
        compiled = self.tracker.compiled
        return compiled.policy if compiled is not None else None

    def set_policy(
        self, policy: Policy | None, now: float, served: Sequence[Network] | None = None
    ) -> int:
        """Install a new policy version; flows opened from the mesh that it denies are dropped.

        Returns how many were dropped (also counted as `revoked`). Flows
        opened from here stay: their replies never needed a rule.
        """
        tracker = self.tracker
        tracker.compiled = (
            CompiledPolicy(policy, self.local, served) if policy is not None else None
        )
        dropped = 0
        for flow in self.table.flows():
            if flow.opened_inbound and not tracker.still_allowed(flow):
                self.table.remove(flow)
                dropped += 1
        self.counters.revoked += dropped
        return dropped

    def expire(self, now: float) -> int:
        """Forget flows whose time is up (a bounded amount per call); a timer may call it."""
        return self.table.expire(now)

    def flows(self) -> list[Flow]:
        return list(self.table.flows())

    def __len__(self) -> int:
        return len(self.table)

    # --- from the mesh ----------------------------------------------------------------

    def allow_inbound(self, packet: bytes, source: PeerIdentity | None, now: float) -> bool:
        """Whether a packet from the mesh, sent by `source` (None: no certificate), may pass.

        `source` is the authenticated peer the packet came from, its source
        address already checked against what that peer may send from.
        """
        if now < self.table.next_due:
            try:
                first = packet[0]
                if first == 0x45:
                    if not (packet[6] & 0x3F or packet[7]):
                        protocol = packet[9]
                        if protocol == 6:
                            if not packet[33] & 7:
                                flow = self._tcp_in.get(packet[12:24])
                                if flow is not None and flow.fast_in:
                                    flow.seen = now
                                    return True
                        elif protocol == 17:
                            flow = self._udp_in.get(packet[12:24])
                            if flow is not None and flow.fast_in:
                                flow.seen = now
                                return True
                elif first >> 4 == 6:
                    protocol = packet[6]
                    if protocol == 6:
                        if not packet[53] & 7:
                            flow = self._tcp_in.get(packet[8:44])
                            if flow is not None and flow.fast_in:
                                flow.seen = now
                                return True
                    elif protocol == 17:
                        flow = self._udp_in.get(packet[8:44])
                        if flow is not None and flow.fast_in:
                            flow.seen = now
                            return True
            except IndexError:
                pass  # too short for the fast path's offsets: the tracker counts it
        return self.tracker.inbound(packet, source, now)

    def filter_inbound(
        self, packets: list[bytes], source: PeerIdentity | None, now: float
    ) -> list[bytes]:
        """The packets of one batch from one sender that may pass, in order.

        Within one call `now` does not move, so flows alive at its start
        stay alive to its end: one deadline check covers the batch.
        """
        tracker = self.tracker
        if now >= self.table.next_due:
            return [packet for packet in packets if tracker.inbound(packet, source, now)]
        tcp_in, udp_in = self._tcp_in, self._udp_in
        kept = []
        for packet in packets:
            flow = None
            try:
                first = packet[0]
                if first == 0x45:
                    if not (packet[6] & 0x3F or packet[7]):
                        protocol = packet[9]
                        if protocol == 6:
                            if not packet[33] & 7:
                                flow = tcp_in.get(packet[12:24])
                        elif protocol == 17:
                            flow = udp_in.get(packet[12:24])
                elif first >> 4 == 6:
                    protocol = packet[6]
                    if protocol == 6:
                        if not packet[53] & 7:
                            flow = tcp_in.get(packet[8:44])
                    elif protocol == 17:
                        flow = udp_in.get(packet[8:44])
            except IndexError:
                pass
            if flow is not None and flow.fast_in:
                flow.seen = now
                kept.append(packet)
            elif tracker.inbound(packet, source, now):
                kept.append(packet)
        return kept

    # --- into the mesh ----------------------------------------------------------------

    def note_outbound(self, packet: bytes, now: float) -> None:
        """A packet this node (or a leaf) sends into the mesh: its flow's replies may pass."""
        if now < self.table.next_due:
            try:
                first = packet[0]
                if first == 0x45:
                    if not (packet[6] & 0x3F or packet[7]):
                        protocol = packet[9]
                        if protocol == 6:
                            if not packet[33] & 7:
                                flow = self._tcp_out.get(packet[12:24])
                                if flow is not None and flow.fast_out:
                                    flow.seen = now
                                    return
                        elif protocol == 17:
                            flow = self._udp_out.get(packet[12:24])
                            if flow is not None and flow.fast_out:
                                flow.seen = now
                                return
                elif first >> 4 == 6:
                    protocol = packet[6]
                    if protocol == 6:
                        if not packet[53] & 7:
                            flow = self._tcp_out.get(packet[8:44])
                            if flow is not None and flow.fast_out:
                                flow.seen = now
                                return
                    elif protocol == 17:
                        flow = self._udp_out.get(packet[8:44])
                        if flow is not None and flow.fast_out:
                            flow.seen = now
                            return
            except IndexError:
                return  # not a packet a reply could belong to
        self.tracker.outbound(packet, now)

    def note_outbound_many(self, packets: list[bytes], now: float) -> None:
        """`note_outbound` for a batch (the segments of one super-packet, say)."""
        tracker = self.tracker
        if now >= self.table.next_due:
            for packet in packets:
                tracker.outbound(packet, now)
            return
        tcp_out, udp_out = self._tcp_out, self._udp_out
        for packet in packets:
            flow = None
            try:
                first = packet[0]
                if first == 0x45:
                    if not (packet[6] & 0x3F or packet[7]):
                        protocol = packet[9]
                        if protocol == 6:
                            if not packet[33] & 7:
                                flow = tcp_out.get(packet[12:24])
                        elif protocol == 17:
                            flow = udp_out.get(packet[12:24])
                elif first >> 4 == 6:
                    protocol = packet[6]
                    if protocol == 6:
                        if not packet[53] & 7:
                            flow = tcp_out.get(packet[8:44])
                    elif protocol == 17:
                        flow = udp_out.get(packet[8:44])
            except IndexError:
                continue
            if flow is not None and flow.fast_out:
                flow.seen = now
            else:
                tracker.outbound(packet, now)
