"""Pointing the host's resolver at gossipmesh, and putting it back exactly.

Two ways, chosen automatically (`auto`) or forced:

- `resolved`: systemd-resolved split DNS. The mesh suffix and the mesh
  reverse zones become routing-only domains (`~mesh`) on the TUN link, with
  our resolver as that link's server and `default-route` off, so resolved
  sends only mesh names to us and everything else where it did before.
- `resolv-conf`: a managed edit of resolv.conf. The original (content,
  mode, owner, or the symlink it was) is saved to the state directory
  *before* the file is touched; that backup is also the crash marker: the
  next start (or `recover`) restores it first. On restore, a file someone
  else rewrote while we ran is left alone (theirs is newer than our backup).
- `off`: the host is left alone.

Every path and the command runner are parameters, so tests work on files in
a temporary directory and never touch the real host configuration.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gossipmesh.addressing import RESOLVER_IPV4, RESOLVER_IPV6
from gossipmesh.config import DNS_MODES
from gossipmesh.dns.forward import parse_nameservers, read_upstreams
from gossipmesh.errors import GossipmeshError

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_SOCKET = Path("/run/systemd/resolve/io.systemd.Resolve")
"""systemd-resolved's varlink socket: present exactly while resolved runs."""
RESOLVED_STUBS = ("127.0.0.53", "127.0.0.54")
BACKUP_NAME = "resolv.conf.gossipmesh-backup"
BACKUP_VERSION = 1
MANAGED_HEADER = "# Written by gossipmesh; the original is restored when gossipmesh stops."

Runner = Callable[[Sequence[str]], None]
"""Runs a command and raises `subprocess.CalledProcessError` (or OSError) on failure."""


class DnsIntegrationError(GossipmeshError):
    """The host resolver could not be pointed at (or restored from) gossipmesh."""


class RestoreOutcome(enum.Enum):
    RESTORED = "restored"
    """The original configuration is back, byte for byte."""
    SUPERSEDED = "superseded"
    """Someone else rewrote the file while we ran; theirs was kept, our backup dropped."""
    NOTHING = "nothing"
    """There was nothing of ours to undo."""


class HostDns(Protocol):
    """One way of wiring the host resolver; `apply` on start, `restore` on stop."""

    mode: str

    def apply(self) -> None: ...

    def restore(self) -> RestoreOutcome: ...


def run_command(argv: Sequence[str]) -> None:
    """The real runner: a bounded subprocess whose failure is an exception."""
    subprocess.run(list(argv), check=True, capture_output=True, timeout=10)


# -- choosing -----------------------------------------------------------------


def resolved_in_use(
    resolv_conf: Path = RESOLV_CONF, resolved_socket: Path = RESOLVED_SOCKET
) -> bool:
    """Whether systemd-resolved runs *and* the host's stub resolver goes through it.

    A running resolved behind a static resolv.conf would route nothing for
    glibc, so both must hold.
    """
    if not resolved_socket.exists() or shutil.which("resolvectl") is None:
        return False
    with contextlib.suppress(OSError):
        if resolv_conf.is_symlink() and "systemd/resolve" in os.readlink(resolv_conf):
            return True
    return any(server in RESOLVED_STUBS for server in read_upstreams(resolv_conf, exclude=()))


def choose_mode(
    requested: str,
    resolv_conf: Path = RESOLV_CONF,
    resolved_socket: Path = RESOLVED_SOCKET,
) -> str:
    """Resolve `auto` to a concrete mode; refuse `resolved` when resolved is not in use."""
    if requested not in DNS_MODES:
        raise DnsIntegrationError(f"unknown DNS mode {requested!r} (use {', '.join(DNS_MODES)})")
    in_use = resolved_in_use(resolv_conf, resolved_socket)
    if requested == "auto":
        return "resolved" if in_use else "resolv-conf"
    if requested == "resolved" and not in_use:
        raise DnsIntegrationError(
            "--dns resolved: systemd-resolved is not running or not used by "
            f"{resolv_conf}; use --dns resolv-conf or --dns off"
        )
    return requested


def host_dns(
    mode: str,
    *,
    interface: str,
    domains: Sequence[str],
    servers: Sequence[str] = (str(RESOLVER_IPV4),),
    state_dir: Path,
    resolv_conf: Path = RESOLV_CONF,
    resolved_socket: Path = RESOLVED_SOCKET,
    runner: Runner = run_command,
) -> HostDns:
    """The integration for `mode` (one of DNS_MODES; `auto` is chosen here).

    `domains` are the suffix and the reverse zones to route to us (see
    `reverse.reverse_zones`); `servers` the addresses our resolver listens on.
    """
    chosen = choose_mode(mode, resolv_conf, resolved_socket)
    if chosen == "resolved":
        return ResolvedSplitDns(interface, servers, domains, runner)
    if chosen == "resolv-conf":
        return ResolvConfEditor(resolv_conf, state_dir, servers)
    return NoHostDns()


