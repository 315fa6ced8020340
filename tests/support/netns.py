"""Network namespaces for end-to-end tests: create, wire, run, and always tear down.

Namespaces, interface names and /var/run/wireguard sockets are machine-wide, so
every name gets a random suffix. `NetnsLab` records everything it creates and
removes it in reverse order on exit, also when the test fails; processes it
started are terminated (then killed) by their own pid, never by name.

    from tests.support.netns import NetnsLab, require_netns

    def test_something() -> None:
        require_netns("ping")                      # skips unless root and tools exist
        with NetnsLab() as lab:
            a, b = lab.namespace("a"), lab.namespace("b")
            lab.veth(a, b, "10.1.1.1/24", "10.1.1.2/24")
            a.run(["ping", "-c1", "-W1", "10.1.1.2"])
            switch = lab.bridge()                  # or: a switch for many namespaces
            switch.attach(lab.namespace("c"), "10.1.1.3/24")

Or use the `netns_lab` fixture (import it into a conftest.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pytest

DEFAULT_TIMEOUT = 20.0


def unique_suffix() -> str:
    """Six hex digits: short enough for 15-character interface names."""
    return secrets.token_hex(3)


def missing_tools(*tools: str) -> list[str]:
    return [tool for tool in ("ip", *tools) if shutil.which(tool) is None]


def require_netns(*tools: str) -> None:
    """Skip the calling test, with a reason, unless root and `ip` plus `tools` exist."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    missing = missing_tools(*tools)
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup installs the Debian packages)")


def wait_until(
    condition: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll `condition` until it returns a true value or `timeout` passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


class Namespace:
    """One network namespace; commands run inside it with `ip netns exec`."""

    def __init__(self, lab: NetnsLab, name: str) -> None:
        self.lab = lab
        self.name = name

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion (`input` on stdin); on failure the error shows the output."""
        result = subprocess.run(
            self.command(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} in {self.name} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.PIPE,
        text: bool = True,
    ) -> subprocess.Popen[str]:
        """Start a background process in the namespace; the lab stops it at teardown."""
        process = subprocess.Popen(
            self.command(argv),
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=text,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
        )
        self.lab.track_process(process)
        return process


class NetnsLab:
    """A set of namespaces, links, processes and files, all removed on exit."""

    def __init__(self, prefix: str = "gmt") -> None:
        self.prefix = prefix
        self.suffix = unique_suffix()
        self._cleanups: list[Callable[[], None]] = []
        self._processes: list[subprocess.Popen[str]] = []
        self._counter = 0

    def name(self, label: str) -> str:
        """A unique name for a namespace or interface (at most 15 characters)."""
        self._counter += 1
        return f"{self.prefix}{label}{self._counter}{self.suffix}"[-15:]

    def namespace(self, label: str = "ns") -> Namespace:
        name = self.name(label)
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.on_teardown(lambda: _quiet(["ip", "netns", "del", name]))
        namespace = Namespace(self, name)
        namespace.run(["ip", "link", "set", "lo", "up"])
        return namespace

    def veth(
        self,
        a: Namespace,
        b: Namespace,
        address_a: str | Sequence[str],
        address_b: str | Sequence[str],
        *,
        mtu: int | None = None,
    ) -> tuple[str, str]:
        """A veth pair between two namespaces, addressed (IPv6 without DAD) and up."""
        name_a, name_b = self.name("va"), self.name("vb")
        subprocess.run(
            ["ip", "link", "add", name_a, "netns", a.name, "type", "veth",
             "peer", "name", name_b, "netns", b.name],
            check=True,
            capture_output=True,
        )  # fmt: skip
        for namespace, device, addresses in ((a, name_a, address_a), (b, name_b, address_b)):
            for address in [addresses] if isinstance(addresses, str) else addresses:
                extra = ["nodad"] if ipaddress.ip_interface(address).version == 6 else []
                namespace.run(["ip", "addr", "add", address, "dev", device, *extra])
            if mtu is not None:
                namespace.run(["ip", "link", "set", device, "mtu", str(mtu)])
            namespace.run(["ip", "link", "set", device, "up"])
        return name_a, name_b

    def bridge(self, label: str = "sw") -> Bridge:
        """A bridge in a namespace of its own, so nothing is added to the host's network."""
        namespace = self.namespace(label)
        namespace.run(["ip", "link", "add", "br0", "type", "bridge"])
        namespace.run(["ip", "link", "set", "br0", "up"])
        return Bridge(self, namespace, "br0")

    def track_process(self, process: subprocess.Popen[str]) -> None:
        self._processes.append(process)

    def remove_file_at_teardown(self, path: str | os.PathLike[str]) -> None:
        self.on_teardown(lambda: Path(path).unlink(missing_ok=True))

    def on_teardown(self, cleanup: Callable[[], None]) -> None:
        """Run `cleanup` at teardown (last registered runs first)."""
        self._cleanups.append(cleanup)

    def stop_process(self, process: subprocess.Popen[str], timeout: float = 5.0) -> None:
        """SIGTERM the process group we started, SIGKILL it if it lingers, reap it."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def close(self) -> None:
        errors: list[BaseException] = []
        for process in reversed(self._processes):
            try:
                self.stop_process(process)
            except BaseException as exc:  # keep tearing down the rest
                errors.append(exc)
        self._processes.clear()
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except BaseException as exc:
                errors.append(exc)
        self._cleanups.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Bridge:
    """A Linux bridge (a switch) that namespaces plug into with veth pairs."""

    def __init__(self, lab: NetnsLab, namespace: Namespace, device: str) -> None:
        self.lab = lab
        self.namespace = namespace
        self.device = device

    def attach(
        self, namespace: Namespace, addresses: str | Sequence[str], *, mtu: int | None = None
    ) -> str:
        """Plug `namespace` into the bridge with `addresses`; returns its interface name."""
        inner, outer = self.lab.veth(namespace, self.namespace, addresses, [], mtu=mtu)
        self.namespace.run(["ip", "link", "set", outer, "master", self.device])
        return inner


def _quiet(argv: Sequence[str]) -> None:
    subprocess.run(argv, capture_output=True, timeout=DEFAULT_TIMEOUT)


@pytest.fixture
def netns_lab() -> Iterator[NetnsLab]:
    """A `NetnsLab` torn down after the test; skips unless root with `ip`."""
    require_netns()
    with NetnsLab() as lab:
        yield lab
