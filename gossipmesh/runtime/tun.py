"""The TUN device: open, address, route, bring up, close. No protocol logic.

pytun opens the device (IFF_TUN | IFF_NO_PI: every read is one bare IP
packet); its address setter knows only IPv4, so addresses, MTU, routes and
link state go through netlink (pyroute2) for both families. The fd is set
non-blocking so an asyncio reader can drain it until EAGAIN with os.read.

pyroute2's synchronous IPRoute runs an asyncio loop of its own, so from
inside a running loop call these in a thread: `await asyncio.to_thread(open_tun, ...)`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from types import TracebackType

import pytun
from pyroute2 import IPRoute

IFA_F_NODAD = 0x02
"""Skip IPv6 duplicate address detection: the address is ours by construction."""

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TunError(OSError):
    """The TUN device could not be created or configured; the message says which step."""


class TunDevice:
    """An open, configured TUN device. Closing the fd removes the device."""

    def __init__(self, name: str, mtu: int) -> None:
        try:
            self._device = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        except (pytun.Error, OSError) as exc:
            if "busy" in str(exc).lower():
                raise TunError(
                    f"TUN device {name!r} is already in use (another gossipmesh up?); "
                    "pick another with --interface"
                ) from exc
            raise TunError(f"cannot open TUN device {name!r}: {exc}") from exc
        self.name: str = self._device.name
        self.fd: int = self._device.fileno()
        self.mtu = mtu
        os.set_blocking(self.fd, False)
        self._closed = False

    def configure(self, addresses: Iterable[Interface], routes: Iterable[Network] = ()) -> None:
        """Set the MTU, add addresses, bring the link up and add routes through it."""
        try:
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=self.name)[0]
                ipr.link("set", index=index, mtu=self.mtu)
                for interface in addresses:
                    extra = {"flags": IFA_F_NODAD} if interface.version == 6 else {}
                    ipr.addr(
                        "add",
                        index=index,
                        address=str(interface.ip),
                        prefixlen=interface.network.prefixlen,
                        **extra,
                    )
                ipr.link("set", index=index, state="up")
                for network in routes:
                    ipr.route(
                        "add",
                        dst=str(network.network_address),
                        dst_len=network.prefixlen,
                        oif=index,
                        family=10 if network.version == 6 else 2,
                    )
        except Exception as exc:  # pyroute2 raises NetlinkError and others
            raise TunError(f"cannot configure {self.name}: {exc}") from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._device.close()

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_tun(
    name: str,
    mtu: int,
    addresses: Iterable[Interface] = (),
    routes: Iterable[Network] = (),
) -> TunDevice:
    """Open and configure a TUN device; on any failure nothing is left behind."""
    device = TunDevice(name, mtu)
    try:
        device.configure(addresses, routes)
    except BaseException:
        device.close()
        raise
    return device
