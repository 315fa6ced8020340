"""Session-layer throughput beside the raw cipher: how much the layer above AEAD costs.

    .venv/bin/python benchmarks/sessions.py [--packets N] [--rounds N] [--handshakes N]

Prints handshakes per second (initiation, response and both sides' key
derivation, in one process), and transport encrypt/decrypt throughput in MB/s
for 1,400-byte packets through `SessionManager.encrypt_for` / `open_transport`,
beside `cryptography`'s ChaCha20Poly1305 called on the same buffers. The ratio
is the session layer's overhead (header, counter, padding, window, timers).
"""

from __future__ import annotations

import argparse
import os
import random
import time

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gossipmesh.session.crypto import generate_keypair
from gossipmesh.session.manager import SessionManager

PACKET_SIZE = 1400


def make_pair(seed: int) -> tuple[SessionManager, SessionManager]:
    rng = random.Random(seed)
    a = SessionManager(generate_keypair(rng.randbytes)[0], random_bytes=rng.randbytes)
    b = SessionManager(generate_keypair(rng.randbytes)[0], random_bytes=rng.randbytes)
    a.add_peer(b.static_public, 0.0, endpoint="B")
    b.add_peer(a.static_public, 0.0, endpoint="A")
    return a, b


def handshake(a: SessionManager, b: SessionManager, now: float) -> None:
    a.initiate_handshake(b.static_public, now)
    ((initiation, _),) = a.datagrams_to_send(now)
    b.receive_datagram(initiation, "A", now)
    ((response, _),) = b.datagrams_to_send(now)
    a.receive_datagram(response, "B", now)
    a.datagrams_to_send(now)  # the confirming keepalive


def bench_handshakes(count: int) -> float:
    a, b = make_pair(1)
    start = time.perf_counter()
    for step in range(count):
        handshake(a, b, step * 10.0)  # 10 s apart: past the rate limits
    elapsed = time.perf_counter() - start
    assert a.stats.handshakes_completed == count
    return count / elapsed


def bench_flood(count: int) -> tuple[float, float]:
    """Per-message cost of junk initiations: bad mac1, and valid mac1 under load.

    The second is what a flood from someone who knows our public key costs:
    one cookie reply each, no Diffie-Hellman.
    """
    a, b = make_pair(4)
    b_loaded = SessionManager(
        generate_keypair(random.Random(5).randbytes)[0], under_load_threshold=0
    )
    b_loaded.add_peer(a.static_public, 0.0)
    a.add_peer(b_loaded.static_public, 0.0, endpoint="L")
    junk = b"\x01\x00\x00\x00" + bytes(144)
    start = time.perf_counter()
    for _ in range(count):
        b.receive_datagram(junk, "flood", 1.0)
    bad_mac1 = (time.perf_counter() - start) / count
    a.initiate_handshake(b_loaded.static_public, 0.0)
    ((initiation, _),) = a.datagrams_to_send(0.0)
    start = time.perf_counter()
    for _ in range(count):
        b_loaded.receive_datagram(initiation, "flood", 1.0)
    cookie = (time.perf_counter() - start) / count
    assert b_loaded.stats.cookie_replies_sent == count
    return bad_mac1, cookie


def _one_round(count: int, seed: int) -> dict[str, float]:
    """Seconds per packet for the four operations, one batch of `count` packets."""
    packet = bytes([0x45, 0]) + PACKET_SIZE.to_bytes(2, "big") + os.urandom(PACKET_SIZE - 4)
    a, b = make_pair(seed)
    handshake(a, b, 0.0)
    peer = a.peer(b.static_public)
    assert peer is not None
    encrypt_for = a.encrypt_for
    start = time.perf_counter()
    datagrams = [encrypt_for(peer, packet, 1.0) for _ in range(count)]
    session_encrypt = time.perf_counter() - start

    open_transport = b.open_transport
    start = time.perf_counter()
    for datagram in datagrams:
        open_transport(datagram, "A", 1.0)  # type: ignore[arg-type]
    session_decrypt = time.perf_counter() - start
    assert b.stats.transport_received == count, b.stats.refusals()

    cipher = ChaCha20Poly1305(os.urandom(32))
    encrypt, decrypt = cipher.encrypt, cipher.decrypt
    nonces = [b"\x00" * 4 + n.to_bytes(8, "little") for n in range(count)]
    start = time.perf_counter()
    ciphertexts = [encrypt(nonce, packet, None) for nonce in nonces]
    raw_encrypt = time.perf_counter() - start
    start = time.perf_counter()
    for nonce, ciphertext in zip(nonces, ciphertexts, strict=True):
        decrypt(nonce, ciphertext, None)
    raw_decrypt = time.perf_counter() - start
    return {
        "session_encrypt": session_encrypt / count,
        "session_decrypt": session_decrypt / count,
        "raw_encrypt": raw_encrypt / count,
        "raw_decrypt": raw_decrypt / count,
    }


def bench_transport(count: int, rounds: int) -> dict[str, float]:
    """Best of `rounds` batches (timeit's rule: the minimum is the least disturbed)."""
    results = [_one_round(count, seed) for seed in range(10, 10 + rounds)]
    return {key: min(result[key] for result in results) for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packets", type=int, default=20_000, help="per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--handshakes", type=int, default=2_000)
    arguments = parser.parse_args()

    rate = bench_handshakes(arguments.handshakes)
    print(f"handshakes: {rate:,.0f}/s (both sides, one core; {1e6 / rate:,.0f} µs each)")
    bad_mac1, cookie = bench_flood(arguments.handshakes)
    print(
        f"flood: bad-mac1 initiation refused in {bad_mac1 * 1e6:.1f} µs; under load, "
        f"a valid-mac1 initiation without cookie answered by a cookie reply in "
        f"{cookie * 1e6:.1f} µs ({1 / cookie:,.0f}/s)"
    )
    figures = bench_transport(arguments.packets, arguments.rounds)
    for direction in ("encrypt", "decrypt"):
        session, raw = figures[f"session_{direction}"], figures[f"raw_{direction}"]
        print(
            f"transport {direction} {PACKET_SIZE} B: "
            f"session {PACKET_SIZE / session / 1e6:,.0f} MB/s ({session * 1e6:.2f} µs/packet), "
            f"raw AEAD {PACKET_SIZE / raw / 1e6:,.0f} MB/s ({raw * 1e6:.2f} µs/packet), "
            f"session/raw throughput {raw / session:.2f}"
        )


if __name__ == "__main__":
    main()
