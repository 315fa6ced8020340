"""WireGuard-compatible sessions: handshake, transport, anti-replay, timers (sans-IO)."""
