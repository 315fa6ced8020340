"""A certified member gone bad: real handshake initiations to one node, as fast as it can.

Run inside a namespace as `python -m tests.netns.handshake_flood KEY SECRET
TARGET_PUBLIC_KEY HOST PORT COUNT SECONDS`. Every initiation is a fresh,
valid one from the member's own key (mac1 correct, a new ephemeral key),
so the target cannot tell it from a real peer's by its bytes alone; only
its rate gives it away. Stops after COUNT messages or SECONDS, whichever
comes first, and prints how many it sent.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from gossipmesh.identity import decode_public_key, load_key_file, x25519_public_from_ed25519
from gossipmesh.membership import NetworkSecret
from gossipmesh.session.manager import SessionManager


def main(argv: list[str]) -> int:
    key, secret, target, host = argv[0], argv[1], argv[2], argv[3]
    port, count, seconds = int(argv[4]), int(argv[5]), float(argv[6])
    identity = load_key_file(key)
    sessions = SessionManager.for_identity(
        identity, NetworkSecret.from_file(Path(secret)), wall_clock_offset=time.time()
    )
    peer_key = x25519_public_from_ed25519(decode_public_key(target))
    sent = 0
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while sent < count and time.monotonic() - start < seconds:
            now = time.monotonic() - start
            sessions.remove_peer(peer_key)  # a new peer each time: a new initiation at once
            sessions.add_peer(peer_key, now, endpoint=(host, port))
            sessions.initiate_handshake(peer_key, now)
            for datagram, _ in sessions.datagrams_to_send(now):
                sock.sendto(datagram, (host, port))
                sent += 1
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
