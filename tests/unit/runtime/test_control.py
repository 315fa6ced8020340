"""The control socket: requests, errors, permissions, and a daemon that is not there."""

from __future__ import annotations

import asyncio
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gossipmesh.errors import GossipmeshError, UsageError
from gossipmesh.runtime.control import ControlServer, DaemonNotRunning, call_daemon


async def _status(args: Mapping[str, Any]) -> dict[str, Any]:
    return {"echo": args.get("x")}


async def _refuse(args: Mapping[str, Any]) -> None:
    raise UsageError("no such peer")


async def _crash(args: Mapping[str, Any]) -> None:
    raise RuntimeError("bug")


async def _with_server(tmp_path: Path, body: Any) -> Any:
    path = tmp_path / "control.sock"
    server = ControlServer(path, {"status": _status, "refuse": _refuse, "crash": _crash})
    await server.start()
    try:
        return await asyncio.to_thread(body, path)
    finally:
        await server.stop()
        assert not path.exists(), "the socket is removed at stop"


def test_commands_and_errors_round_trip(tmp_path: Path) -> None:
    def body(path: Path) -> None:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert call_daemon(path, "status", {"x": 7}) == {"echo": 7}
        with pytest.raises(GossipmeshError, match="no such peer"):
            call_daemon(path, "refuse")
        with pytest.raises(GossipmeshError, match="failed inside the daemon"):
            call_daemon(path, "crash")
        with pytest.raises(GossipmeshError, match="unknown command"):
            call_daemon(path, "nonsense")
        # Garbage on the socket gets an error answer and the server keeps serving.
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(path))
            raw.sendall(b"{not json\n")
            assert b"malformed" in raw.recv(4096)
        assert call_daemon(path, "status", {"x": 8}) == {"echo": 8}

    asyncio.run(_with_server(tmp_path, body))


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="no gossipmesh daemon is running"):
        call_daemon(tmp_path / "control.sock", "status")
