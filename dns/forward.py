"""Forwarding names outside the mesh to the host's original resolvers, with aiodns.

aiodns (c-ares) returns parsed records, not packets, so a forwarded answer is
rebuilt from them: the answer, authority and additional records of the
types c-ares parses, with their TTLs. What does not survive the trip is listed
in docs/dns.md (negative answers lose the upstream SOA, TXT string
boundaries are re-cut at 255 bytes, DNSSEC records and the AD bit are lost).
Every failure becomes `None`, which the core turns into SERVFAIL, within a
deadline enforced here, not only by c-ares.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiodns
import aiodns.error
import pycares
from dnslib import AAAA, CAA, CNAME, MX, NAPTR, NS, PTR, RR, SOA, SRV, TXT, A, DNSLabel

from gossipmesh.addressing import RESOLVER_IPV4, RESOLVER_IPV6
from gossipmesh.dns.answer import Rcode, UpstreamAnswer

log = logging.getLogger(__name__)

DEFAULT_FORWARD_TIMEOUT = 3.0
"""Seconds before a forwarded query becomes SERVFAIL: under glibc's 5 s default, so the
stub sees our answer rather than its own timeout."""
TXT_CHUNK = 255

_NEGATIVE: dict[int, Rcode] = {
    aiodns.error.ARES_ENOTFOUND: Rcode.NXDOMAIN,
    aiodns.error.ARES_ENODATA: Rcode.NOERROR,
    aiodns.error.ARES_EREFUSED: Rcode.REFUSED,
    aiodns.error.ARES_ENOTIMP: Rcode.NOTIMP,
}
"""c-ares statuses that are real upstream answers; every other status is a failure."""


class Forwarder(Protocol):
    """Asks someone else about names outside the mesh."""

    async def forward(self, name: str, qtype: str) -> UpstreamAnswer | None:
        """The upstream's answer, or None when none could be had in time."""

    async def close(self) -> None: ...


def read_upstreams(
    resolv_conf: Path,
    exclude: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (
        RESOLVER_IPV4,
        RESOLVER_IPV6,
    ),
) -> list[str]:
    """The `nameserver` addresses of a resolv.conf, without our own resolver's.

    A missing or unreadable file gives no upstreams (forwarding then answers
    SERVFAIL) rather than falling back to anything implicit.
    """
    try:
        text = resolv_conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return parse_nameservers(text, exclude)


def parse_nameservers(
    text: str, exclude: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = ()
) -> list[str]:
    """The distinct `nameserver` addresses of resolv.conf text, minus `exclude`."""
    excluded = {ipaddress.ip_address(str(address)) for address in exclude}
    upstreams: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        address_text = fields[1]
        try:
            address = ipaddress.ip_address(address_text.split("%", 1)[0])
        except ValueError:
            continue
        if address in excluded or address_text in upstreams:
            continue
        upstreams.append(address_text)
    return upstreams


class AiodnsForwarder:
    """Forwards with one aiodns resolver over explicit upstreams; never the system default.

    An empty upstream list answers every query with SERVFAIL: letting c-ares
    fall back to /etc/resolv.conf would loop back to us once it points here.
    """

    def __init__(
        self,
        upstreams: Sequence[str],
        timeout: float = DEFAULT_FORWARD_TIMEOUT,
        tries: int = 2,
    ) -> None:
        if timeout <= 0:
            raise ValueError("the forwarding timeout must be positive")
        self.upstreams = list(upstreams)
        self.timeout = timeout
        self._tries = tries
        self._resolver: aiodns.DNSResolver | None = None

    def _get_resolver(self) -> aiodns.DNSResolver:
        if self._resolver is None:
            self._resolver = aiodns.DNSResolver(
                nameservers=self.upstreams,
                timeout=self.timeout / (self._tries + 1),
                tries=self._tries,
            )
        return self._resolver

    async def forward(self, name: str, qtype: str) -> UpstreamAnswer | None:
        if not self.upstreams:
            return None
        try:
            pending = self._get_resolver().query_dns(name, qtype)
            result = await asyncio.wait_for(pending, self.timeout)
        except aiodns.error.DNSError as exc:
            status = exc.args[0] if exc.args else None
            rcode = _NEGATIVE.get(status) if isinstance(status, int) else None
            if rcode is None:
                log.debug("forwarding %s %s failed: %s", name, qtype, exc)
                return None
            return UpstreamAnswer(rcode=int(rcode))
        except (TimeoutError, ValueError, RuntimeError, pycares.AresError) as exc:
            # AresError: c-ares rejected the upstream list or the name before sending.
            log.debug("forwarding %s %s failed: %r", name, qtype, exc)
            return None
        return UpstreamAnswer(
            rcode=int(Rcode.NOERROR),
            answer=_records(result.answer),
            authority=_records(result.authority),
            additional=_records(result.additional),
        )

    async def close(self) -> None:
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            with contextlib.suppress(Exception):
                await resolver.close()


def _records(records: Iterable[pycares.DNSRecord]) -> tuple[RR, ...]:
    built = (record_to_rr(record) for record in records)
    return tuple(rr for rr in built if rr is not None)


def record_to_rr(record: pycares.DNSRecord) -> RR | None:
    """One c-ares record as a dnslib RR; None for a type we do not rebuild."""
    rdata = _rdata(record.data)
    if rdata is None:
        return None
    return RR(
        DNSLabel(record.name or "."),
        record.type,
        rclass=record.record_class,
        ttl=record.ttl,
        rdata=rdata,
    )


def _rdata(data: Any) -> Any:
    match data:
        case pycares.ARecordData(addr=addr):
            return A(addr)
        case pycares.AAAARecordData(addr=addr):
            return AAAA(addr)
        case pycares.CNAMERecordData(cname=cname):
            return CNAME(_name(cname))
        case pycares.NSRecordData(nsdname=nsdname):
            return NS(_name(nsdname))
        case pycares.PTRRecordData(dname=dname):
            return PTR(_name(dname))
        case pycares.MXRecordData(priority=priority, exchange=exchange):
            return MX(_name(exchange), priority)
        case pycares.SRVRecordData(priority=priority, weight=weight, port=port, target=target):
            return SRV(priority, weight, port, _name(target))
        case pycares.TXTRecordData(data=text):
            chunks = [text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)]
            return TXT(chunks or [b""])
        case pycares.SOARecordData():
            times = (data.serial, data.refresh, data.retry, data.expire, data.minimum)
            return SOA(_name(data.mname), _name(data.rname), times)
        case pycares.CAARecordData(critical=critical, tag=tag, value=value):
            return CAA(critical, tag, value)
        case pycares.NAPTRRecordData():
            return NAPTR(
                data.order,
                data.preference,
                data.flags.encode(),
                data.service.encode(),
                data.regexp.encode(),
                _name(data.replacement),
            )
    return None


def _name(text: str) -> DNSLabel:
    return DNSLabel(text or ".")
