"""Hostile UDP input for a node's port: every message type, wrong sizes, random bytes.

Run inside a namespace as `python -m tests.netns.malformed_datagrams HOST PORT
COUNT SECONDS`: it sends COUNT datagrams spread evenly over SECONDS (paced, so
the test measures robustness, not a flood's CPU cost) and prints how many it sent.
"""

from __future__ import annotations

import random
import socket
import sys
import time
from collections.abc import Iterator

WIREGUARD_SIZES = {1: 148, 2: 92, 3: 64, 4: 32}
"""Well-formed sizes (transport: the empty keepalive) for WireGuard message types 1-4."""
OVERSIZED = (1500, 4096, 65000)


def malformed_datagrams(rng: random.Random) -> Iterator[bytes]:
    """An endless, varied stream of datagrams no real peer would send."""
    while True:
        kind = rng.choice((1, 2, 3, 4, 5))
        size = WIREGUARD_SIZES.get(kind, 64)
        header = bytes((kind, 0, 0, 0))
        shape = rng.randrange(6)
        if shape == 0:  # the right size, random content
            yield header + rng.randbytes(size - 4)
        elif shape == 1:  # truncated, down to the type byte alone
            yield (header + rng.randbytes(size))[: rng.randrange(1, size)]
        elif shape == 2:  # oversized
            yield header + rng.randbytes(rng.choice(OVERSIZED) - 4)
        elif shape == 3:  # nonzero reserved bytes, or a type no one defines
            yield bytes((rng.choice((kind, 0, 6, 127, 255)),)) + rng.randbytes(size - 1)
        elif shape == 4:  # random bytes of random length (the empty datagram too)
            yield rng.randbytes(rng.randrange(0, 300))
        else:  # a transport message for a receiver index that may look plausible
            receiver = rng.choice((0, 1, rng.getrandbits(32))).to_bytes(4, "little")
            counter = rng.getrandbits(64).to_bytes(8, "little")
            yield header + receiver + counter + rng.randbytes(rng.randrange(0, 1400))


def main(argv: list[str]) -> int:
    host, port, count, seconds = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    rng = random.Random(0x6D657368)
    gap = seconds / count
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        for index, datagram in zip(range(count), malformed_datagrams(rng), strict=False):
            try:
                sock.sendto(datagram, (host, port))
                sent += 1
            except OSError:
                pass  # ICMP port unreachable from an earlier datagram, or no buffer space
            pause = start + (index + 1) * gap - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
