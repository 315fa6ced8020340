"""NAT traversal through real Linux NATs (issue 9): one row of the matrix per test.

A small internet (tests/support/nat_lab.py): a public segment with two
reachable nodes, `hub` and `seed`, and alpha and bravo each on a public
address or behind a NAT router namespace of their own (nftables
`masquerade`, `masquerade random`, or UDP dropped by the router). Every row
starts hub, then seed, then alpha and bravo together (all bootstrapping from
hub), and checks what `gossipmesh peers --json` on alpha says about bravo and
that the kernel's ping crosses the mesh. Each row prints the time from the
start of alpha and bravo to the first direct path (or to the first answered
relayed ping); docs/nat.md keeps the table.

Why two public nodes: `gossipmesh netcheck` can only tell a symmetric NAT from
an endpoint-independent one with two observers at different addresses; and a
DHT lookup never asks a node for its own record (kademlia's `find_neighbors`
leaves the target id out), so a lone first node's record, stored only at
itself, is found only when its welcome happened to hand it over; the second
public node holds a copy (docs/nat.md, "Known limits").

The daemons run with `timer_scale = 4`: the probe round for direct paths
(10 s), neighbour pings (5 s) and session timers are divided by 4. The DHT
echo that probes an endpoint waits `NodeOptions.rpc_timeout` (2 s, unscaled)
per candidate address.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh_lab import DaemonNode
from tests.support.nat_lab import Nat, SmallInternet, require_nat_lab
from tests.support.netns import NetnsLab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

TIMER_SCALE = 4
PATH_TIMEOUT = 40.0
"""Seconds from start until the expected path shows (a few probe rounds)."""
PING_TIMEOUT = 30.0
STAY_RELAYED = 6.0
"""Seconds a relayed path must stay relayed: more than two probe rounds at timer_scale 4."""
POLL = 0.2


@dataclass(frozen=True)
class Row:
    """One row of the issue's matrix."""

    alpha: Nat
    bravo: Nat
    expected: str
    """'direct', 'relayed' (through a public node) or 'unreachable'."""
    router_firewall: bool = True
    """Routers drop unsolicited packets to themselves, as home routers do (nat_lab.py)."""
    same_subnet: bool = False
    """Both private sites use 10.1.0.0/24, as two homes often do."""


ROWS = {
    "none-masquerade": Row(Nat.NONE, Nat.MASQUERADE, "direct"),
    "masquerade-masquerade": Row(Nat.MASQUERADE, Nat.MASQUERADE, "direct"),
    "random-masquerade": Row(Nat.RANDOM, Nat.MASQUERADE, "relayed"),
    "random-random": Row(Nat.RANDOM, Nat.RANDOM, "relayed"),
    # bravo's host address is alpha's own: if alpha probed it, its own echo would
    # answer and bravo would look direct at an address that never reaches it.
    "random-masquerade_same_subnet": Row(Nat.RANDOM, Nat.MASQUERADE, "relayed", same_subnet=True),
    "masquerade-udp_blocked": Row(Nat.MASQUERADE, Nat.UDP_BLOCKED, "unreachable"),
    # Routers without the input filter: each side's first probe leaves a conntrack
    # entry at the other router that takes the port its own mapping wants, so
    # masquerade picks another port and punching fails (docs/nat.md).
    "masquerade_nofilter-masquerade_nofilter": Row(
        Nat.MASQUERADE, Nat.MASQUERADE, "relayed", router_firewall=False
    ),
}


@dataclass
class Pair:
    """hub, alpha and bravo running in a small internet; `started` is when alpha and
    bravo were launched (time.monotonic())."""

    internet: SmallInternet
    hub: DaemonNode
    seed: DaemonNode
    alpha: DaemonNode
    bravo: DaemonNode
    started: float

    def since_start(self) -> float:
        return time.monotonic() - self.started

    def fail(self, message: str) -> AssertionError:
        peers = json.dumps(self.alpha.peers(), indent=1) if self.alpha.running() else "-"
        return AssertionError(f"{message}\nalpha peers: {peers}\n{self.internet.diagnostics()}")


@contextmanager
def running_pair(
    tmp_path: Path,
    alpha_nat: Nat,
    bravo_nat: Nat,
    *,
    router_firewall: bool = True,
    same_subnet: bool = False,
) -> Iterator[Pair]:
    """Build the small internet, start hub, then alpha and bravo together."""
    require_nat_lab()
    with NetnsLab() as netns:
        internet = SmallInternet(netns, tmp_path, settings={"timer_scale": TIMER_SCALE})
        hub = internet.add_public_node("hub")
        seed = internet.add_public_node("seed")
        subnet = 1 if same_subnet else None
        alpha = internet.add_node(
            "alpha", alpha_nat, router_firewall=router_firewall, subnet=subnet
        )
        bravo = internet.add_node(
            "bravo", bravo_nat, router_firewall=router_firewall, subnet=subnet
        )
        hub.start()
        seed.start([hub])
        wait_until(lambda: peer_row(seed, hub) is not None, PATH_TIMEOUT, POLL, "seed to know hub")
        started = time.monotonic()
        alpha.start([hub], wait=False)
        bravo.start([hub], wait=False)
        alpha.wait_ready()
        bravo.wait_ready()
        yield Pair(internet, hub, seed, alpha, bravo, started)


