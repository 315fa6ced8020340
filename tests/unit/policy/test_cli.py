"""`gossipmesh policy check` and `policy sign`: outcomes, exit statuses, one-line errors."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gossipmesh.cli.main import main
from gossipmesh.identity import AUTHORITY_KEY_FILE_HEADER as AUTHORITY_KEY_HEADER
from gossipmesh.identity import Identity, encode_key_file
from gossipmesh.policy.signed import policy_from_document
from gossipmesh.trust.document import decode_document
from tests.unit.policy.test_signed import FAILING, SOURCE

AUTHORITY = Identity.from_seed(bytes(range(32)))


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output + result.stderr
    return result


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def authority_key(tmp_path: Path, header: str = AUTHORITY_KEY_HEADER, mode: int = 0o600) -> Path:
    seed = base64.b64encode(AUTHORITY.seed).decode()
    path = write(tmp_path, "authority.key", f"{header}\n{seed}\n")
    path.chmod(mode)
    return path


def test_check_prints_every_outcome_and_passes(tmp_path: Path) -> None:
    result = run("policy", "check", str(write(tmp_path, "policy.toml", SOURCE)))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "PASS test #1: host:alice -> group:web tcp/22: allow (rule #2)"
    assert len(lines) == 5
    assert lines[-1].endswith("policy.toml: policy version 7, 3 rules, 4 tests, 0 failed")


def test_check_exits_1_when_a_test_fails(tmp_path: Path) -> None:
    result = run("policy", "check", str(write(tmp_path, "policy.toml", FAILING)))
    assert result.exit_code == 1
    assert "FAIL test #2: host:mallory -> group:web tcp/22: expected allow, got deny" in (
        result.stdout
    )
    assert result.stderr.strip().endswith("policy.toml: 1 of 4 tests fail")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("version = 1\n[[rules]]\nfrom = ['*']\nto = ['*']\nproto = 'tpc'\n", "#1: proto: 'tpc'"),
        ("version = 1\n[[rules]\n", "invalid TOML"),
        (b"version = 1\n\xff\n", "policy file is not UTF-8 text"),
        ("version = 1\n" + "#" * 70_000, "larger than the 65536 bytes"),
    ],
)
def test_check_exits_2_on_a_malformed_file(
    tmp_path: Path, content: str | bytes, expected: str
) -> None:
    path = write(tmp_path, "bad.toml", content)
    result = run("policy", "check", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"gossipmesh: error: {path}")
    assert expected in result.stderr and result.stderr.count("\n") == 1


def test_check_exits_2_on_a_missing_file(tmp_path: Path) -> None:
    result = run("policy", "check", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2 and "policy file does not exist" in result.stderr


def test_sign_writes_a_document_nodes_accept(tmp_path: Path) -> None:
    out = tmp_path / "policy.signed"
    before = int(time.time())
    result = run(
        "policy",
        "sign",
        str(write(tmp_path, "policy.toml", SOURCE)),
        "--authority",
        str(authority_key(tmp_path)),
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert f"wrote {out}" in result.stdout
    document = decode_document(out.read_bytes())
    assert before <= document.issued_at <= int(time.time())
    policy = policy_from_document(document, AUTHORITY.public_key)
    assert policy.version == 7 and policy.source == SOURCE


@pytest.mark.parametrize(
    ("policy_text", "key", "status", "expected"),
    [
        (FAILING, "good", 1, "1 of 4 tests fail, refusing to sign: FAIL test #2"),
        ("version = 1\nrules = 1\n", "good", 2, "write rules as [[rules]] tables"),
        (SOURCE, "node", 2, "this is a node key, not a network authority key"),
        (SOURCE, "open", 2, "permissions 0644 are too open"),
        (SOURCE, "missing", 2, "key file does not exist"),
        (SOURCE, "corrupt", 2, "key file is corrupt or truncated"),
    ],
)
def test_sign_refuses_and_writes_nothing(
    tmp_path: Path, policy_text: str, key: str, status: int, expected: str
) -> None:
    if key == "node":
        key_path = write(tmp_path, "node.key", encode_key_file(AUTHORITY))
        key_path.chmod(0o600)
    elif key == "open":
        key_path = authority_key(tmp_path, mode=0o644)
    elif key == "missing":
        key_path = tmp_path / "absent.key"
    elif key == "corrupt":
        key_path = write(tmp_path, "authority.key", f"{AUTHORITY_KEY_HEADER}\nnot-base64!\n")
        key_path.chmod(0o600)
    else:
        key_path = authority_key(tmp_path)
    out = tmp_path / "policy.signed"
    path = write(tmp_path, "policy.toml", policy_text)
    result = run("policy", "sign", str(path), "--authority", str(key_path), "--out", str(out))
    assert result.exit_code == status, result.output + result.stderr
    assert expected in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()
