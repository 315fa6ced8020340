"""How a tracked flow's state moves with each packet (TCP's handshake and close; replies).

Sequence numbers and windows are not tracked: both ends of a mesh flow are
authenticated (the session key and the source-address check come first), so
a packet on a tracked flow can only come from one of its two ends, and each
end can already reset its own connections.
"""

from __future__ import annotations

from gossipmesh.policy.conntrack import Flow, FlowClass, FlowTable, State
from gossipmesh.policy.packet import (
    ECHO_REQUEST,
    TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Kind,
    PacketInfo,
)


def initial_state(info: PacketInfo) -> tuple[int, int] | None:
    """The class and state of a flow this packet opens; None: it passes but opens none.

    A TCP RST opens nothing (it ends something), nor does an echo reply or
    anything else with no flow to belong to.
    """
    if info.kind == Kind.TRANSPORT:
        if info.protocol != TCP:
            return (FlowClass.UDP, State.UNREPLIED)
        flags = info.flags
        if flags & TCP_RST:
            return None
        if flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
            return (FlowClass.TCP, State.SYN_SENT)
        return (FlowClass.TCP, State.PICKED_UP)
    if info.kind == Kind.ECHO:
        if info.icmp_type != ECHO_REQUEST[info.protocol]:
            return None
        return (FlowClass.ECHO, State.UNREPLIED)
    if info.kind == Kind.OTHER:
        return (FlowClass.OTHER, State.UNREPLIED)
    return None


def advance(table: FlowTable, flow: Flow, info: PacketInfo, from_opener: bool) -> bool:
    """Move `flow` on for a packet of it; False: the packet opens a new flow instead.

    That happens for a SYN on a flow that is closing or closed (the ports
    are being reused): the old flow must go and the new one is decided
    afresh, by the policy if it comes from the mesh.
    """
    state = flow.state
    if flow.flow_class != FlowClass.TCP:
        if state == State.UNREPLIED and not from_opener:
            table.set_state(flow, State.REPLIED)
        return True
    flags = info.flags
    if flags & TCP_RST:
        if state != State.CLOSED:
            table.set_state(flow, State.CLOSED)
        return True
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN and state in (State.CLOSING, State.CLOSED):
        return False
    new = state
    if state == State.SYN_SENT:
        if not from_opener and flags & TCP_SYN:
            new = State.SYN_RECEIVED  # the SYN-ACK, or a simultaneous open
    elif state == State.SYN_RECEIVED:
        if from_opener and flags & TCP_ACK and not flags & TCP_SYN:
            new = State.ESTABLISHED
    elif state == State.PICKED_UP and not from_opener:
        new = State.ESTABLISHED
    if flags & TCP_FIN and new != State.CLOSED:
        new = State.CLOSING
    if new != state:
        table.set_state(flow, new)
    return True
