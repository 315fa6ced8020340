"""The asyncio runtime: the one UDP socket, TUN, timers, control socket. No protocol decisions."""
