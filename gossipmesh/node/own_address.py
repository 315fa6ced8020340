"""This node's own claims: its IPv4 (counter and hold time) and its name's claim time.

The driver reads the saved state (address.json) and hands it in; every
change comes back out as a `SaveAddressState` request, so a node keeps
its IPv4 and its name's seniority across restarts (docs/addressing.md).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from gossipmesh.addressing import first_ipv4, ipv4_for
from gossipmesh.identity import Identity


class OwnAddress:
    """The IPv4 counter and claim times this node asserts in its records."""

    def __init__(
        self,
        identity: Identity,
        network: ipaddress.IPv4Network,
        name: str | None,
        saved: object,
        wall: float,
    ) -> None:
        self._identity = identity
        self._network = network
        self._name = name or ""
        now = int(wall)
        if (
            isinstance(saved, dict)
            and saved.get("public_key") == identity.public_key.hex()
            and saved.get("network") == str(network)
            and isinstance(saved.get("counter"), int)
            and ipv4_for(identity.public_key, saved["counter"], network) is not None
        ):
            self.counter: int = saved["counter"]
            self.held_since = int(saved.get("held_since", now))
            if saved.get("name") == self._name:
                self.name_claimed_since = int(saved.get("name_claimed_since", now))
            else:
                self.name_claimed_since = now
        else:
            self.counter, _ = first_ipv4(identity.public_key, network)
            self.held_since = now
            self.name_claimed_since = now
        self.ipv4 = self._derive()

    def _derive(self) -> ipaddress.IPv4Address:
        address = ipv4_for(self._identity.public_key, self.counter, self._network)
        assert address is not None
        return address

    def move_to(self, counter: int, wall: float) -> ipaddress.IPv4Address:
        """Take the counter the collision rule gave us; the hold time starts again."""
        self.counter = counter
        self.held_since = int(wall)
        self.ipv4 = self._derive()
        return self.ipv4

    def state(self) -> dict[str, Any]:
        """What address.json holds."""
        return {
            "public_key": self._identity.public_key.hex(),
            "network": str(self._network),
            "counter": self.counter,
            "held_since": self.held_since,
            "name": self._name,
            "name_claimed_since": self.name_claimed_since,
        }
