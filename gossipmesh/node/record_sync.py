"""Records: this node's own, and fetching, verifying and handing over everyone else's.

Sources of records, cheapest first: broadcasts and handovers from
neighbours (NODE_RECORDS), answers to RECORD_REQUEST sent to every
neighbour, and DHT look-ups (a `FetchRecords` request the driver carries
out). Every record is verified (`records.validate`) before the directory
takes it; a newer record replaces an older one by sequence number.
"""

from __future__ import annotations

from collections.abc import Callable

from gossipmesh.directory import (
    ROUTED_PREFIXES_EXTENSION,
    Directory,
    DirectoryChanges,
    Prefix,
    encode_prefixes,
)
from gossipmesh.identity import Identity
from gossipmesh.node.address_map import AddressMap
from gossipmesh.node.events import (
    AddressChanged,
    FetchRecords,
    NameChanged,
    PublishRecords,
    RoutedPrefixesChanged,
    SaveAddressState,
)
from gossipmesh.node.messages import (
    MAX_IDS_PER_REQUEST,
    encode_digest,
    encode_record_request,
    encode_records,
)
from gossipmesh.node.options import NodeCounters, NodeOptions
from gossipmesh.node.outbox import Outbox
from gossipmesh.node.own_address import OwnAddress
from gossipmesh.records import (
    Endpoint,
    EndpointKind,
    NameRecord,
    NodeRecord,
    RecordError,
    decode_record,
    validate,
)
from gossipmesh.routing.core import RoutingCore
from gossipmesh.trust.certificate import CERTIFICATE_EXTENSION

NODE_RECORD_BROADCAST = b"\x01"
"""Prefix of a broadcast body that carries a signed node record."""
MAX_LOOKUPS_PER_ROUND = 16
URGENT_FETCH_INTERVAL = 1.0