class NoHostDns:
    """`--dns off`: the resolver runs, the host is not told about it."""

    mode = "off"

    def apply(self) -> None:
        return None

    def restore(self) -> RestoreOutcome:
        return RestoreOutcome.NOTHING


# -- systemd-resolved ---------------------------------------------------------


class ResolvedSplitDns:
    """Routing-only domains on the TUN link; resolved forgets them when the link goes."""

    mode = "resolved"

    def __init__(
        self,
        interface: str,
        servers: Sequence[str],
        domains: Sequence[str],
        runner: Runner = run_command,
    ) -> None:
        if not servers or not domains:
            raise ValueError("split DNS needs at least one server and one domain")
        self.interface = interface
        self.servers = list(servers)
        self.domains = list(domains)
        self._runner = runner
        self._applied = False

    def commands(self) -> list[list[str]]:
        """What `apply` runs, in order."""
        link = self.interface
        return [
            ["resolvectl", "dns", link, *self.servers],
            ["resolvectl", "domain", link, *(f"~{domain.strip('.')}" for domain in self.domains)],
            ["resolvectl", "default-route", link, "false"],
        ]

    def apply(self) -> None:
        for argv in self.commands():
            try:
                self._runner(argv)
            except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
                self.restore()
                raise DnsIntegrationError(
                    f"systemd-resolved refused {' '.join(argv)!r}: {_command_error(exc)}"
                ) from None
        self._applied = True

    def restore(self) -> RestoreOutcome:
        try:
            self._runner(["resolvectl", "revert", self.interface])
        except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
            # The link is usually gone already, and resolved drops its settings with it.
            log.debug("resolvectl revert %s: %s", self.interface, _command_error(exc))
            return RestoreOutcome.NOTHING
        applied, self._applied = self._applied, False
        return RestoreOutcome.RESTORED if applied else RestoreOutcome.NOTHING


