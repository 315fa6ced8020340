"""What `gossipmesh cert show` and `cert sign` print: certificates in human units.

Kept apart from the commands so the wording of a certificate is in one place;
the JSON form keeps raw numbers (Unix seconds, base64 keys) for scripts.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from typing import Any

from gossipmesh.addressing import DEFAULT_IPV4_NETWORK, first_ipv4, ipv6_for
from gossipmesh.errors import UsageError
from gossipmesh.identity import encode_public_key, node_id_from_public_key
from gossipmesh.names import key_name
from gossipmesh.trust.certificate import CertificateError, NodeCertificate

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
MAX_VALIDITY = 100 * 365 * 86_400
"""Longest --valid-for accepted; anything longer is a typo, not a plan."""


def parse_duration(text: str, option: str = "--valid-for") -> int:
    """Seconds in `90d`, `12h`, `30m`, `2w` or `3600s`; UsageError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise UsageError(
            f"{option} {text!r}: use a number and a unit (s, m, h, d, w), e.g. 90d or 12h"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= MAX_VALIDITY:
        raise UsageError(f"{option} {text!r}: must be more than 0 and at most 100 years")
    return seconds


def utc(timestamp: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{timestamp} (Unix time)"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float) -> str:
    """A length of time in the largest unit that keeps it readable: `364 days`, `5 hours`."""
    seconds = abs(seconds)
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size:
            return counted(round(seconds / size), unit)
    return counted(round(seconds), "second")


def counted(count: int, singular: str, plural: str = "") -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def relative(timestamp: int, now: float) -> str:
    if timestamp >= now:
        return f"in {span(timestamp - now)}"
    return f"{span(now - timestamp)} ago"


def when(timestamp: int, now: float) -> str:
    return f"{utc(timestamp)} ({relative(timestamp, now)})"


def refusal_text(error: CertificateError, cert: NodeCertificate, now: float) -> str:
    """Why a certificate is not valid, in words an operator can act on."""
    reason = error.reason.value
    if reason == "expired":
        return f"expired {relative(cert.not_after, now)}"
    if reason == "not_yet_valid":
        return f"not valid yet (from {when(cert.not_before, now)})"
    if reason == "wrong_authority":
        return "signed by another authority, not this network's"
    if reason == "revoked":
        return "revoked by the network's revocation list"
    if reason == "bad_signature":
        return "the authority's signature does not match (altered or damaged)"
    return f"{reason} ({error.detail})" if error.detail else reason


def certificate_report(
    cert: NodeCertificate, network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK
) -> dict[str, Any]:
    """The raw facts of a certificate, plus what its node key derives (as `addr` shows)."""
    node_id = node_id_from_public_key(cert.node_public_key)
    counter, derived = first_ipv4(cert.node_public_key, network)
    return {
        "serial": cert.serial,
        "node_public_key": encode_public_key(cert.node_public_key),
        "node_id": node_id.hex(),
        "key_name": key_name(node_id),
        "ipv6": str(ipv6_for(cert.node_public_key)),
        "derived_ipv4": str(derived),
        "derived_ipv4_counter": counter,
        "name": cert.name or None,
        "groups": list(cert.groups),
        "ipv4": str(cert.ipv4) if cert.ipv4 is not None else None,
        "routes": [str(route) for route in cert.routes],
        "exit_node": cert.exit_node,
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "authority_public_key": encode_public_key(cert.authority_public_key),
    }


def human_fields(report: dict[str, Any], now: float) -> dict[str, str]:
    """The report for a person: lists joined, times in UTC and relative, '-' for none."""
    fields = {
        "serial": str(report["serial"]),
        "node public key": report["node_public_key"],
        "node id": report["node_id"],
        "key name": report["key_name"],
        "ipv6": report["ipv6"],
        "ipv4 (derived)": f"{report['derived_ipv4']} (counter {report['derived_ipv4_counter']})",
        "name": report["name"] or "-",
        "groups": ", ".join(report["groups"]) or "-",
        "ipv4 (granted)": report["ipv4"] or "-",
        "routes": ", ".join(report["routes"]) or "-",
        "exit node": "yes" if report["exit_node"] else "no",
        "valid from": when(report["not_before"], now),
        "valid until": when(report["not_after"], now),
        "lifetime": span(report["not_after"] - report["not_before"]),
        "authority": report["authority_public_key"],
    }
    return fields
