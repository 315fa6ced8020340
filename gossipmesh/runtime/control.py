"""The control socket: how `gossipmesh status|peers|routes|ping|down` talk to a daemon.

A Unix stream socket inside the instance's private state directory (mode
0700, socket 0600), so only root can open it. One JSON request per
connection: `{"command": NAME, "args": {...}}` answered by one JSON line,
`{"ok": true, "result": ...}` or `{"ok": false, "error": MESSAGE}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from gossipmesh.errors import GossipmeshError, UsageError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024
"""Room for a pushed policy (at most 256 KiB signed, base64 in the request)."""
REQUEST_TIMEOUT = 5.0

Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]


class DaemonNotRunning(UsageError):
    """No daemon answers on the control socket."""


class ControlServer:
    """Serves registered command handlers on the control socket."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a killed daemon; the instance lock proves it is stale
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES + 1
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            response = await self._answer(line)
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST_BYTES:
            return {"ok": False, "error": "request too large"}
        try:
            request = json.loads(line)
            command = request["command"]
            args = request.get("args", {})
            if not isinstance(command, str) or not isinstance(args, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "malformed control request"}
        handler = self.handlers.get(command)
        if handler is None:
            return {"ok": False, "error": f"unknown command {command!r}"}
        try:
            return {"ok": True, "result": await handler(args)}
        except GossipmeshError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control command %s failed", command)
            return {"ok": False, "error": f"{command} failed inside the daemon (see its log)"}


def call_daemon(
    socket_path: Path, command: str, args: Mapping[str, Any] | None = None, timeout: float = 10.0
) -> Any:
    """Send one command to a running daemon and return its result (blocking; for the CLI)."""
    request = json.dumps({"command": command, "args": dict(args or {})}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(request)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonNotRunning(
            f"no gossipmesh daemon is running for {socket_path.parent} "
            "(start one with `gossipmesh up`, or pass the same --interface/--state-dir)"
        ) from None
    except PermissionError:
        raise UsageError(
            f"{socket_path}: permission denied (the control socket is root's)"
        ) from None
    except TimeoutError:
        raise GossipmeshError(
            f"the daemon did not answer {command!r} within {timeout:g}s"
        ) from None
    try:
        response = json.loads(b"".join(chunks))
    except ValueError:
        raise GossipmeshError("the daemon sent a malformed answer") from None
    if not response.get("ok"):
        raise GossipmeshError(str(response.get("error", "unknown error")))
    return response.get("result")