def _command_error(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        stderr = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
        return stderr or f"exit status {exc.returncode}"
    return str(exc)


# -- resolv.conf --------------------------------------------------------------


@dataclass(frozen=True)
class FileSnapshot:
    """Exactly what was at a path: a regular file, a symlink, or nothing."""

    kind: str
    """'file', 'symlink' or 'absent'."""
    content: bytes = b""
    target: str = ""
    mode: int = 0o644
    uid: int = -1
    gid: int = -1

    @classmethod
    def take(cls, path: Path) -> FileSnapshot:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return cls("absent")
        if path.is_symlink():
            return cls("symlink", target=os.readlink(path))
        if not path.is_file():
            raise DnsIntegrationError(f"{path} is not a regular file; refusing to edit it")
        return cls(
            "file",
            content=path.read_bytes(),
            mode=info.st_mode & 0o7777,
            uid=info.st_uid,
            gid=info.st_gid,
        )

    def readable_content(self, path: Path) -> bytes:
        """The text a resolver would read at `path` in this state (following a symlink)."""
        if self.kind == "file":
            return self.content
        if self.kind == "symlink":
            with contextlib.suppress(OSError):
                return (path.parent / self.target).read_bytes()
        return b""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "content": base64.b64encode(self.content).decode("ascii"),
            "target": self.target,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileSnapshot:
        kind = data["kind"]
        if kind not in ("file", "symlink", "absent"):
            raise ValueError(f"unknown snapshot kind {kind!r}")
        return cls(
            kind,
            content=base64.b64decode(data["content"]),
            target=str(data["target"]),
            mode=int(data["mode"]),
            uid=int(data["uid"]),
            gid=int(data["gid"]),
        )


class ResolvConfEditor:
    """A managed edit of one resolv.conf, backed up before and restored after."""

    mode = "resolv-conf"

    def __init__(
        self,
        resolv_conf: Path,
        state_dir: Path,
        servers: Sequence[str] = (str(RESOLVER_IPV4),),
    ) -> None:
        if not servers:
            raise ValueError("resolv.conf needs at least one nameserver")
        self.resolv_conf = resolv_conf
        self.state_dir = state_dir
        self.servers = list(servers)

    @property
    def backup_path(self) -> Path:
        return self.state_dir / BACKUP_NAME

    def original_upstreams(self) -> list[str]:
        """The nameservers the host used before gossipmesh: from the backup if we hold one."""
        backup = self._read_backup()
        if backup is not None:
            original, _ = backup
            content = original.readable_content(self.resolv_conf)
            return _nameservers(content, exclude=self.servers)
        return _nameservers(
            FileSnapshot.take(self.resolv_conf).readable_content(self.resolv_conf),
            exclude=self.servers,
        )

    def managed_content(self, original: bytes) -> bytes:
        """Our nameservers first and only; the original's search and options lines kept."""
        lines = [MANAGED_HEADER]
        lines += [f"nameserver {server}" for server in self.servers]
        for line in original.decode("utf-8", errors="replace").splitlines():
            fields = line.split()
            if fields and fields[0] in ("search", "domain", "options"):
                lines.append(line.strip())
        return ("\n".join(lines) + "\n").encode()

    def apply(self) -> None:
        outcome = self.recover()
        if outcome is not RestoreOutcome.NOTHING:
            log.warning("restored %s left by an earlier run (%s)", self.resolv_conf, outcome.value)
        original = FileSnapshot.take(self.resolv_conf)
        ours = self.managed_content(original.readable_content(self.resolv_conf))
        record = {
            "version": BACKUP_VERSION,
            "path": str(self.resolv_conf),
            "original": original.to_json(),
            "written_sha256": hashlib.sha256(ours).hexdigest(),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.backup_path, json.dumps(record, indent=1).encode(), mode=0o600)
        mode = original.mode if original.kind == "file" else 0o644
        try:
            atomic_write(self.resolv_conf, ours, mode=mode, uid=original.uid, gid=original.gid)
        except OSError as exc:
            self.backup_path.unlink(missing_ok=True)
            raise DnsIntegrationError(f"cannot write {self.resolv_conf}: {exc}") from None

    def restore(self) -> RestoreOutcome:
        return self.recover()

    def recover(self) -> RestoreOutcome:
        """Undo our edit if a backup says we made one (after a clean stop or a crash)."""
        backup = self._read_backup()
        if backup is None:
            return RestoreOutcome.NOTHING
        original, written_sha256 = backup
        current = FileSnapshot.take(self.resolv_conf)
        if current.kind != "file" or hashlib.sha256(current.content).hexdigest() != written_sha256:
            log.warning(
                "%s was changed by someone else while gossipmesh ran; keeping their version",
                self.resolv_conf,
            )
            self.backup_path.unlink()
            return RestoreOutcome.SUPERSEDED
        _put_back(self.resolv_conf, original)
        self.backup_path.unlink()
        return RestoreOutcome.RESTORED

    def _read_backup(self) -> tuple[FileSnapshot, str] | None:
        try:
            data = json.loads(self.backup_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DnsIntegrationError(
                f"{self.backup_path}: unreadable resolv.conf backup ({exc}); "
                f"check {self.resolv_conf} by hand, then delete the backup"
            ) from None
        try:
            if data["version"] != BACKUP_VERSION or data["path"] != str(self.resolv_conf):
                raise ValueError("it belongs to another version or another path")
            return FileSnapshot.from_json(data["original"]), str(data["written_sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DnsIntegrationError(
                f"{self.backup_path}: not a usable resolv.conf backup ({exc}); "
                f"check {self.resolv_conf} by hand, then delete the backup"
            ) from None


def recover_resolv_conf(resolv_conf: Path, state_dir: Path) -> RestoreOutcome:
    """Undo the resolv.conf edit a crashed run left behind, whatever mode this run uses.

    Only `resolv-conf` mode would find the backup otherwise: a restart with
    `--dns off` or `resolved` would leave the host pointing at a resolver
    that no longer answers (and `auto` would not see resolved behind it).
    """
    outcome = ResolvConfEditor(resolv_conf, state_dir).recover()
    if outcome is not RestoreOutcome.NOTHING:
        log.warning("restored %s left by an earlier run (%s)", resolv_conf, outcome.value)
    return outcome


def upstreams_before_gossipmesh(
    resolv_conf: Path = RESOLV_CONF,
    state_dir: Path | None = None,
    servers: Sequence[str] = (str(RESOLVER_IPV4), str(RESOLVER_IPV6)),
) -> list[str]:
    """The host's upstream resolvers as they were before gossipmesh edited resolv.conf."""
    if state_dir is not None:
        return ResolvConfEditor(resolv_conf, state_dir, servers).original_upstreams()
    return read_upstreams(resolv_conf, exclude=servers)


def _nameservers(content: bytes, exclude: Sequence[str]) -> list[str]:
    excluded = [*exclude, str(RESOLVER_IPV4), str(RESOLVER_IPV6)]
    return parse_nameservers(content.decode("utf-8", errors="replace"), excluded)


def _put_back(path: Path, snapshot: FileSnapshot) -> None:
    if snapshot.kind == "absent":
        path.unlink(missing_ok=True)
    elif snapshot.kind == "symlink":
        temporary = path.with_name(f".{path.name}.gossipmesh-{os.getpid()}")
        temporary.unlink(missing_ok=True)
        os.symlink(snapshot.target, temporary)
        try:
            os.replace(temporary, path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
    else:
        atomic_write(path, snapshot.content, mode=snapshot.mode, uid=snapshot.uid, gid=snapshot.gid)


def atomic_write(path: Path, content: bytes, *, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Replace `path` with `content` so that readers see the old or the new file, never half.

    Written to a temporary file beside it, synced, then renamed over it. When
    the path is a bind mount (containers mount /etc/resolv.conf that way) a
    rename is impossible and the file is rewritten in place instead.
    """
    temporary = path.with_name(f".{path.name}.gossipmesh-{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if (uid != -1 or gid != -1) and os.geteuid() == 0:
            os.chown(temporary, uid, gid)
        try:
            os.replace(temporary, path)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            _write_in_place(path, content)
            temporary.unlink(missing_ok=True)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _write_in_place(path: Path, content: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(content)
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
