"""The signed policy in the data path: `PacketFilter` fed with who each peer is.

The forwarder knows the node id a packet came from (its session); the
filter wants the sender's certified name and groups and the addresses it
holds itself. `PolicyGate` keeps that map in step with the directory and
the trust gate, and installs each newer policy document the moment it is
in force (flows the new version no longer allows are cut).

Only networks with an authority have one: there, with no policy yet, every
new flow into this node is denied (default deny); replies to flows opened
from here always pass.
"""

from __future__ import annotations

from gossipmesh.directory import Directory, DirectoryChanges
from gossipmesh.node.trust_gate import TrustGate
from gossipmesh.policy.filter import PacketFilter
from gossipmesh.policy.model import Policy
from gossipmesh.policy.peer import PeerIdentity
from gossipmesh.policy.selectors import Network


class PolicyGate:
    """`InboundFilter` for the forwarder: the policy filter plus peer identities."""

    def __init__(
        self, gate: TrustGate, directory: Directory, own_id: bytes, served: tuple[Network, ...]
    ) -> None:
        self._gate = gate
        self._directory = directory
        self._own_id = own_id
        self._served = served
        self._identities: dict[bytes, PeerIdentity] = {}
        self.filter = PacketFilter(self._local())

    def _identity(self, node_id: bytes) -> PeerIdentity | None:
        """A peer's certified name and groups with its own addresses (None: not admitted)."""
        entry = self._directory.get(node_id)
        certificate = self._gate.certificates.get(node_id)
        if entry is None or certificate is None:
            return None
        addresses = {entry.ipv6.packed}
        if entry.ipv4 is not None:
            addresses.add(entry.ipv4.packed)
        return PeerIdentity(certificate.name, frozenset(certificate.groups), frozenset(addresses))

    def _local(self) -> PeerIdentity:
        own = self._directory.get(self._own_id)
        certificate = self._gate.own_certificate
        addresses: set[bytes] = set()
        if own is not None:
            addresses.add(own.ipv6.packed)
            if own.ipv4 is not None:
                addresses.add(own.ipv4.packed)
        name = certificate.name if certificate is not None else ""
        groups = frozenset(certificate.groups) if certificate is not None else frozenset()
        return PeerIdentity(name, groups, frozenset(addresses))

    def directory_changed(self, changes: DirectoryChanges, now: float) -> None:
        """Peers came, went or moved: update who is who (and our own addresses); O(changes)."""
        identities = self._identities
        for node_id in changes.removed:
            identities.pop(node_id, None)
        for entry in changes.updated:
            identity = self._identity(entry.node_id)
            if identity is None:
                identities.pop(entry.node_id, None)
            else:
                identities[entry.node_id] = identity
        local = self._local()
        if local != self.filter.local:
            self.filter.local = local
            self.filter.set_policy(self.filter.policy, now, self._served)

    @property
    def version(self) -> int | None:
        """The version of the policy in force here (None: none yet, everything new denied)."""
        policy = self.filter.policy
        return None if policy is None else policy.version

    def use_policy(self, policy: Policy, now: float) -> None:
        """A newer verified policy is in force: compile it for this node."""
        self.filter.set_policy(policy, now, self._served)

    # --- InboundFilter ------------------------------------------------------------------

    def allow_inbound(self, packet: bytes | memoryview, source: bytes, now: float) -> bool:
        if type(packet) is memoryview:
            packet = packet.tobytes()  # a stream-link frame: headers read, dict keys sliced
        return self.filter.allow_inbound(packet, self._identities.get(source), now)

    def note_outbound(self, packet: bytes | memoryview, now: float) -> None:
        if type(packet) is memoryview:
            packet = packet.tobytes()
        self.filter.note_outbound(packet, now)
