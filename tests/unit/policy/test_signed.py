"""Running [[tests]], signing a policy and accepting only the authority's, intact and consistent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gossipmesh.errors import ConfigError
from gossipmesh.identity import Identity
from gossipmesh.policy.check import failures, run_tests
from gossipmesh.policy.model import parse_policy
from gossipmesh.policy.signed import PolicyTestsFailed, policy_from_document, sign_policy
from gossipmesh.trust.document import (
    DocumentError,
    DocumentKind,
    DocumentRefusal,
    accept_newer,
    decode_document,
    sign_document,
)

AUTHORITY = Identity.from_seed(bytes(range(32)))
IMPOSTOR = Identity.from_seed(bytes(32))
ISSUED = 1_800_000_000

SOURCE = """
version = 7
[groups]
admins = ["host:alice"]
[hosts]
printer = "10.20.0.7"
[[rules]]
from = ["group:dev"]
to = ["group:web"]
proto = "udp"
ports = ["53"]
[[rules]]
from = ["group:dev", "group:admins"]
to = ["group:web"]
proto = "tcp"
ports = ["22"]
[[rules]]
from = ["*"]
to = ["host:printer"]
proto = "tcp"
ports = ["631"]
[[tests]]
from = "host:alice"
to = "group:web"
proto = "tcp"
port = 22
expect = "allow"
[[tests]]
from = "host:mallory"
to = "group:web"
proto = "tcp"
port = 22
expect = "deny"
[[tests]]
from = "group:ops"
to = "host:printer"
proto = "tcp"
port = 631
expect = "allow"
[[tests]]
from = "host:carol"
from_groups = ["dev"]
to = "group:web"
proto = "icmp"
expect = "deny"
"""
FAILING = SOURCE.replace('port = 22\nexpect = "deny"', 'port = 22\nexpect = "allow"')


def test_results_name_the_deciding_rule() -> None:
    results = run_tests(parse_policy(SOURCE))
    assert [(r.test.number, r.allowed, r.rule, r.passed) for r in results] == [
        (1, True, 2, True),
        (2, False, None, True),
        (3, True, 3, True),
        (4, False, None, True),
    ]
    assert results[0].describe() == "PASS test #1: host:alice -> group:web tcp/22: allow (rule #2)"
    assert results[1].describe() == (
        "PASS test #2: host:mallory -> group:web tcp/22: deny (no rule allows it)"
    )
    assert failures(results) == []


def test_a_failing_test_says_what_was_expected_and_what_happened() -> None:
    results = run_tests(parse_policy(FAILING))
    (failed,) = failures(results)
    assert (failed.test.number, failed.expected, failed.allowed) == (2, True, False)
    assert failed.describe() == (
        "FAIL test #2: host:mallory -> group:web tcp/22: expected allow, got deny "
        "(no rule allows it)"
    )


def test_signed_policy_round_trips_and_carries_the_policy_version() -> None:
    document = sign_policy(AUTHORITY, SOURCE, ISSUED)
    assert (document.kind, document.version, document.issued_at) == (DocumentKind.POLICY, 7, ISSUED)
    assert document.payload == SOURCE.encode()
    received = decode_document(document.encode())
    policy = policy_from_document(received, AUTHORITY.public_key)
    assert policy.version == 7 and len(policy.rules) == 3 and policy.source == SOURCE


def test_a_policy_whose_tests_fail_is_never_signed() -> None:
    with pytest.raises(PolicyTestsFailed) as caught:
        sign_policy(AUTHORITY, FAILING, ISSUED, "policy.toml")
    message = str(caught.value)
    assert message.startswith("policy.toml: 1 of 4 tests fail, refusing to sign: FAIL test #2")
    assert caught.value.exit_status == 1


def test_a_policy_that_does_not_parse_is_never_signed() -> None:
    with pytest.raises(ConfigError, match=r"policy.toml: \[\[rules\]\] #1: unknown key 'prots'"):
        sign_policy(AUTHORITY, "version = 1\n[[rules]]\nprots = 1\n", ISSUED, "policy.toml")


def test_a_forged_payload_is_refused() -> None:
    data = bytearray(sign_policy(AUTHORITY, SOURCE, ISSUED).encode())
    index = data.index(b'ports = ["22"]') + len(b'ports = ["')
    data[index : index + 2] = b"23"  # same length: only the signature can tell
    forged = decode_document(bytes(data))
    with pytest.raises(DocumentError) as caught:
        policy_from_document(forged, AUTHORITY.public_key)
    assert caught.value.reason is DocumentRefusal.BAD_SIGNATURE


def test_another_authoritys_policy_is_refused() -> None:
    theirs = sign_policy(IMPOSTOR, SOURCE, ISSUED)
    with pytest.raises(DocumentError) as caught:
        policy_from_document(theirs, AUTHORITY.public_key)
    assert caught.value.reason is DocumentRefusal.WRONG_AUTHORITY
    relabelled = dataclasses.replace(theirs, authority_public_key=AUTHORITY.public_key)
    with pytest.raises(DocumentError) as caught:
        policy_from_document(relabelled, AUTHORITY.public_key)
    assert caught.value.reason is DocumentRefusal.BAD_SIGNATURE


def test_a_revocation_list_is_not_a_policy() -> None:
    other = sign_document(AUTHORITY, DocumentKind.REVOCATIONS, 7, ISSUED, SOURCE.encode())
    with pytest.raises(DocumentError) as caught:
        policy_from_document(other, AUTHORITY.public_key)
    assert caught.value.reason is DocumentRefusal.WRONG_KIND


@pytest.mark.parametrize(
    ("version", "payload", "detail"),
    [
        (8, SOURCE.encode(), "the policy says version 7, its document 8"),
        (7, b"\xff\xfe not text", "policy is not UTF-8 text"),
        (
            7,
            b"version = 7\n[[rules]]\nfrom = 3\n",
            "policy version 7: [[rules]] #1: 'to' is required",
        ),
    ],
)
def test_a_signed_but_inconsistent_policy_is_refused(
    version: int, payload: bytes, detail: str
) -> None:
    """The authority's signature alone is not enough: the payload must be a valid policy."""
    document = sign_document(AUTHORITY, DocumentKind.POLICY, version, ISSUED, payload)
    with pytest.raises(DocumentError) as caught:
        policy_from_document(document, AUTHORITY.public_key)
    assert caught.value.reason is DocumentRefusal.MALFORMED
    assert detail in str(caught.value)


def test_an_older_version_cannot_replace_a_newer_one() -> None:
    newer = sign_policy(AUTHORITY, SOURCE, ISSUED)
    older = sign_policy(AUTHORITY, SOURCE.replace("version = 7", "version = 6"), ISSUED + 60)
    with pytest.raises(DocumentError) as caught:
        accept_newer(older, newer, AUTHORITY.public_key)
    assert caught.value.reason is DocumentRefusal.NOT_NEWER


def test_the_example_in_docs_passes_its_own_tests() -> None:
    """docs/policy.md shows a complete policy: it must parse, and its tests must pass."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "policy.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(example, "docs/policy.md")
    results = run_tests(policy)
    assert len(results) == 3 and failures(results) == []
    assert [result.rule for result in results] == [2, None, None]  # alice is an admin
