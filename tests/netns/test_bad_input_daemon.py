"""Garbage at a node's UDP port disturbs neither the node nor the mesh around it.

A namespace on the same bridge, running no daemon, sends thousands of
malformed datagrams of every message type (1-5: right size with random
content, truncated, oversized, random bytes) at charlie's port while alpha
pings bravo; afterwards charlie is still up and still reachable.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.support.mesh_lab import (
    MESH_PORT,
    UNDERLAY_PREFIX,
    MeshLab,
    ping_until,
    require_daemon_lab,
)
from tests.support.netns import NetnsLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

REPOSITORY = Path(__file__).resolve().parents[2]
GARBAGE_COUNT = 6000
GARBAGE_SECONDS = 6.0
PINGS = 120
PING_INTERVAL = 0.05
MIN_ANSWERED = PINGS - 2
"""A lost echo or two is scheduling noise on a loaded 2-core CI runner; more is a failure."""
REFUSALS = (
    "unknown_datagrams",
    "session_unknown_type",
    "session_malformed",
    "session_bad_mac1",
    "session_unknown_receiver_index",
    "dht_datagrams_dropped",
)
"""Counters (from `status --json`) that count datagrams the node refused."""


def test_malformed_datagrams_do_not_disturb_traffic_or_the_node(tmp_path: Path) -> None:
    require_daemon_lab("ping")
    with NetnsLab() as netns:
        mesh = MeshLab(netns, tmp_path)
        alpha, bravo, charlie = mesh.add_nodes("alpha", "bravo", "charlie")
        attacker = netns.namespace("bad")
        mesh.bridge.attach(attacker, f"{UNDERLAY_PREFIX}250/24")
        mesh.start_all()
        mesh.wait_full_mesh()
        ping_until(alpha, bravo.ipv4)
        ping_until(alpha, charlie.ipv4)
        dropped_before = charlie.status()["counters"]

        stream = alpha.namespace.start(
            ["ping", "-c", str(PINGS), "-i", str(PING_INTERVAL), "-W", "1", bravo.ipv4]
        )
        sender = attacker.run(
            [sys.executable, "-m", "tests.netns.malformed_datagrams", charlie.underlay,
             str(MESH_PORT), str(GARBAGE_COUNT), str(GARBAGE_SECONDS)],
            env={"PYTHONPATH": str(REPOSITORY)},
            timeout=GARBAGE_SECONDS + 20,
        )  # fmt: skip
        output, _ = stream.communicate(timeout=PINGS * PING_INTERVAL + 20)
        assert int(sender.stdout) > GARBAGE_COUNT * 0.9, sender

        answered = re.search(r"(\d+) received", output)
        assert answered is not None, output
        assert int(answered.group(1)) >= MIN_ANSWERED, output
        assert charlie.running(), mesh.logs()
        ping_until(alpha, charlie.ipv4, 10)
        ping_until(charlie, bravo.ipv6, 10)
        after = charlie.status()["counters"]
        refused = sum(after[key] - dropped_before.get(key, 0) for key in REFUSALS)
        assert refused >= int(sender.stdout) * 0.9, {key: after[key] for key in REFUSALS}
