"""A small internet of namespaces: one public segment, private sites behind Linux NATs.

The public segment is the `MeshLab`'s bridge (in a namespace of its own),
addressed from 203.0.113.0/24 (TEST-NET-3), so nothing leaves the lab. A
public node plugs straight into it. A private site is a node namespace with
10.S.0.2/24 behind a router namespace: the router's `wan` is on the public
bridge, its `lan` is a veth to the node, IPv4 forwarding is on in the router
namespace only, and nftables does the NAT:

- `masquerade`: Linux keeps the source port where it can (endpoint-independent
  mapping), and lets in only replies from the address and port it sent to;
- `masquerade random`: a new random port per destination (symmetric NAT);
- UDP blocked: `masquerade`, and the router's forward chain drops all UDP.

Routers also run the stateful input filter that every home router has:
packets from the internet to the router itself are accepted only as replies.
Without it, the unsolicited probe of a hole-punching peer creates a conntrack
entry at the router (for delivery to its own closed port) that takes the
exact port the node's outbound mapping wants; masquerade then picks another
port and punching fails (`router_firewall=False` builds that router; see
docs/nat.md).

    with NetnsLab() as netns:
        internet = SmallInternet(netns, tmp_path, settings={"timer_scale": 4})
        hub = internet.add_public_node("hub")
        alpha = internet.add_private_node("alpha", Nat.MASQUERADE)
        hub.start()
        alpha.start([hub])
        alpha_router = internet.router_of(alpha)
        alpha_router.flush_conntrack()

Everything lives in the `NetnsLab`, which removes it at teardown.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.mesh_lab import DaemonNode, MeshLab, require_daemon_lab
from tests.support.netns import Namespace, NetnsLab

PUBLIC_NETWORK = "203.0.113."
"""TEST-NET-3: the lab's internet."""
PUBLIC_PREFIX_LENGTH = 24
FIRST_ROUTER_HOST = 1
FIRST_PUBLIC_NODE_HOST = 100


def require_nat_lab() -> None:
    """Skip unless the daemon lab works and nftables and conntrack are installed."""
    require_daemon_lab("ping", "nft", "conntrack")


class Nat(enum.Enum):
    """What stands between a node and the public segment."""

    NONE = "no NAT"
    MASQUERADE = "masquerade"
    RANDOM = "masquerade random"
    UDP_BLOCKED = "UDP dropped by the router"


@dataclass
class Router:
    """A NAT router namespace: `wan` on the public segment, `lan` toward one node."""

    namespace: Namespace
    nat: Nat
    wan: str
    wan_address: str
    lan_address: str

    def flush_conntrack(self) -> None:
        """Forget every NAT mapping, as a router reboot would."""
        self.namespace.run(["conntrack", "-F"])

    def udp_mappings(self) -> str:
        """`conntrack -L -p udp` output, for assertions and failure messages."""
        return self.namespace.run(["conntrack", "-L", "-p", "udp"]).stdout

    def ruleset(self) -> str:
        return self.namespace.run(["nft", "list", "ruleset"]).stdout


def router_rules(nat: Nat, wan: str, *, firewall: bool) -> str:
    """The router's nftables ruleset (one table for NAT, one for filtering)."""
    masquerade = "masquerade random" if nat is Nat.RANDOM else "masquerade"
    rules = f"""
table ip gmnat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{wan}" {masquerade}
    }}
}}
table inet gmfilter {{
    chain input {{
        type filter hook input priority filter; policy accept;
        {f'iifname "{wan}" ct state != {{ established, related }} drop' if firewall else ""}
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        {"meta l4proto udp drop" if nat is Nat.UDP_BLOCKED else ""}
    }}
}}
"""
    return rules


class SmallInternet:
    """Daemon nodes on a public segment or behind their own NAT routers."""

    def __init__(
        self,
        netns: NetnsLab,
        directory: Path,
        *,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.netns = netns
        self.mesh = MeshLab(netns, directory, settings=settings)
        self.routers: dict[str, Router] = {}
        self._sites = 0
        self._public_hosts = 0

    def _public_address(self, host: int) -> str:
        return f"{PUBLIC_NETWORK}{host}"

    def _register(self, name: str, namespace: Namespace, underlay: str) -> DaemonNode:
        directory = self.mesh.directory / name
        directory.mkdir()
        node = DaemonNode(self.mesh, name, namespace, underlay, directory)
        self.mesh.nodes.append(node)
        return node

    def add_public_node(self, name: str) -> DaemonNode:
        """A node with a public address on the segment (reachable by everyone)."""
        address = self._public_address(FIRST_PUBLIC_NODE_HOST + self._public_hosts)
        self._public_hosts += 1
        namespace = self.netns.namespace(name[:4])
        self.mesh.bridge.attach(namespace, f"{address}/{PUBLIC_PREFIX_LENGTH}")
        return self._register(name, namespace, address)

    def add_node(
        self, name: str, nat: Nat, *, router_firewall: bool = True, subnet: int | None = None
    ) -> DaemonNode:
        """A public node for `Nat.NONE`, else a private one behind a router of that kind."""
        if nat is Nat.NONE:
            return self.add_public_node(name)
        return self.add_private_node(name, nat, router_firewall=router_firewall, subnet=subnet)

    def add_private_node(
        self, name: str, nat: Nat, *, router_firewall: bool = True, subnet: int | None = None
    ) -> DaemonNode:
        """A node at 10.S.0.2/24 behind its own router of kind `nat`.

        S is the site's number unless `subnet` is given: two sites with the same
        `subnet` use the same private addresses, as two homes often do.
        """
        if nat is Nat.NONE:
            raise ValueError("a private node needs a NAT; use add_public_node")
        self._sites += 1
        site = self._sites
        wan_address = self._public_address(FIRST_ROUTER_HOST + site - 1)
        lan = site if subnet is None else subnet
        lan_router, lan_node = f"10.{lan}.0.1", f"10.{lan}.0.2"
        router_ns = self.netns.namespace(f"r{name[:3]}")
        node_ns = self.netns.namespace(name[:4])
        wan = self.mesh.bridge.attach(router_ns, f"{wan_address}/{PUBLIC_PREFIX_LENGTH}")
        self.netns.veth(router_ns, node_ns, f"{lan_router}/24", f"{lan_node}/24")
        node_ns.run(["ip", "route", "add", "default", "via", lan_router])
        router_ns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        rules = self.mesh.directory / f"{name}-router.nft"
        rules.write_text(router_rules(nat, wan, firewall=router_firewall))
        router_ns.run(["nft", "-f", str(rules)])
        node = self._register(name, node_ns, lan_node)
        self.routers[name] = Router(router_ns, nat, wan, wan_address, lan_router)
        return node

    def router_of(self, node: DaemonNode) -> Router:
        return self.routers[node.name]

    def public_address_of(self, node: DaemonNode) -> str:
        """The address other nodes see: the router's for a private node."""
        router = self.routers.get(node.name)
        return node.underlay if router is None else router.wan_address

    def diagnostics(self) -> str:
        """Logs of every node and every router's UDP mappings, for failure messages."""
        mappings = "\n".join(
            f"=== conntrack at {name}'s router\n{router.udp_mappings()}"
            for name, router in self.routers.items()
        )
        return f"{self.mesh.logs()}\n{mappings}"