class RecordSync:
    """The directory's supply of verified records, and this node's own publication."""

    def __init__(
        self,
        identity: Identity,
        options: NodeOptions,
        directory: Directory,
        own: OwnAddress,
        routing: RoutingCore,
        outbox: Outbox,
        counters: NodeCounters,
        send_control: Callable[[bytes, bytes], None],
        admit: Callable[[NodeRecord, float], bool] = lambda record, wall: True,
    ) -> None:
        self._identity = identity
        self._admit = admit
        """The trust gate (node/trust_gate.py): does this verified record's node belong here?"""
        self._options = options
        self._directory = directory
        self._own = own
        self._routing = routing
        self._outbox = outbox
        self._counters = counters
        self._send_control = send_control
        self.on_change: Callable[[], None] = lambda: None
        """Called after the directory changed (the core re-indexes)."""
        self.dht_contacts: set[bytes] = set()
        """Node ids the DHT's routing table holds, as last reported by the driver."""
        self._last_urgent_fetch = float("-inf")
        self._names: dict[bytes, str | None] = {}
        self._prefixes: tuple[Prefix, ...] = ()

    # --- this node's records -----------------------------------------------------------

    def own_template(self, wall: float) -> NodeRecord:
        """This node's claims as a record template (the DHT service signs publications)."""
        issued = int(wall)
        options = self._options
        endpoints = tuple(
            Endpoint(EndpointKind.HOST, host, port) for host, port in options.host_endpoints
        )
        prefixes = [prefix for leaf in options.leaves for prefix in leaf.addresses]
        prefixes += options.advertised_routes
        extensions: tuple[tuple[int, bytes], ...] = ()
        if prefixes:
            extensions += ((ROUTED_PREFIXES_EXTENSION, encode_prefixes(prefixes)),)
        if options.certificate:
            extensions += ((CERTIFICATE_EXTENSION, options.certificate),)
        name = options.name or ""
        return NodeRecord(
            public_key=self._identity.public_key,
            sequence=max(1, int(wall * 1000)),
            issued_at=issued,
            expires_at=issued + options.record_lifetime,
            ipv4_counter=self._own.counter,
            ipv4_held_since=self._own.held_since,
            name=name,
            name_claimed_since=self._own.name_claimed_since if name else 0,
            endpoints=endpoints,
            extensions=extensions,
        )

    def publish(self, wall: float) -> None:
        """Ask the driver to publish our records in the DHT."""
        template = self.own_template(wall)
        name_record = None
        if template.name:
            name_record = NameRecord(
                name=template.name,
                public_key=template.public_key,
                claimed_since=template.name_claimed_since,
                sequence=template.sequence,
                issued_at=template.issued_at,
                expires_at=template.expires_at,
            )
        self._outbox.request(PublishRecords(template, name_record))

    def published(self, record: NodeRecord | None, wall: float) -> None:
        """The DHT service signed and published `record`: gossip the same bytes."""
        if record is None:
            return
        if self._directory.update(record):
            self.on_change()
        self._routing.broadcast(NODE_RECORD_BROADCAST + record.encode(), wall)

    # --- others' records -----------------------------------------------------------------

    def accept(self, data: bytes, wall: float) -> NodeRecord | None:
        """Verify an encoded node record from a peer; add it if it is news."""
        try:
            record = decode_record(data)
            held = (
                self._directory.record(record.node_id) if isinstance(record, NodeRecord) else None
            )
            if held is not None and held.expires_at > wall and record.sequence <= held.sequence:
                # What we hold already, or older: dropped before the signature check, which
                # is most of a record's cost (every new neighbour is handed every record).
                self._counters.records_not_newer += 1
                return None
            validated = validate(record, wall, held)
        except RecordError:
            self._counters.records_refused += 1
            return None
        if not isinstance(validated, NodeRecord) or validated.node_id == self._identity.node_id:
            return None
        if not self._admit(validated, wall):
            self._counters.records_refused += 1
            return None
        if self._directory.update(validated):
            self.on_change()
        return validated

    def accept_broadcast(self, body: bytes, wall: float) -> None:
        if body.startswith(NODE_RECORD_BROADCAST):
            self.accept(body[len(NODE_RECORD_BROADCAST) :], wall)

    def fetched(self, records: list[NodeRecord], wall: float) -> None:
        """Records the DHT look-ups found (the DHT service verified their signatures)."""
        changed = False
        own_id = self._identity.node_id
        for record in records:
            if record.node_id == own_id:
                continue
            held = self._directory.record(record.node_id)
            if held is not None and held.sequence >= record.sequence:
                continue
            if not self._admit(record, wall):
                self._counters.records_refused += 1
                continue
            if self._directory.update(record):
                changed = True
        if changed:
            self.on_change()

    def directory_round(self, wall: float, *, periodic: bool = True) -> None:
        """Drop expired records; fetch those of nodes we know of but hold no record for."""
        expired = [
            entry.node_id
            for entry in self._directory
            if entry.node_id != self._identity.node_id and entry.record.expires_at < wall
        ]
        for node_id in expired:
            self._directory.remove(node_id)
        if expired:
            self.on_change()
        known = {entry.node_id for entry in self._directory}
        wanted = set(self._routing.records()) | self.dht_contacts
        missing = sorted(wanted - known)
        neighbours = sorted(self._routing.neighbours())
        if missing and neighbours:
            # Every neighbour, not one at random: a record then spreads at least
            # one hop per round, even where the DHT cannot reach its holders.
            request = encode_record_request(missing)
            for neighbour in neighbours:
                self._send_control(neighbour, request)
        # Always asked, even with nothing missing: the answer refreshes dht_contacts.
        self._outbox.request(FetchRecords(tuple(missing[:MAX_LOOKUPS_PER_ROUND]), periodic))

    def fetch_soon(self, now: float) -> bool:
        """A handshake came from a key we hold no record for: run a directory round now?

        Without this the newcomer's handshake is refused until our next
        directory round (5 s) and its retry (another 5 s); once its record is
        here, the newcomer probe answers it with a handshake of our own.
        """
        if now - self._last_urgent_fetch < URGENT_FETCH_INTERVAL:
            return False
        self._last_urgent_fetch = now
        return True

    def hand_over(self, node_id: bytes) -> None:
        """A new neighbour may lack records we hold: tell it which, it asks for the rest.

        28 bytes per record instead of the record (~150-250): joining a mesh of N
        costs each of its neighbours one digest, and only the missing records.
        """
        entries = ((r.node_id, r.sequence) for r in self._directory.records())
        for message in encode_digest(entries):
            self._send_control(node_id, message)

    def on_digest(self, node_id: bytes, entries: list[tuple[bytes, int]]) -> None:
        """A neighbour's digest: ask it for every record it holds newer than ours."""
        own_id = self._identity.node_id
        wanted = []
        for held_id, sequence in entries:
            held = self._directory.record(held_id)
            if held_id != own_id and (held is None or held.sequence < sequence):
                wanted.append(held_id)
        for start in range(0, len(wanted), MAX_IDS_PER_REQUEST):
            request = encode_record_request(wanted[start : start + MAX_IDS_PER_REQUEST])
            self._send_control(node_id, request)

    def answer_request(self, node_id: bytes, wanted_ids: list[bytes]) -> None:
        wanted = [self._directory.record(n) for n in wanted_ids]
        for message in encode_records(r.encode() for r in wanted if r is not None):
            self._send_control(node_id, message)

    def check_displacement(self, addresses: AddressMap, wall: float) -> None:
        """Move to a new IPv4 when the collision rule displaced us (docs/addressing.md)."""
        outcome = self._directory.ipv4_outcome(self._identity.node_id)
        if outcome is None or not outcome.displaced:
            return
        addresses.remove_local(self._own.ipv4)
        address = self._own.move_to(outcome.counter, wall)
        addresses.add_local(address)
        self._outbox.request(SaveAddressState(self._own.state()))
        self._outbox.event(AddressChanged(str(address)))
        self.publish(wall)

    def report_names(self, changes: DirectoryChanges) -> None:
        """After a directory change: a `NameChanged` for every node whose name moved."""
        for node_id in changes.removed:
            self._names.pop(node_id, None)
        for entry in changes.updated:
            if self._names.get(entry.node_id, "") != entry.name:
                self._outbox.event(NameChanged(entry.node_id, entry.name))
            self._names[entry.node_id] = entry.name
        self._report_prefixes()

    def _report_prefixes(self) -> None:
        """`RoutedPrefixesChanged` when the approved prefixes other nodes route for change."""
        own_id = self._identity.node_id
        prefixes = tuple(p for p, owner in self._directory.prefixes if owner != own_id)
        if prefixes != self._prefixes:
            self._prefixes = prefixes
            self._outbox.event(RoutedPrefixesChanged(prefixes))
