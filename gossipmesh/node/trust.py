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

from gossipmesh.directory import Directory
from gossipmesh.node.documents import DocumentSync
from gossipmesh.node.events import DocumentAccepted, SaveDocument
from gossipmesh.node.links import NodeLinks
from gossipmesh.node.options import NodeCounters
from gossipmesh.node.outbox import Outbox
from gossipmesh.node.paths import PathSelector
from gossipmesh.node.trust_gate import TrustGate
from gossipmesh.routing.core import RoutingCore
from gossipmesh.session.manager import SessionManager
from gossipmesh.trust.document import DocumentKind, SignedDocument


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
    ) -> None:
        self.gate = gate
        self._directory = directory
        self._sessions = sessions
        self._routing = routing
        self._paths = paths
        self._links = links
        self._outbox = outbox
        self._counters = counters
        self._directory_changed = directory_changed
        self.documents = DocumentSync(gate.authority_public_key, send_control, routing.neighbours)
        self.documents.on_accepted = self._accepted
        self._wall_offset = wall_offset

    def offer(self, data: bytes, now: float) -> SignedDocument:
        """A document from this host; DocumentError (with the reason) when refused."""
        return self.documents.offer(data, now)

    def round(self, now: float) -> None:
        """Every directory round: document anti-entropy, and expired certificates out."""
        self.documents.round(now)
        wall = now + self._wall_offset
        self.exclude(self.gate.expired(wall), wall)

    def _accepted(self, document: SignedDocument, source: bytes | None, now: float) -> None:
        self._outbox.request(SaveDocument(int(document.kind), document.encode()))
        self._outbox.event(DocumentAccepted(int(document.kind), document.version))
        if document.kind == DocumentKind.REVOCATIONS:
            self.exclude(self.gate.use_revocations(document), now + self._wall_offset)

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
