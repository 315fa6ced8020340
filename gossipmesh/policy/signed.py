"""The policy as the authority signs it and as nodes accept it.

The payload of a POLICY `SignedDocument` is the policy's TOML text (UTF-8),
exactly as written: what a node runs is what the operator reviewed and
tested. The document's version is the TOML's `version`, so a node's
`accept_newer` and the policy agree on which one is newer.
"""

from __future__ import annotations

from gossipmesh.errors import ConfigError, GossipmeshError
from gossipmesh.policy.check import failures, run_tests
from gossipmesh.policy.model import Policy, parse_policy
from gossipmesh.trust.document import (
    DocumentError,
    DocumentKind,
    DocumentRefusal,
    SignedDocument,
    Signer,
    sign_document,
)


class PolicyTestsFailed(GossipmeshError):
    """A policy whose own [[tests]] fail is never signed."""

    def __init__(self, where: str, failed: list[str], total: int) -> None:
        super().__init__(
            f"{where}: {len(failed)} of {total} tests fail, refusing to sign: " + "; ".join(failed)
        )
        self.failed = failed


def sign_policy(
    authority: Signer, policy_source: str, issued_at: int, where: str = "policy"
) -> SignedDocument:
    """Parse, test and sign: ConfigError if it does not parse, PolicyTestsFailed if tests fail."""
    policy = parse_policy(policy_source, where)
    results = run_tests(policy)
    failed = failures(results)
    if failed:
        raise PolicyTestsFailed(where, [result.describe() for result in failed], len(results))
    return sign_document(
        authority, DocumentKind.POLICY, policy.version, issued_at, policy_source.encode("utf-8")
    )


def policy_from_document(document: SignedDocument, authority_public_key: bytes) -> Policy:
    """Verify a POLICY document and parse its payload; DocumentError when it cannot be used."""
    document.verify(authority_public_key, DocumentKind.POLICY)
    return parse_policy_document(document)


def parse_policy_document(document: SignedDocument) -> Policy:
    """The policy of a POLICY document already verified; DocumentError (malformed) if none."""
    try:
        text = document.payload.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError(DocumentRefusal.MALFORMED, "policy is not UTF-8 text") from None
    try:
        policy = parse_policy(text, f"policy version {document.version}")
    except ConfigError as exc:
        raise DocumentError(DocumentRefusal.MALFORMED, str(exc)) from None
    if policy.version != document.version:
        raise DocumentError(
            DocumentRefusal.MALFORMED,
            f"the policy says version {policy.version}, its document {document.version}",
        )
    return policy
