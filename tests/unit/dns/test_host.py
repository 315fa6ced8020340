"""Host resolver integration against files in a temporary directory and a fake resolvectl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from gossipmesh.dns.host import (
    BACKUP_NAME,
    DnsIntegrationError,
    NoHostDns,
    ResolvConfEditor,
    ResolvedSplitDns,
    RestoreOutcome,
    choose_mode,
    host_dns,
    upstreams_before_gossipmesh,
)

ORIGINAL = (
    b"# from DHCP\nsearch lan example.org\n"
    b"nameserver 192.0.2.53\nnameserver 2001:db8::53\noptions edns0 timeout:2\n"
)


@pytest.fixture
def resolv_conf(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "resolv.conf"
    path.parent.mkdir()
    path.write_bytes(ORIGINAL)
    path.chmod(0o640)
    return path


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


class FakeResolvectl:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str]) -> None:
        self.calls.append(list(argv))
        if self.fail_on is not None and self.fail_on in argv:
            raise subprocess.CalledProcessError(1, list(argv), stderr=b"Link not found")


def test_managed_edit_and_exact_restore(resolv_conf: Path, state_dir: Path) -> None:
    editor = ResolvConfEditor(resolv_conf, state_dir, ["100.100.100.100"])
    editor.apply()
    text = resolv_conf.read_text()
    assert "nameserver 100.100.100.100" in text
    assert "192.0.2.53" not in text
    assert "search lan example.org" in text and "options edns0 timeout:2" in text
    assert resolv_conf.stat().st_mode & 0o777 == 0o640
    assert (state_dir / BACKUP_NAME).exists()
    assert editor.original_upstreams() == ["192.0.2.53", "2001:db8::53"]
    assert editor.restore() is RestoreOutcome.RESTORED
    assert resolv_conf.read_bytes() == ORIGINAL
    assert resolv_conf.stat().st_mode & 0o777 == 0o640
    assert not (state_dir / BACKUP_NAME).exists()
    assert editor.restore() is RestoreOutcome.NOTHING
    assert not list(resolv_conf.parent.glob(".*gossipmesh*")), "temporary files left behind"


def test_crash_is_recovered_on_the_next_start(resolv_conf: Path, state_dir: Path) -> None:
    ResolvConfEditor(resolv_conf, state_dir).apply()
    # The daemon dies here: no restore. The next run starts over.
    restarted = ResolvConfEditor(resolv_conf, state_dir)
    assert restarted.original_upstreams() == ["192.0.2.53", "2001:db8::53"]
    restarted.apply()
    backup = json.loads((state_dir / BACKUP_NAME).read_text())
    assert "100.100.100.100" not in str(backup), "the backup must hold the original, not ours"
    assert restarted.restore() is RestoreOutcome.RESTORED
    assert resolv_conf.read_bytes() == ORIGINAL


def test_crash_marker_alone_restores(resolv_conf: Path, state_dir: Path) -> None:
    ResolvConfEditor(resolv_conf, state_dir).apply()
    assert ResolvConfEditor(resolv_conf, state_dir).recover() is RestoreOutcome.RESTORED
    assert resolv_conf.read_bytes() == ORIGINAL


def test_a_file_rewritten_by_someone_else_is_kept(resolv_conf: Path, state_dir: Path) -> None:
    editor = ResolvConfEditor(resolv_conf, state_dir)
    editor.apply()
    resolv_conf.write_bytes(b"nameserver 198.51.100.1\n")  # a new DHCP lease meanwhile
    assert editor.restore() is RestoreOutcome.SUPERSEDED
    assert resolv_conf.read_bytes() == b"nameserver 198.51.100.1\n"
    assert not (state_dir / BACKUP_NAME).exists()


def test_symlinked_resolv_conf_is_put_back_as_the_same_symlink(tmp_path: Path) -> None:
    target = tmp_path / "run" / "resolv.conf"
    target.parent.mkdir()
    target.write_bytes(ORIGINAL)
    link = tmp_path / "resolv.conf"
    link.symlink_to("run/resolv.conf")
    editor = ResolvConfEditor(link, tmp_path / "state")
    editor.apply()
    assert not link.is_symlink() and "100.100.100.100" in link.read_text()
    assert target.read_bytes() == ORIGINAL, "the symlink target is never written"
    assert editor.original_upstreams() == ["192.0.2.53", "2001:db8::53"]
    assert editor.restore() is RestoreOutcome.RESTORED
    assert link.is_symlink() and os.readlink(link) == "run/resolv.conf"


def test_missing_resolv_conf_is_missing_again_after(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    editor = ResolvConfEditor(path, tmp_path / "state")
    editor.apply()
    assert path.read_text().count("nameserver") == 1
    assert editor.restore() is RestoreOutcome.RESTORED
    assert not path.exists()


def test_corrupt_backup_is_an_error_that_names_the_file(resolv_conf: Path, state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / BACKUP_NAME).write_text("{not json")
    with pytest.raises(DnsIntegrationError, match=BACKUP_NAME):
        ResolvConfEditor(resolv_conf, state_dir).apply()
    assert resolv_conf.read_bytes() == ORIGINAL


def test_upstreams_before_gossipmesh(resolv_conf: Path, state_dir: Path) -> None:
    assert upstreams_before_gossipmesh(resolv_conf) == ["192.0.2.53", "2001:db8::53"]
    ResolvConfEditor(resolv_conf, state_dir).apply()
    assert upstreams_before_gossipmesh(resolv_conf, state_dir) == ["192.0.2.53", "2001:db8::53"]
    assert upstreams_before_gossipmesh(resolv_conf) == []


def test_split_dns_commands_and_revert() -> None:
    fake = FakeResolvectl()
    split = ResolvedSplitDns("gm0", ["100.100.100.100"], ["mesh", "64.100.in-addr.arpa"], fake)
    split.apply()
    assert fake.calls == [
        ["resolvectl", "dns", "gm0", "100.100.100.100"],
        ["resolvectl", "domain", "gm0", "~mesh", "~64.100.in-addr.arpa"],
        ["resolvectl", "default-route", "gm0", "false"],
    ]
    assert split.restore() is RestoreOutcome.RESTORED
    assert fake.calls[-1] == ["resolvectl", "revert", "gm0"]


def test_split_dns_failure_reverts_and_explains() -> None:
    fake = FakeResolvectl(fail_on="domain")
    split = ResolvedSplitDns("gm0", ["100.100.100.100"], ["mesh"], fake)
    with pytest.raises(DnsIntegrationError, match="Link not found"):
        split.apply()
    assert fake.calls[-1] == ["resolvectl", "revert", "gm0"]


def test_mode_choice(
    resolv_conf: Path, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_path = tmp_path / "io.systemd.Resolve"
    options = {"resolv_conf": resolv_conf, "resolved_socket": socket_path}
    assert choose_mode("auto", **options) == "resolv-conf"
    with pytest.raises(DnsIntegrationError, match="not running"):
        choose_mode("resolved", **options)
    with pytest.raises(DnsIntegrationError, match="unknown DNS mode"):
        choose_mode("sometimes", **options)

    socket_path.touch()
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert choose_mode("auto", **options) == "resolv-conf", "resolved runs but is not used"
    resolv_conf.write_text("nameserver 127.0.0.53\noptions edns0\n")
    assert choose_mode("auto", **options) == "resolved"
    assert choose_mode("resolv-conf", **options) == "resolv-conf"

    fake = FakeResolvectl()

    def build(mode: str) -> object:
        return host_dns(
            mode,
            interface="gm0",
            domains=["mesh"],
            state_dir=state_dir,
            resolv_conf=resolv_conf,
            resolved_socket=socket_path,
            runner=fake,
        )

    assert isinstance(build("auto"), ResolvedSplitDns)
    assert isinstance(build("resolv-conf"), ResolvConfEditor)
    off = build("off")
    assert isinstance(off, NoHostDns)
    before = resolv_conf.read_bytes()
    off.apply()
    assert off.restore() is RestoreOutcome.NOTHING
    assert resolv_conf.read_bytes() == before and not state_dir.exists() and fake.calls == []
