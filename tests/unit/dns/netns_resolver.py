"""Run MagicDNS inside a network namespace for test_glibc_netns (python -m ... NS STATE_DIR).

Serves the sample mesh on 100.100.100.100:53 in resolv-conf mode against the
namespace's /etc/netns/NS/resolv.conf, prints "ready", restores on SIGTERM
and prints the outcome.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from gossipmesh.dns.service import start_magic_dns
from tests.unit.dns.support import sample_directory


async def main(namespace: str, state_dir: Path) -> None:
    dns = await start_magic_dns(
        sample_directory(),
        mode="resolv-conf",
        interface="lo",
        state_dir=state_dir,
        listen=[("100.100.100.100", 53)],
        upstreams=[],
        resolv_conf=Path("/etc/netns") / namespace / "resolv.conf",
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    print((await dns.stop()).value, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
