"""State files: atomic writes that lose nothing, corrupt files named, the instance lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gossipmesh.errors import UsageError
from gossipmesh.statefiles import (
    InstanceLock,
    StateDir,
    StateError,
    read_json,
    write_json,
)


def test_json_round_trip_and_absent_file(tmp_path: Path) -> None:
    path = tmp_path / "address.json"
    assert read_json(path) is None
    write_json(path, {"counter": 3})
    assert read_json(path) == {"counter": 3}
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    path.write_bytes(b"\x00{{{")
    with pytest.raises(StateError, match=r"peers\.json: state file is corrupt"):
        read_json(path)


def test_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    """A write that runs out of space (RLIMIT_FSIZE, like a full disk) loses nothing."""
    path = tmp_path / "address.json"
    write_json(path, {"counter": 1})
    script = (
        "import resource, signal, sys, pathlib\n"
        "from gossipmesh.statefiles import StateError, write_json\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))\n"
        "try:\n"
        f"    write_json(pathlib.Path({str(path)!r}), {{'big': 'x' * 100000}})\n"
        "except StateError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    assert "cannot save state" in result.stdout
    assert read_json(path) == {"counter": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["address.json"]


def test_state_dir_is_private(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "a" / "gm0")
    state.create()
    assert oct(state.path.stat().st_mode & 0o777) == "0o700"


def test_second_instance_is_refused_and_lock_dies_with_its_holder(tmp_path: Path) -> None:
    lock_path = tmp_path / "daemon.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib\n"
            "from gossipmesh.statefiles import InstanceLock\n"
            f"InstanceLock(pathlib.Path({str(lock_path)!r})).acquire('x')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(UsageError, match="already up"):
            InstanceLock(lock_path).acquire("interface gm0")
    finally:
        holder.kill()
        holder.wait(timeout=10)
    lock = InstanceLock(lock_path)
    lock.acquire("interface gm0")  # the kernel released the dead holder's lock
    lock.release()
