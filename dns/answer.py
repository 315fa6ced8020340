"""The answering core: query bytes and the mesh view in, response bytes (or a need) out.

No I/O and no clock, in the dnspython spirit: the asyncio servers, the tests
and a simulator are thin adapters. What cannot be answered from the local
view comes back as a need (`NeedsLookup` for the DHT, `NeedsForward` for the
upstream resolvers); the adapter fulfils it and calls `answer_lookup` or
`answer_forward` to get the bytes.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from dnslib import AAAA, NS, PTR, QTYPE, RR, SOA, A, DNSError, DNSHeader, DNSLabel, DNSRecord
from dnslib.buffer import Buffer, BufferError
from dnslib.dns import EDNS0, DNSQuestion

from gossipmesh.dns.config import PLAIN_UDP_PAYLOAD, ResolverConfig
from gossipmesh.dns.directory import MeshDirectory, MeshHost
from gossipmesh.dns.fastpath import answer_known_address
from gossipmesh.dns.reverse import ReverseKind, ReverseName, classify_reverse
from gossipmesh.names import is_valid_label

TCP_MAX_MESSAGE = 65535
HEADER_SIZE = 12


class Rcode(enum.IntEnum):
    """Response codes this resolver sends (BADVERS is extended: it needs the OPT record)."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16


class Transport(enum.Enum):
    UDP = "udp"
    TCP = "tcp"


CLASS_IN = 1
CLASS_ANY = 255
OPCODE_QUERY = 0

FORWARDABLE_TYPES = frozenset(
    {"A", "AAAA", "ANY", "CAA", "CNAME", "MX", "NAPTR", "NS", "PTR", "SOA", "SRV", "TXT"}
)
"""Types aiodns can ask for; any other forwarded type gets NOTIMP (see docs/dns.md)."""
REFUSED_TYPES = frozenset({"AXFR", "IXFR"})
"""Zone transfers are not offered."""


@dataclass(frozen=True)
class EdnsRequest:
    payload: int
    dnssec_ok: bool


@dataclass(frozen=True, eq=False)
class ParsedQuery:
    """A well-formed standard query and what answering it needs to remember."""

    request: DNSRecord
    question: DNSQuestion
    labels: tuple[bytes, ...]
    """The question name, lower-cased, without the root label."""
    qtype: str
    edns: EdnsRequest | None
    max_size: int
    """The largest response the client can take on this transport."""


@dataclass(frozen=True)
class Reply:
    wire: bytes


@dataclass(frozen=True)
class Drop:
    """No answer at all: the bytes are not a query we can even reply to."""

    reason: str


@dataclass(frozen=True)
class NeedsLookup:
    """A mesh name the local table does not hold: ask the directory's slow path."""

    query: ParsedQuery
    label: str


@dataclass(frozen=True)
class NeedsForward:
    """A name outside the mesh zones: ask the upstream resolvers."""

    query: ParsedQuery
    name: str
    qtype: str


@dataclass(frozen=True)
class UpstreamAnswer:
    """What the upstream said, already as records (built by the forwarder)."""

    rcode: int
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()


Outcome = Reply | Drop | NeedsLookup | NeedsForward


