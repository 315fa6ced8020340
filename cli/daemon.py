"""`gossipmesh up` and the commands that talk to a running daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gossipmesh.cli.instance import instance_options, state_dir_for
from gossipmesh.cli.tables import echo_fields, echo_json, echo_table
from gossipmesh.config import DEFAULT_INTERFACE, DNS_MODES, LOG_FORMATS, LOG_LEVELS, build_settings
from gossipmesh.errors import UsageError
from gossipmesh.runtime.control import call_daemon


@click.command()
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Node key file; created (0600) if missing.",
)
@click.option(
    "--bootstrap",
    "-b",
    multiple=True,
    metavar="HOST:PORT",
    help="A node to join through (repeatable); later runs rejoin from cached peers.",
)
@click.option("--listen", type=int, help="UDP port for sessions and the DHT [default: 51821].")
@click.option(
    "--network-secret",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the network secret; every member needs the same one.",
)
@click.option(
    "--network",
    type=click.Path(dir_okay=False, path_type=Path),
    help="network.json of a network with an authority (gossipmesh network init): only "
    "nodes with its certificates are admitted, and its signed policy is enforced.",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="This node's certificate (gossipmesh cert sign); needed with --network.",
)
@click.option(
    "--name",
    help="The DNS label to claim (NAME.mesh); with --network the certificate's name.",
)
@click.option("--interface", "-i", help=f"TUN device name [default: {DEFAULT_INTERFACE}].")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Control socket, peer cache, address [default: /var/lib/gossipmesh/INTERFACE].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="TOML file with any of these settings; flags override it.",
)
@click.option(
    "--dns",
    type=click.Choice(DNS_MODES),
    help="How to wire .mesh names into the host resolver [default: auto].",
)
@click.option(
    "--stream-links/--no-stream-links",
    default=None,
    help="Carry bulk traffic to other gossipmesh nodes over one TCP connection each, in "
    "64 KiB units, on the UDP port's number (TCP); UDP stays the fallback and the only "
    "path to stock WireGuard peers [default: on].",
)
@click.option(
    "--advertise-routes",
    metavar="CIDR,...",
    help="Subnets behind this host that it routes for, e.g. 10.1.0.0/24,fd12::/64. Others "
    "install them only if this node's certificate grants them (cert sign --route).",
)
@click.option(
    "--snat/--no-snat",
    default=None,
    help="Masquerade mesh traffic into the advertised subnets, so their hosts need no "
    "route back to the mesh [default: off].",
)
@click.option(
    "--advertise-exit-node/--no-advertise-exit-node",
    default=None,
    help="Offer this host as the way out to other networks (needs a certificate made "
    "with cert sign --exit-node); traffic leaving through it is masqueraded.",
)
@click.option(
    "--exit-node",
    metavar="NAME|off",
    help="Send everything outside the mesh through this exit node; the underlay and "
    "the host's own LAN routes stay as they are [default: off].",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="[default: info]")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    help="human lines or JSON lines [default: human].",
)
def up(config_file: Path | None, **flags: Any) -> None:
    """Join the mesh and run in the foreground until SIGINT or SIGTERM.

    Needs root (or CAP_NET_ADMIN) and /dev/net/tun. Brings up a TUN device with
    this node's IPv4 and IPv6 and routes for the mesh ranges, and removes them
    on exit.

    \b
    First node:   gossipmesh up --key node.key --network-secret net.secret
    Others:       gossipmesh up --key node.key --network-secret net.secret \\
                      --bootstrap FIRST-NODE:51821
    With an authority (docs/trust.md):
                  gossipmesh up --key node.key --network network.json \\
                      --cert node.cert --bootstrap FIRST-NODE:51821
    """
    from gossipmesh.runtime.daemon import run_daemon

    flags["bootstrap"] = tuple(flags["bootstrap"]) or None
    settings = build_settings(config_file, flags)
    run_daemon(settings)


@click.command()
@instance_options
def down(interface: str, state_dir: Path | None) -> None:
    """Stop the running daemon: it removes its device, routes and DNS changes."""
    call_daemon(state_dir_for(interface, state_dir).control_socket, "down")
    click.echo("stopping")


@click.command()
@instance_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(interface: str, state_dir: Path | None, as_json: bool) -> None:
    """This node: key, addresses, name, uptime and counters."""
    result = call_daemon(state_dir_for(interface, state_dir).control_socket, "status")
    if as_json:
        echo_json(result)
        return
    counters = result.pop("counters", {})
    subnets = result.pop("subnets", [])
    if subnets:
        result["subnets"] = ", ".join(
            f"{s['prefix']} ({s['status']}, {s['router']})" for s in subnets
        )
    links = result.pop("stream_links", None)
    if isinstance(links, dict):
        state = "on" if links.get("enabled") else "off"
        result["stream_links"] = f"{state}, {links.get('up', 0)} up" + "".join(
            f", {key.replace('_', ' ')} {value}"
            for key, value in links.items()
            if key not in ("enabled", "up") and value
        )
    echo_fields(result)
    nonzero = {key: value for key, value in counters.items() if value}
    if nonzero:
        click.echo("counters (non-zero; --json shows all):")
        for key in sorted(nonzero):
            click.echo(f"  {key}: {nonzero[key]}")


@click.command()
@instance_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def peers(interface: str, state_dir: Path | None, as_json: bool) -> None:
    """Known nodes: direct or relayed (through whom), neighbour, stream link, RTT, bytes.

    ROLE is "neighbour" for the few peers (at most max_neighbours) this node
    keeps routing links with, "passive" for other peers it reaches directly,
    "relayed-session" for a live session over relays (its keys are zeroed
    after 540 s idle).
    GROUPS are those the peer's certificate grants (networks with an authority).
    """
    result = call_daemon(state_dir_for(interface, state_dir).control_socket, "peers")
    if as_json:
        echo_json(result)
        return
    for row in result:  # a stream link carries this peer's bulk traffic over TCP
        row["stream_link"] = "tcp" if row.get("stream_link") else None
        row["groups"] = ",".join(row.get("groups") or []) or None
    echo_table(
        result,
        [
            ("name", "name"),
            ("ipv4", "ipv4"),
            ("path", "path"),
            ("via", "via"),
            ("role", "role"),
            ("groups", "groups"),
            ("endpoint", "endpoint"),
            ("stream_link", "link"),
            ("rtt_ms", "rtt ms"),
            ("last_handshake_s", "handshake s ago"),
            ("rx_bytes", "rx"),
            ("tx_bytes", "tx"),
        ],
    )


@click.command()
@instance_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def routes(interface: str, state_dir: Path | None, as_json: bool) -> None:
    """The routing table: destination, next hop, hops and metric; then routed subnets.

    A subnet another node advertises is used only when its certificate grants
    it (networks with an authority); otherwise it is listed as refused.
    """
    socket_path = state_dir_for(interface, state_dir).control_socket
    result = call_daemon(socket_path, "routes")
    if as_json:  # the routes alone, as before; `status --json` has "subnets"
        echo_json(result)
        return
    subnets = call_daemon(socket_path, "subnets")
    echo_table(
        result,
        [
            ("destination", "destination"),
            ("next_hop", "next hop"),
            ("hops", "hops"),
            ("metric", "metric"),
            ("path", "path"),
        ],
    )
    if subnets:
        click.echo("")
        echo_table(subnets, [("prefix", "subnet"), ("router", "router"), ("status", "status")])


@click.command()
@instance_options
@click.argument("target")
@click.option("--count", "-c", default=3, show_default=True, help="Number of probes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ping(interface: str, state_dir: Path | None, target: str, count: int, as_json: bool) -> None:
    """Mesh-level ping of NAME or ADDRESS: round-trip time and the path taken."""
    result = call_daemon(
        state_dir_for(interface, state_dir).control_socket,
        "ping",
        {"target": target, "count": count},
        timeout=10.0 + 3.0 * count,
    )
    if as_json:
        echo_json(result)
        return
    for probe in result["probes"]:
        rtt = "timeout" if probe["rtt_ms"] is None else f"{probe['rtt_ms']:.2f} ms"
        click.echo(f"{result['target']}: {rtt} via {probe['path']}")


@click.command()
@instance_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def resolve(interface: str, state_dir: Path | None, name: str, as_json: bool) -> None:
    """Ask the running daemon's resolver for NAME (e.g. server.mesh)."""
    result = call_daemon(
        state_dir_for(interface, state_dir).control_socket, "resolve", {"name": name}
    )
    if as_json:
        echo_json(result)
        return
    echo_fields(result)


