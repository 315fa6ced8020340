"""The nodes, the policy and the filter the conntrack tests share."""

from __future__ import annotations

from gossipmesh.policy.filter import PacketFilter
from gossipmesh.policy.model import parse_policy
from gossipmesh.policy.peer import PeerIdentity
from tests.unit.policy.packets import packed

WEB4, WEB6 = "100.64.0.2", "fd00::2"
ALICE4, ALICE6 = "100.64.0.1", "fd00::1"
MALLORY4, MALLORY6 = "100.64.0.66", "fd00::66"
BOB4 = "100.64.0.3"
LEAF4 = "10.20.0.9"
"""A leaf of web1: traffic to it crosses web1's filter too."""

WEB = PeerIdentity("web1", frozenset({"web"}), frozenset({packed(WEB4), packed(WEB6)}))
ALICE = PeerIdentity("alice", frozenset({"dev"}), frozenset({packed(ALICE4), packed(ALICE6)}))
BOB = PeerIdentity("bob", frozenset({"dev"}), frozenset({packed(BOB4)}))
MALLORY = PeerIdentity(
    "mallory", frozenset({"guest"}), frozenset({packed(MALLORY4), packed(MALLORY6)})
)
"""Certified, but no rule lets her open anything: everything she sends must be a reply."""

POLICY_TEXT = """
version = 1
[[rules]]
from = ["group:dev"]
to = ["group:web"]
proto = "tcp"
ports = ["22"]
[[rules]]
from = ["group:dev"]
to = ["group:web"]
proto = "udp"
ports = ["53"]
[[rules]]
from = ["group:dev"]
to = ["group:web"]
proto = "icmp"
[[rules]]
from = ["*"]
to = ["cidr:10.20.0.0/24"]
proto = "tcp"
ports = ["80"]
"""
POLICY = parse_policy(POLICY_TEXT)


def web_filter(**limits: int) -> PacketFilter:
    return PacketFilter(WEB, POLICY, **limits)
