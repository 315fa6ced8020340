"""The authority's side of a node: documents in force, and nodes taken out of the mesh.

`NodeTrust` joins the trust gate (who is admitted), the document gossip
(the policy and the revocation list) and the policy filter in the data
path. When a newer revocation list arrives, or a certificate expires, the
nodes it names are excluded here: their records leave the directory (and
are refused if they come back), their sessions are torn down and their
routing links withdrawn at once.
"""

from __future__ import annotations

from collections.abc import Callable

from gossipmesh.directory import Directory, DirectoryChanges
from gossipmesh.node.documents import DocumentSync
from gossipmesh.node.events import DocumentAccepted, SaveDocument
from gossipmesh.node.links import NodeLinks
from gossipmesh.node.options import NodeCounters
from gossipmesh.node.outbox import Outbox
from gossipmesh.node.paths import PathSelector
from gossipmesh.node.policy_gate import PolicyGate
from gossipmesh.node.trust_gate import TrustGate
from gossipmesh.policy.model import Policy
from gossipmesh.policy.selectors import Network
from gossipmesh.policy.signed import parse_policy_document
from gossipmesh.routing.core import RoutingCore
from gossipmesh.session.manager import SessionManager
from gossipmesh.trust.document import DocumentKind, SignedDocument
from gossipmesh.trust.revocation import RevocationList, decode_revocations


class NodeTrust:
    """Admission, the authority's documents and exclusion, for one node core."""

    def __init__(
        self,
        gate: TrustGate,
        directory: Directory,
        sessions: SessionManager,
        routing: RoutingCore,
        paths: PathSelector,
        links: NodeLinks,
        outbox: Outbox,
        counters: NodeCounters,
        send_control: Callable[[bytes, bytes], None],
        directory_changed: Callable[[], None],
        wall_offset: float,
        own_id: bytes,
        served: tuple[Network, ...],
    ) -> None:
        self.gate = gate
        self._directory = directory
        directory.approve_prefix = gate.approves_route  # routed subnets need the grant
        self._sessions = sessions
        self._routing = routing
        self._paths = paths
        self._links = links
        self._outbox = outbox
        self._counters = counters
        self._directory_changed = directory_changed
        self.documents = DocumentSync(gate.authority_public_key, send_control, routing.neighbours)
        self.documents.on_accepted = self._accepted
        self.documents.check = self._check
        self._wall_offset = wall_offset
        self._parsed: Policy | RevocationList | None = None
        self.policy: PolicyGate | None = None
        """The policy filter; None in a network without an authority (nothing filtered)."""
        if gate.authority_public_key is not None:
            self.policy = PolicyGate(gate, directory, own_id, served)

    def offer(self, data: bytes, now: float) -> SignedDocument:
        """A document from this host; DocumentError (with the reason) when refused."""
        return self.documents.offer(data, now)

    def round(self, now: float) -> None:
        """Every directory round: document anti-entropy, and expired certificates out."""
        self.documents.round(now)
        if self.policy is not None:
            self.policy.filter.expire(now)
        wall = now + self._wall_offset
        self.exclude(self.gate.expired(wall), wall)

    def _check(self, document: SignedDocument) -> None:
        """A verified, newer document must also parse, or it is refused (malformed).

        The parsed content is kept for `_accepted`, which follows at once: the
        payload is parsed once, and its signature was checked once, by the sync.
        """
        if document.kind == DocumentKind.POLICY:
            self._parsed = parse_policy_document(document)
        elif document.kind == DocumentKind.REVOCATIONS:
            self._parsed = decode_revocations(document.payload)

    def _accepted(self, document: SignedDocument, source: bytes | None, now: float) -> None:
        parsed, self._parsed = self._parsed, None
        self._outbox.request(SaveDocument(int(document.kind), document.encode()))
        self._outbox.event(DocumentAccepted(int(document.kind), document.version))
        if isinstance(parsed, RevocationList):
            self.exclude(self.gate.use_revocations(parsed), now + self._wall_offset)
        elif isinstance(parsed, Policy) and self.policy is not None:
            self.policy.use_policy(parsed, now)

    def directory_changed(self, changes: DirectoryChanges, now: float) -> None:
        if self.policy is not None:
            self.policy.directory_changed(changes, now)

    def exclude(self, node_ids: list[bytes], wall: float) -> None:
        """Revoked or expired nodes: no session, route, name or address here any more."""
        if not node_ids:
            return
        for node_id in node_ids:
            entry = self._directory.get(node_id)
            self._routing.neighbour_down(node_id, wall, pruned=True)
            self._paths.forget(node_id)
            if entry is not None:
                self._sessions.remove_peer(entry.x25519_public_key)
                self._links.forget(entry.x25519_public_key)
            self._directory.remove(node_id)
            self._counters.nodes_excluded += 1
        self._directory_changed()
