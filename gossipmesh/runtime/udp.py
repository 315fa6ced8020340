"""The node's one UDP socket: sessions, relay and DHT share it."""

from __future__ import annotations

import contextlib
import errno
import socket

from gossipmesh.errors import UsageError

SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
"""Large kernel buffers absorb bursts while Python is busy; the kernel caps them at rmem_max."""


def open_udp_socket(port: int, host: str = "0.0.0.0") -> socket.socket:
    """A non-blocking UDP socket bound to `port`, with a clear error when it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"UDP port {port} is already in use (another gossipmesh up?); "
                "choose another with --listen"
            ) from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"not allowed to bind UDP port {port}") from None
        raise UsageError(f"cannot bind UDP port {port}: {exc.strerror}") from None
    sock.setblocking(False)
    mark_socket(sock)
    return sock


UNDERLAY_MARK = 0x676D
"""fwmark on every socket of the daemon: with an exit node in use, the policy rule
`not fwmark UNDERLAY_MARK -> the TUN` keeps the daemon's own traffic on the underlay."""


def mark_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError, AttributeError):  # needs CAP_NET_ADMIN; tests may lack it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, UNDERLAY_MARK)
