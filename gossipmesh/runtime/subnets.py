"""The host's side of subnet routing (`--advertise-routes`, `--snat`): kernel routes and NAT.

On every node: a kernel route through the TUN for each subnet another node
routes for and the trust gate approved (the mesh's own ranges are routed
already). On a subnet router: IP forwarding on (restored on exit) and, with
`--snat`, an nftables table that masquerades mesh traffic leaving for the
subnets, so their hosts need no route back to the mesh. Everything added
is removed when the daemon stops; routes through the TUN vanish with it.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gossipmesh.addressing import IPV6_PREFIX
from gossipmesh.runtime.udp import UNDERLAY_MARK

log = logging.getLogger(__name__)

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_IPV4 = ipaddress.IPv4Network("0.0.0.0/0")
DEFAULT_IPV6 = ipaddress.IPv6Network("::/0")
FORWARDING = {
    4: Path("/proc/sys/net/ipv4/ip_forward"),
    6: Path("/proc/sys/net/ipv6/conf/all/forwarding"),
}


class KernelRoutes:
    """Routes through the TUN for the approved subnets of other nodes, kept in step.

    Netlink calls block (and pyroute2's synchronous API refuses to run inside
    an event loop), so updates run in order on one worker thread: `submit`.
    """

    def __init__(self, interface: str, mesh_ipv4: ipaddress.IPv4Network) -> None:
        self.interface = interface
        self._covered = (mesh_ipv4, IPV6_PREFIX)
        self.installed: set[Prefix] = set()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gm-routes")

    def submit(self, prefixes: Iterable[Prefix]) -> None:
        self._worker.submit(self.update, tuple(prefixes))

    def run(self, job: Callable[[], None]) -> None:
        """Another routing change, in order with the route updates (the exit's rules)."""
        self._worker.submit(job)

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    def update(self, prefixes: Iterable[Prefix]) -> None:
        wanted = {
            p
            for p in prefixes
            if p.prefixlen  # an exit's default route: only through ExitRoute's own table
            and not any(p.version == c.version and p.subnet_of(c) for c in self._covered)  # type: ignore[arg-type]
        }
        for prefix in sorted(self.installed - wanted, key=str):
            self._route("del", prefix)
        for prefix in sorted(wanted - self.installed, key=str):
            self._route("add", prefix)

    def _route(self, action: str, prefix: Prefix) -> None:
        from pyroute2 import IPRoute

        try:
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=self.interface)[0]
                ipr.route(
                    action,
                    dst=str(prefix.network_address),
                    dst_len=prefix.prefixlen,
                    oif=index,
                    family=10 if prefix.version == 6 else 2,
                )
        except Exception as exc:  # NetlinkError: a route of the host's own, or gone already
            log.warning("cannot %s the route to %s via %s: %s", action, prefix, self.interface, exc)
            return
        if action == "add":
            self.installed.add(prefix)
            log.info("route to %s via %s (a subnet router)", prefix, self.interface)
        else:
            self.installed.discard(prefix)


class SubnetRouter:
    """IP forwarding (and source NAT) while this node routes for subnets."""

    def __init__(self, interface: str, routes: tuple[Prefix, ...], snat: bool) -> None:
        self.interface = interface
        self.routes = routes
        self.snat = snat
        self._saved: dict[int, str] = {}
        self._table = f"gossipmesh_{interface}".replace("-", "_")

    def start(self) -> None:
        for version in sorted({prefix.version for prefix in self.routes}):
            path = FORWARDING[version]
            self._saved[version] = path.read_text().strip()
            path.write_text("1\n")
        if self.snat:
            self._nft(self._snat_rules())
        log.info(
            "routing for %s%s",
            ", ".join(map(str, self.routes)),
            " with source NAT" if self.snat else "",
        )

    def _snat_rules(self) -> str:
        lines = [
            f"table inet {self._table} {{",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
        ]
        for prefix in self.routes:
            family = "ip6" if prefix.version == 6 else "ip"
            lines.append(f'    iifname "{self.interface}" {family} daddr {prefix} masquerade')
        lines += ["  }", "}"]
        return "\n".join(lines) + "\n"

    def _nft(self, script: str) -> None:
        result = subprocess.run(
            ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10
        )
        if result.returncode != 0:
            raise OSError(f"nft refused the source NAT rules: {result.stderr.strip()}")

    def close(self) -> None:
        for version, value in self._saved.items():
            try:
                FORWARDING[version].write_text(value + "\n")
            except OSError as exc:
                log.warning("cannot restore %s: %s", FORWARDING[version], exc.strerror)
        self._saved.clear()
        if self.snat:
            subprocess.run(
                ["nft", "delete", "table", "inet", self._table],
                capture_output=True,
                timeout=10,
                check=False,
            )


EXIT_TABLE = 0x676D
EXIT_RULE_PRIORITY = 5210


class ExitRoute:
    """This host's default route through the mesh to an exit node (`--exit-node NAME`).

    As wg-quick does it: a routing table whose default route is the TUN, used
    by every packet not marked UNDERLAY_MARK (the daemon marks its own
    sockets, so sessions and stream links stay on the underlay), and a rule
    before it that keeps every more specific route of the main table (the
    LAN, the underlay subnets). Stopping removes the rules; the table's
    routes go with the TUN.
    """

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._added: list[list[str]] = []
        self.active = False

    def set_active(self, active: bool) -> None:
        """In force while the chosen exit is approved and reachable; the host's own otherwise."""
        if active == self.active:
            return
        try:
            self.start() if active else self.close()
        except OSError as exc:
            log.error("exit node route: %s", exc)
            return
        if not active:
            log.info("the exit node is gone: the host's own default route is back")

    def start(self) -> None:
        for family in ("-4", "-6"):
            self._ip(
                family, "route", "add", "default", "dev", self.interface, "table", str(EXIT_TABLE)
            )
            self._ip(family, "rule", "add", "table", "main", "suppress_prefixlength", "0",
                     "priority", str(EXIT_RULE_PRIORITY - 1))  # fmt: skip
            self._ip(family, "rule", "add", "not", "fwmark", str(UNDERLAY_MARK), "table",
                     str(EXIT_TABLE), "priority", str(EXIT_RULE_PRIORITY))  # fmt: skip
        self.active = True
        log.info("default route through the mesh's exit node (table %d)", EXIT_TABLE)

    def _ip(self, family: str, *argv: str) -> None:
        result = subprocess.run(["ip", family, *argv], capture_output=True, text=True, timeout=10)
        if result.returncode != 0:
            self.close()
            raise OSError(f"ip {family} {' '.join(argv)}: {result.stderr.strip()}")
        if argv[0] == "rule":
            self._added.append([family, *argv])

    def close(self) -> None:
        for family, *argv in reversed(self._added):
            subprocess.run(
                ["ip", family, "rule", "del", *argv[2:]],
                capture_output=True,
                timeout=10,
                check=False,
            )
        self._added.clear()
        for family in ("-4", "-6"):
            subprocess.run(
                ["ip", family, "route", "flush", "table", str(EXIT_TABLE)],
                capture_output=True, timeout=10, check=False,
            )  # fmt: skip
        self.active = False
