"""The per-instance state directory and the files in it.

Several daemons run on one machine (one per network namespace in the tests
and the demo), so everything an instance keeps lives under one directory:
the control socket, the instance lock, the peer cache and the persisted
address. The default is derived from the interface name.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Any

from gossipmesh.errors import ConfigError, GossipmeshError, UsageError

STATE_ROOT = Path("/var/lib/gossipmesh")


class StateError(GossipmeshError):
    """A state file cannot be written or read; the message says which and why."""


def default_state_dir(interface: str) -> Path:
    return STATE_ROOT / interface


class StateDir:
    """Paths inside one instance's state directory (mode 0700: only root reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    @property
    def lock_file(self) -> Path:
        return self.path / "daemon.lock"

    @property
    def peer_cache(self) -> Path:
        return self.path / "peers.json"

    @property
    def address_file(self) -> Path:
        return self.path / "address.json"

    def create(self) -> None:
        """Create the directory private to its owner, or check an existing one is."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.path.stat()
        except OSError as exc:
            raise UsageError(
                f"{self.path}: cannot create state directory: {exc.strerror}"
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{self.path}: state directory path is not a directory")
        if info.st_mode & 0o077:
            os.chmod(self.path, 0o700)


class InstanceLock:
    """An exclusive lock that says 'a daemon runs on this state directory'.

    flock is released by the kernel when the process dies, even by SIGKILL,
    so a crash never leaves a stale lock behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UsageError(
                    f"{what} is already up (another gossipmesh holds {self.path}); "
                    "stop it with `gossipmesh down` or pick another --interface/--state-dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so a crash or a full disk never leaves it half-written.

    Writes a temporary file beside it, fsyncs, then renames over the old one;
    on failure the old file is untouched and the temporary file removed.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise StateError(f"{path}: cannot save state: {exc.strerror}") from None


def read_json(path: Path) -> Any | None:
    """A JSON state file's content, or None when it is absent.

    A corrupt file raises StateError naming it: the caller decides whether to
    start afresh (a cache) or stop (the persisted address).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{path}: cannot read state: {exc.strerror}") from None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{path}: state file is corrupt: {exc}") from None


def write_json(path: Path, value: Any) -> None:
    write_atomically(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_operator_file(path: Path, limit: int, what: str) -> bytes:
    """At most `limit + 1` bytes of a file the operator named; ConfigError naming it otherwise.

    One reader for network.json, certificates, policies and signed documents,
    so each says the same thing about a missing file, a directory or a bad
    permission; a caller that sees more than `limit` bytes refuses the file.
    """
    try:
        with path.open("rb") as handle:
            return handle.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