@click.command("wg-config")
@instance_options
@click.argument("name")
@click.option(
    "--private-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The device's private key (from `wg genkey`), to fill in PrivateKey.",
)
@click.option(
    "--endpoint",
    metavar="HOST:PORT",
    help="Where the device reaches this node [default: the node's first advertised endpoint].",
)
def wg_config(
    interface: str,
    state_dir: Path | None,
    name: str,
    private_key_file: Path | None,
    endpoint: str | None,
) -> None:
    """Print a wg-quick file for leaf NAME, a stock WireGuard device of this node.

    \b
    List the device in the daemon's config file first, then restart it:
      [[leaf]]
      name = "phone"
      public_key = "..."        # wg pubkey < phone.key
    The device gets mesh addresses derived from its key (or `addresses`),
    reaches every mesh node through this one, and other nodes reach it.
    """
    info = call_daemon(
        state_dir_for(interface, state_dir).control_socket, "wg-config", {"name": name}
    )
    private_key = "REPLACE-WITH-THE-DEVICE-PRIVATE-KEY"
    if private_key_file is not None:
        try:
            private_key = private_key_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"{private_key_file}: {exc.strerror}") from None
    lines = [
        f"# wg-quick config for leaf {info['leaf']!r} of a gossipmesh node",
        "[Interface]",
        f"PrivateKey = {private_key}",
        f"Address = {', '.join(info['addresses'])}",
        f"MTU = {info['mtu']}",
    ]
    if info["dns"]:
        lines.append(f"DNS = {', '.join(info['dns'])}")
    lines += [
        "",
        "[Peer]",
        f"PublicKey = {info['node_public_key']}",
        f"PresharedKey = {info['preshared_key']}",
        f"AllowedIPs = {', '.join(info['allowed_ips'])}",
    ]
    endpoints = [endpoint] if endpoint else info["endpoints"]
    if endpoints:
        lines.append(f"Endpoint = {endpoints[0]}")
        lines += [
            f"# another endpoint of this node: {e}" for e in info["endpoints"] if e != endpoints[0]
        ]
    lines.append("PersistentKeepalive = 25")
    click.echo("\n".join(lines))


@click.command()
@instance_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def netcheck(interface: str, state_dir: Path | None, as_json: bool) -> None:
    """This node's NAT behaviour as its peers see it.

    Asks up to eight known peers at which address and port they see this
    node: whether UDP works, the public address, and whether the NAT maps the
    port the same way for every destination (endpoint-independent: direct
    paths can be punched) or not (symmetric: traffic to such peers is relayed).
    """
    result = call_daemon(
        state_dir_for(interface, state_dir).control_socket, "netcheck", timeout=20.0
    )
    if as_json:
        echo_json(result)
        return
    answers = result.pop("answers")
    result["public_addresses"] = ", ".join(result["public_addresses"]) or "-"
    result["host_endpoints"] = ", ".join(result["host_endpoints"]) or "-"
    echo_fields(result)
    for answer in answers:
        click.echo(f"  {answer['peer']} sees this node as {answer['sees_us_as']}")


DAEMON_COMMANDS = [up, down, status, peers, routes, ping, resolve, wg_config, netcheck]