def peer_row(source: DaemonNode, target: DaemonNode) -> dict[str, Any] | None:
    """`gossipmesh peers --json` on `source`: the row about `target`, if any."""
    return source.peer(target)


def wait_for_path(pair: Pair, source: DaemonNode, target: DaemonNode, path: str) -> float:
    """Seconds since start when `source` first reports `path` to `target`."""

    def reached() -> bool:
        row = peer_row(source, target)
        return row is not None and row["path"] == path

    try:
        wait_until(reached, PATH_TIMEOUT, POLL, f"{source.name} to reach {target.name} {path}")
    except AssertionError as exc:
        raise pair.fail(str(exc)) from None
    return pair.since_start()


def ping_within(pair: Pair, source: DaemonNode, target: DaemonNode, timeout: float) -> float:
    """Retry one-shot kernel pings to `target`'s mesh IPv4; seconds until one is answered."""
    began = time.monotonic()
    deadline = began + timeout
    while not source.ping(target.ipv4):
        if time.monotonic() >= deadline:
            raise pair.fail(f"{source.name} could not ping {target.name} within {timeout:.0f}s")
        time.sleep(POLL)
    return time.monotonic() - began


def holds_for(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether `condition` stays true at every poll for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(POLL)
    return condition()


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[nat] {line}")


NETCHECK_MAPPING = {
    Nat.NONE: "no NAT: peers see this host's own address",
    Nat.MASQUERADE: "endpoint-independent: every peer sees the same address and port",
    Nat.RANDOM: "endpoint-dependent (symmetric NAT): peers see different ports",
}


def check_netcheck(pair: Pair, node: DaemonNode, nat: Nat) -> str:
    """`gossipmesh netcheck` on `node` names its NAT's behaviour and public address."""
    netcheck = node.cli_json("netcheck")
    assert netcheck["udp"] == "works", pair.fail(f"{node.name} netcheck: {netcheck}")
    assert netcheck["mapping"] == NETCHECK_MAPPING[nat], pair.fail(
        f"{node.name} behind {nat.value}: netcheck {netcheck}"
    )
    public = pair.internet.public_address_of(node)
    addresses = netcheck["public_addresses"]
    assert addresses and all(a.startswith(f"{public}:") for a in addresses), pair.fail(
        f"{node.name} netcheck public addresses {addresses}, expected {public}"
    )
    return str(netcheck["mapping"])


@pytest.mark.parametrize("row_id", list(ROWS))
def test_nat_matrix_row(tmp_path: Path, capsys: pytest.CaptureFixture[str], row_id: str) -> None:
    row = ROWS[row_id]
    with running_pair(
        tmp_path,
        row.alpha,
        row.bravo,
        router_firewall=row.router_firewall,
        same_subnet=row.same_subnet,
    ) as pair:
        if row.expected == "direct":
            summary = check_direct(pair)
        elif row.expected == "relayed":
            summary = check_relayed(pair)
        else:
            summary = check_unreachable(pair)
        if not row.router_firewall:
            assert port_taken(pair), pair.fail("no remapped port toward the other side")
        # After the timings: netcheck's echoes take up to rpc_timeout (2 s).
        mapping = check_netcheck(pair, pair.alpha, row.alpha)
        report(capsys, f"{row_id}: {summary}; alpha's netcheck: {mapping!r}")


def port_taken(pair: Pair) -> bool:
    """Whether a router mapped its node's port toward the other side to a new port.

    That is what defeats punching without the input filter: the other side's
    probe arrived first and its conntrack entry holds the node's own port.
    """
    for node, other in ((pair.alpha, pair.bravo), (pair.bravo, pair.alpha)):
        other_public = pair.internet.public_address_of(other)
        outbound = f"{node.underlay} dst={other_public} "
        for line in pair.internet.router_of(node).udp_mappings().splitlines():
            reply_port = line.rsplit("dport=", 1)[-1].split()[0]
            if line.split("src=", 1)[-1].startswith(outbound) and reply_port != "51821":
                return True
    return False


def check_direct(pair: Pair) -> str:
    alpha, bravo = pair.alpha, pair.bravo
    first_direct = wait_for_path(pair, alpha, bravo, "direct")
    ping_s = ping_within(pair, alpha, bravo, PING_TIMEOUT)
    first_ping = pair.since_start()
    row = peer_row(alpha, bravo)
    assert row is not None and row["path"] == "direct" and row["via"] is None, pair.fail(
        f"alpha's path to bravo after the ping: {row}"
    )
    # The direct path goes through bravo's NAT: alpha talks to bravo's public mapping.
    bravo_public = pair.internet.public_address_of(bravo)
    assert row["endpoint"] == f"{bravo_public}:51821", pair.fail(f"endpoint {row['endpoint']}")
    back = peer_row(bravo, alpha)
    assert back is not None and back["path"] == "direct", pair.fail(f"bravo's view: {back}")
    # Through each NAT: its router holds an answered mapping toward the other side's
    # public address (for two NATs, the punched hole).
    for node, other in ((alpha, bravo), (bravo, alpha)):
        if node.name not in pair.internet.routers:
            continue
        other_public = pair.internet.public_address_of(other)
        mappings = pair.internet.router_of(node).udp_mappings()
        answered = [
            line
            for line in mappings.splitlines()
            if f"dst={other_public} " in line and "UNREPLIED" not in line
        ]
        assert answered, pair.fail(
            f"no answered mapping toward {other.name} at {node.name}'s router"
        )
    return (
        f"path direct, endpoint {row['endpoint']}; first direct at {first_direct:.1f}s, "
        f"first ping answered at {first_ping:.1f}s (pinging took {ping_s:.1f}s)"
    )


def check_relayed(pair: Pair) -> str:
    alpha, bravo = pair.alpha, pair.bravo
    ping_within(pair, alpha, bravo, PATH_TIMEOUT)
    first_ping = pair.since_start()

    public = {pair.hub.name, pair.seed.name}
    vias: set[str] = set()

    def relayed_via_public_node() -> bool:
        row = peer_row(alpha, bravo)
        if row is None or row["path"] != "relayed" or row["via"] not in public:
            return False
        vias.add(row["via"])
        return True

    # Several probe rounds and rendezvous later, still relayed: no direct path exists.
    assert holds_for(STAY_RELAYED, relayed_via_public_node), pair.fail(
        "alpha's path to bravo is not (or no longer) relayed through a public node"
    )
    assert alpha.ping(bravo.ipv4), pair.fail("the relayed ping stopped working")
    counters = alpha.status()["counters"]
    assert counters["rendezvous_sent"] + counters["rendezvous_answered"] > 0, pair.fail(
        "no rendezvous was tried"
    )
    return (
        f"path relayed via {'/'.join(sorted(vias))}; first relayed ping at {first_ping:.1f}s; "
        f"still relayed at {pair.since_start():.1f}s"
    )


def check_unreachable(pair: Pair) -> str:
    alpha, bravo, hub = pair.alpha, pair.bravo, pair.hub
    alpha_up = wait_for_path(pair, alpha, hub, "direct")
    netcheck = bravo.cli_json("netcheck")
    assert netcheck["udp"] == "blocked or no peer reachable", pair.fail(f"netcheck {netcheck}")
    assert netcheck["answers"] == [] and netcheck["peers_asked"] >= 1, pair.fail(str(netcheck))
    assert netcheck["mapping"] == "unknown: no peer answered over UDP", pair.fail(str(netcheck))
    assert bravo.peers() == [] and bravo.status()["reachable"] == 0, pair.fail(
        f"bravo's peers: {bravo.peers()}"
    )

    def no_path_to_bravo() -> bool:
        row = peer_row(alpha, bravo)
        return row is None or row["path"] == "none"

    assert holds_for(2.0, no_path_to_bravo), pair.fail("alpha found a path to bravo")
    assert not alpha.ping(bravo.ipv4), pair.fail("a ping crossed a router that drops UDP")
    return (
        f"bravo unreachable (alpha reached hub directly at {alpha_up:.1f}s); bravo's "
        f"netcheck: udp {netcheck['udp']!r}, {netcheck['mapping']!r}"
    )


def test_nat_mapping_flush_recovers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both routers forget every mapping (a NAT reboot): the punched path comes back."""
    with running_pair(tmp_path, Nat.MASQUERADE, Nat.MASQUERADE) as pair:
        alpha, bravo = pair.alpha, pair.bravo
        wait_for_path(pair, alpha, bravo, "direct")
        ping_within(pair, alpha, bravo, PING_TIMEOUT)
        flushed = time.monotonic()
        for node in (alpha, bravo):
            pair.internet.router_of(node).flush_conntrack()
        ping_within(pair, alpha, bravo, PING_TIMEOUT)
        ping_back = time.monotonic() - flushed

        def direct_both_ways() -> bool:
            there, back = peer_row(alpha, bravo), peer_row(bravo, alpha)
            return all(row is not None and row["path"] == "direct" for row in (there, back))

        try:
            wait_until(direct_both_ways, PATH_TIMEOUT, POLL, "the direct path after the flush")
        except AssertionError as exc:
            raise pair.fail(str(exc)) from None
        direct_back = time.monotonic() - flushed
        assert alpha.ping(bravo.ipv4), pair.fail("no ping over the recovered path")
        report(
            capsys,
            f"conntrack flush at both routers: ping answered {ping_back:.1f}s later, "
            f"path direct both ways {direct_back:.1f}s later",
        )