class MeshAnswerer:
    """Answers DNS queries for the mesh zone from a `MeshDirectory`."""

    def __init__(self, config: ResolverConfig | None = None, *, fast_path: bool = True) -> None:
        self.config = config or ResolverConfig()
        self.fast_path = fast_path
        """Answer plain A/AAAA queries for known names without dnslib (same bytes, ~8x faster)."""
        self._suffix = self.config.suffix.encode("ascii")
        self._apex = DNSLabel(self.config.suffix + ".")

    # -- entry points ----------------------------------------------------

    def answer(self, wire: bytes, view: MeshDirectory, transport: Transport) -> Outcome:
        """Decide what to do with one query message."""
        if self.fast_path:
            config = self.config
            known = answer_known_address(
                wire, view, self._suffix, config.answer_ttl, config.udp_payload
            )
            if known is not None:
                return Reply(known)
        if len(wire) < HEADER_SIZE:
            return Drop("shorter than a DNS header")
        header = DNSHeader.parse(Buffer(wire[:HEADER_SIZE]))
        if header.qr:
            return Drop("a response, not a query")
        try:
            request = DNSRecord.parse(wire)
        except (DNSError, BufferError, ValueError, IndexError, UnicodeError):
            return self._header_only(header, Rcode.FORMERR)
        if header.opcode != OPCODE_QUERY:
            return self._header_only(header, Rcode.NOTIMP)
        if len(request.questions) != 1 or not _well_formed_name(request.questions[0].qname):
            return self._header_only(header, Rcode.FORMERR)
        return self._answer_query(request, view, transport)

    def answer_lookup(self, pending: NeedsLookup, host: MeshHost | None) -> Reply:
        """Finish a `NeedsLookup` with what the slow path found (None: nothing)."""
        query = pending.query
        if host is None or pending.label not in (host.name, host.key_name):
            return self._negative(query, Rcode.NXDOMAIN, self._apex)
        return self._host_answer(query, host)

    def answer_forward(self, pending: NeedsForward, upstream: UpstreamAnswer | None) -> Reply:
        """Finish a `NeedsForward` with the upstream's answer (None: it failed -> SERVFAIL)."""
        query = pending.query
        if upstream is None:
            return self.servfail_for(query)
        return self._reply(
            query,
            upstream.rcode,
            upstream.answer,
            upstream.authority,
            upstream.additional,
            authoritative=False,
        )

    def servfail_for(self, query: ParsedQuery) -> Reply:
        """SERVFAIL for a parsed query whose slow path failed or timed out."""
        return self._reply(query, Rcode.SERVFAIL, authoritative=False)

    def servfail(self, wire: bytes) -> bytes | None:
        """A SERVFAIL for a query the adapter could not finish (None if not even a header)."""
        if len(wire) < HEADER_SIZE:
            return None
        header = DNSHeader.parse(Buffer(wire[:HEADER_SIZE]))
        if header.qr:
            return None
        return self._header_only(header, Rcode.SERVFAIL).wire

    # -- parsing -----------------------------------------------------------

    def _answer_query(
        self, request: DNSRecord, view: MeshDirectory, transport: Transport
    ) -> Outcome:
        options = [rr for rr in request.ar if rr.rtype == QTYPE.OPT]
        if len(options) > 1:
            return self._header_only(request.header, Rcode.FORMERR)
        edns: EdnsRequest | None = None
        if options:
            opt = options[0]
            edns = EdnsRequest(
                payload=max(PLAIN_UDP_PAYLOAD, opt.rclass),
                dnssec_ok=bool(opt.ttl & 0x8000),
            )
        question = request.questions[0]
        if transport is Transport.TCP:
            max_size = TCP_MAX_MESSAGE
        else:
            offered = edns.payload if edns else PLAIN_UDP_PAYLOAD
            max_size = min(offered, self.config.udp_payload)
        query = ParsedQuery(
            request=request,
            question=question,
            labels=tuple(label.lower() for label in question.qname.label),
            qtype=QTYPE.get(question.qtype, f"TYPE{question.qtype}"),
            edns=edns,
            max_size=max_size,
        )
        if options and (options[0].ttl >> 16) & 0xFF != 0:
            return self._reply(query, Rcode.BADVERS, authoritative=False)
        if question.qclass not in (CLASS_IN, CLASS_ANY):
            return self._reply(query, Rcode.REFUSED, authoritative=False)
        if query.qtype == "OPT":
            return self._reply(query, Rcode.FORMERR, authoritative=False)
        if query.qtype in REFUSED_TYPES:
            return self._reply(query, Rcode.REFUSED, authoritative=False)
        return self._route(query, view)

    def _route(self, query: ParsedQuery, view: MeshDirectory) -> Outcome:
        labels = query.labels
        if labels and labels[-1] == self._suffix:
            return self._mesh_name(query, view)
        reverse = classify_reverse(labels, self.config) if len(labels) >= 2 else None
        if reverse is not None:
            return self._reverse_name(query, reverse, view)
        return self._forward(query)

    # -- the forward zone --------------------------------------------------

    def _mesh_name(self, query: ParsedQuery, view: MeshDirectory) -> Outcome:
        labels = query.labels
        if len(labels) == 1:
            return self._apex_answer(query)
        if len(labels) > 2:
            return self._negative(query, Rcode.NXDOMAIN, self._apex)
        try:
            label = labels[0].decode("ascii")
        except UnicodeDecodeError:
            return self._negative(query, Rcode.NXDOMAIN, self._apex)
        if not is_valid_label(label):
            return self._negative(query, Rcode.NXDOMAIN, self._apex)
        host = view.host_by_name(label)
        if host is None:
            return NeedsLookup(query, label)
        return self._host_answer(query, host)

    def _host_answer(self, query: ParsedQuery, host: MeshHost) -> Reply:
        owner = query.question.qname
        ttl = self.config.answer_ttl
        records: list[RR] = []
        if query.qtype in ("A", "ANY") and host.ipv4 is not None:
            records.append(RR(owner, QTYPE.A, rdata=A(str(host.ipv4)), ttl=ttl))
        if query.qtype in ("AAAA", "ANY"):
            records.append(RR(owner, QTYPE.AAAA, rdata=AAAA(str(host.ipv6)), ttl=ttl))
        if not records:
            return self._negative(query, Rcode.NOERROR, self._apex)
        return self._reply(query, Rcode.NOERROR, records)

    def _apex_answer(self, query: ParsedQuery) -> Reply:
        owner = query.question.qname
        ttl = self.config.answer_ttl
        addresses = [
            RR(self._apex, QTYPE.A, rdata=A(str(self.config.resolver_ipv4)), ttl=ttl),
            RR(self._apex, QTYPE.AAAA, rdata=AAAA(str(self.config.resolver_ipv6)), ttl=ttl),
        ]
        answers: list[RR] = []
        additional: list[RR] = []
        if query.qtype in ("SOA", "ANY"):
            answers.append(self._soa(self._apex, owner=owner))
        if query.qtype in ("NS", "ANY"):
            answers.append(RR(owner, QTYPE.NS, rdata=NS(self._apex), ttl=ttl))
            if query.qtype == "NS":
                additional = addresses
        if query.qtype in ("A", "ANY"):
            answers.append(RR(owner, QTYPE.A, rdata=addresses[0].rdata, ttl=ttl))
        if query.qtype in ("AAAA", "ANY"):
            answers.append(RR(owner, QTYPE.AAAA, rdata=addresses[1].rdata, ttl=ttl))
        if not answers:
            return self._negative(query, Rcode.NOERROR, self._apex)
        return self._reply(query, Rcode.NOERROR, answers, additional=additional)

    # -- the reverse zones -------------------------------------------------

    def _reverse_name(self, query: ParsedQuery, reverse: ReverseName, view: MeshDirectory) -> Reply:
        zone = DNSLabel(list(reverse.zone))
        owner = query.question.qname
        ttl = self.config.answer_ttl
        if query.labels == reverse.zone and query.qtype in ("SOA", "NS", "ANY"):
            answers: list[RR] = []
            if query.qtype in ("SOA", "ANY"):
                answers.append(self._soa(zone, owner=owner))
            if query.qtype in ("NS", "ANY"):
                answers.append(RR(owner, QTYPE.NS, rdata=NS(self._apex), ttl=ttl))
            return self._reply(query, Rcode.NOERROR, answers)
        if reverse.kind is ReverseKind.INVALID:
            return self._negative(query, Rcode.NXDOMAIN, zone)
        if reverse.kind is not ReverseKind.ADDRESS or reverse.address is None:
            return self._negative(query, Rcode.NOERROR, zone)
        target = self._ptr_target(reverse.address, view)
        if target is None:
            return self._negative(query, Rcode.NXDOMAIN, zone)
        if query.qtype not in ("PTR", "ANY"):
            return self._negative(query, Rcode.NOERROR, zone)
        record = RR(owner, QTYPE.PTR, rdata=PTR(target), ttl=ttl)
        return self._reply(query, Rcode.NOERROR, [record])

    def _ptr_target(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, view: MeshDirectory
    ) -> DNSLabel | None:
        if address in (self.config.resolver_ipv4, self.config.resolver_ipv6):
            return self._apex
        host = view.host_by_address(address)
        if host is None:
            return None
        return DNSLabel(f"{host.canonical_label}.{self.config.suffix}.")

    # -- forwarding --------------------------------------------------------

    def _forward(self, query: ParsedQuery) -> Outcome:
        if query.qtype not in FORWARDABLE_TYPES:
            return self._reply(query, Rcode.NOTIMP, authoritative=False)
        name = _presentable(query.question.qname.label)
        if name is None:
            return self._reply(query, Rcode.SERVFAIL, authoritative=False)
        return NeedsForward(query, name, query.qtype)

    # -- building responses ------------------------------------------------

    def _soa(self, zone: DNSLabel, owner: DNSLabel | None = None) -> RR:
        config = self.config
        rdata = SOA(
            mname=self._apex,
            rname=DNSLabel(f"hostmaster.{config.suffix}."),
            times=(config.soa_serial, 3600, 600, 86400, config.negative_ttl),
        )
        return RR(owner or zone, QTYPE.SOA, rdata=rdata, ttl=config.negative_ttl)

    def _negative(self, query: ParsedQuery, rcode: Rcode, zone: DNSLabel) -> Reply:
        """NXDOMAIN or NODATA, with the zone's SOA so resolvers cache it (RFC 2308)."""
        return self._reply(query, rcode, authority=[self._soa(zone)])

    def _reply(
        self,
        query: ParsedQuery,
        rcode: int,
        answers: list[RR] | tuple[RR, ...] = (),
        authority: list[RR] | tuple[RR, ...] = (),
        additional: list[RR] | tuple[RR, ...] = (),
        *,
        authoritative: bool = True,
    ) -> Reply:
        header = query.request.header
        response = DNSRecord(
            DNSHeader(
                id=header.id,
                qr=1,
                aa=int(authoritative),
                rd=header.rd,
                ra=1,
                cd=header.cd,
                rcode=rcode & 0xF,
            ),
            q=query.question,
        )
        for record in answers:
            response.add_answer(record)
        for record in authority:
            response.add_auth(record)
        for record in additional:
            response.add_ar(record)
        opt = self._opt(query, rcode)
        if opt is not None:
            response.add_ar(opt)
        wire = response.pack()
        if len(wire) <= query.max_size:
            return Reply(bytes(wire))
        truncated = DNSRecord(
            DNSHeader(
                id=header.id,
                qr=1,
                aa=int(authoritative),
                tc=1,
                rd=header.rd,
                ra=1,
                cd=header.cd,
                rcode=rcode & 0xF,
            ),
            q=query.question,
        )
        if opt is not None:
            truncated.add_ar(opt)
        return Reply(bytes(truncated.pack()))

    def _opt(self, query: ParsedQuery, rcode: int) -> RR | None:
        if query.edns is None:
            return None
        return EDNS0(
            udp_len=self.config.udp_payload,
            ext_rcode=rcode >> 4,
            version=0,
            flags="do" if query.edns.dnssec_ok else "",
        )

    def _header_only(self, header: DNSHeader, rcode: Rcode) -> Reply:
        """A reply with no sections: for queries whose body cannot be trusted."""
        reply = DNSHeader(
            id=header.id,
            qr=1,
            opcode=header.opcode,
            rd=header.rd,
            ra=1,
            rcode=int(rcode),
        )
        return Reply(bytes(DNSRecord(reply).pack()))


def _well_formed_name(name: DNSLabel) -> bool:
    """RFC 1035 limits that dnslib's parser does not enforce (it reads 0x40-0x7f as lengths)."""
    labels = name.label
    return all(len(label) <= 63 for label in labels) and sum(len(x) + 1 for x in labels) < 256


def _presentable(labels: tuple[bytes, ...]) -> str | None:
    """The name as text the upstream library accepts, or None if it cannot be written."""
    if not labels:
        return "."
    parts: list[str] = []
    for label in labels:
        if not label or any(byte <= 0x20 or byte >= 0x7F or byte in b".\\" for byte in label):
            return None
        parts.append(label.decode("ascii"))
    return ".".join(parts)
