"""start_magic_dns / stop: upstreams read before the edit, host restored on stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossipmesh.config import Settings
from gossipmesh.dns.host import DnsIntegrationError, RestoreOutcome
from gossipmesh.dns.service import MagicDns, resolver_config, start_magic_dns
from tests.unit.dns.support import DIG, dig, fake_upstream, run, sample_directory

ORIGINAL = b"search lan\nnameserver 192.0.2.53\n"


@pytest.mark.skipif(DIG is None, reason="dig (Debian dnsutils) is not installed")
def test_start_serves_edits_the_host_and_stop_restores(tmp_path: Path) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_bytes(ORIGINAL)

    async def scenario() -> None:
        async with fake_upstream() as (upstream, _):
            dns = await start_magic_dns(
                sample_directory(),
                mode="auto",
                interface="gmtest0",
                state_dir=tmp_path / "state",
                listen=[("127.0.0.1", 0)],
                upstreams=[upstream],
                resolv_conf=resolv_conf,
                resolved_socket=tmp_path / "no-resolved",
            )
            try:
                assert dns.host.mode == "resolv-conf"
                assert "nameserver 127.0.0.1" in resolv_conf.read_text()
                port = dns.servers[0].port
                assert (await dig(port, "+short", "server.mesh")).split() == ["100.64.1.2"]
                assert (await dig(port, "+short", "www.example.test")).split() == ["192.0.2.1"]
            finally:
                outcome = await dns.stop()
            assert outcome is RestoreOutcome.RESTORED
            assert resolv_conf.read_bytes() == ORIGINAL

    run(scenario())


def test_upstreams_come_from_the_backup_after_a_crash(tmp_path: Path) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_bytes(ORIGINAL)

    async def start() -> MagicDns:
        return await start_magic_dns(
            sample_directory(),
            mode="resolv-conf",
            interface="gmtest0",
            state_dir=tmp_path / "state",
            listen=[("127.0.0.1", 0)],
            resolv_conf=resolv_conf,
            resolved_socket=tmp_path / "no-resolved",
        )

    async def scenario() -> None:
        crashed = await start()
        for server in crashed.servers:  # dies without restoring the host
            await server.close()
        await crashed.forwarder.close()
        again = await start()
        assert again.upstreams == ["192.0.2.53"]
        assert await again.stop() is RestoreOutcome.RESTORED
        assert resolv_conf.read_bytes() == ORIGINAL

    run(scenario())


def test_failures_leave_the_host_alone(tmp_path: Path) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_bytes(ORIGINAL)

    async def scenario() -> None:
        with pytest.raises(DnsIntegrationError, match="cannot listen"):
            await start_magic_dns(
                sample_directory(),
                mode="resolv-conf",
                interface="gmtest0",
                state_dir=tmp_path / "state",
                listen=[("192.0.2.1", 0)],  # not an address of this machine
                resolv_conf=resolv_conf,
            )
        with pytest.raises(DnsIntegrationError, match="not running"):
            await start_magic_dns(
                sample_directory(),
                mode="resolved",
                interface="gmtest0",
                state_dir=tmp_path / "state",
                listen=[("127.0.0.1", 0)],
                resolv_conf=resolv_conf,
                resolved_socket=tmp_path / "no-resolved",
            )
        assert resolv_conf.read_bytes() == ORIGINAL

    run(scenario())


def test_resolver_config_follows_settings() -> None:
    config = resolver_config(Settings(dns_suffix="corp"))
    assert config.suffix == "corp"
    assert str(config.ipv4_network) == "100.64.0.0/10"
