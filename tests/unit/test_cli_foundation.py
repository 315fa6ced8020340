"""keygen and addr, through click's runner and through the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gossipmesh.cli.main import main
from gossipmesh.identity import Identity, encode_key_file, encode_public_key

KNOWN_SEED = bytes(32)
KNOWN_REPORT = {
    "node_id": "c9c2ecf03b6351e1215cdd00b3043ab8194873ae",
    "public_key": "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=",
    "ipv6": "fd68:b0bf:8bba:be91:70a5:cb99:8fdb:d883",
    "ipv4": "100.102.51.198",
    "ipv4_counter": 0,
    "key_name": "gm-zhboz4b3mni6cik4",
}


def _known_key(tmp_path: Path) -> Path:
    path = tmp_path / "known.key"
    path.write_bytes(encode_key_file(Identity.from_seed(KNOWN_SEED)))
    path.chmod(0o600)
    return path


def test_keygen_writes_a_private_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "node.key"
    result = runner.invoke(main, ["keygen", str(path)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    again = runner.invoke(main, ["keygen", str(path)])
    assert again.exit_code == 2
    assert "already exists" in again.output
    assert path.read_bytes() == before


def test_addr_json_from_key_and_from_public_key_agree(tmp_path: Path) -> None:
    runner = CliRunner()
    from_key = runner.invoke(main, ["addr", "--key", str(_known_key(tmp_path)), "--json"])
    assert from_key.exit_code == 0, from_key.output
    assert json.loads(from_key.output) == KNOWN_REPORT
    public = encode_public_key(Identity.from_seed(KNOWN_SEED).public_key)
    from_public = runner.invoke(main, ["addr", "--public-key", public, "--json"])
    assert json.loads(from_public.output) == KNOWN_REPORT


def test_addr_human_output_lists_every_field(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["addr", "--key", str(_known_key(tmp_path))])
    assert result.exit_code == 0
    for value in KNOWN_REPORT.values():
        assert str(value) in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["addr"],
        ["addr", "--public-key", "not-base64!"],
        ["addr", "--public-key", "AAAA"],
        ["addr", "--key", "/nonexistent/key"],
        ["addr", "--public-key", KNOWN_REPORT["public_key"], "--ipv4-network", "10.0.0.1/8"],
    ],
)
def test_addr_errors_are_one_line_with_status_2(args: list[str]) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2
    assert result.output.startswith(("gossipmesh: error:", "Usage:"))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _console_script() -> str:
    candidate = Path(sys.executable).parent / "gossipmesh"
    found = str(candidate) if candidate.exists() else shutil.which("gossipmesh")
    if found is None:
        pytest.skip("the gossipmesh console script is not installed (run scripts/setup)")
    return found


def test_console_script_refuses_a_readable_key_without_traceback(tmp_path: Path) -> None:
    key = _known_key(tmp_path)
    os.chmod(key, 0o644)
    result = subprocess.run(
        [_console_script(), "addr", "--key", str(key)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "too open" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_keygen_then_addr(tmp_path: Path) -> None:
    script = _console_script()
    key = tmp_path / "k"
    subprocess.run([script, "keygen", str(key)], check=True, capture_output=True, timeout=60)
    result = subprocess.run(
        [script, "addr", "--key", str(key), "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(result.stdout)
    assert report["ipv6"].startswith("fd")
    help_text = subprocess.run(
        [script, "--help"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert "keygen" in help_text and "addr" in help_text
