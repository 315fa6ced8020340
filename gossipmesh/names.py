"""Node names: DNS label rules, key-derived names and the name-conflict rule.

Every node answers to a name derived from its key (`gm-` and 16 base32
characters of its node id) that no other key can hold, and may claim one
human name. Conflicts between human claims are settled like IPv4 claims:
the earliest `claimed_since` wins, equal times go to the lower node id. The
loser keeps its key-derived name, so it stays reachable by name.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gossipmesh.errors import LabelError

MAX_LABEL_LENGTH = 63
KEY_NAME_PREFIX = "gm-"
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def normalize_label(label: str) -> str:
    """Lower-case and validate one DNS label (RFC 1035: letters, digits, hyphen)."""
    if not isinstance(label, str):
        raise LabelError("a name must be text")
    if not label.isascii():
        raise LabelError(f"name {label!r}: only ASCII letters, digits and hyphens are allowed")
    lowered = label.lower()
    if not lowered:
        raise LabelError("a name cannot be empty")
    if len(lowered) > MAX_LABEL_LENGTH:
        raise LabelError(f"name {label!r}: longer than {MAX_LABEL_LENGTH} characters")
    if not _LABEL_RE.fullmatch(lowered):
        raise LabelError(
            f"name {label!r}: use letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return lowered


def is_valid_label(label: str) -> bool:
    try:
        normalize_label(label)
    except LabelError:
        return False
    return True


def key_name(node_id: bytes) -> str:
    """The name only this node id can hold: `gm-` + 16 base32 characters (80 bits)."""
    return KEY_NAME_PREFIX + base64.b32encode(node_id[:10]).decode("ascii").lower()


def is_key_name(label: str) -> bool:
    """Whether a label has the form of a key-derived name (reserved for keys)."""
    return label.lower().startswith(KEY_NAME_PREFIX) and len(label) == len(KEY_NAME_PREFIX) + 16


def check_claimable(label: str, node_id: bytes) -> str:
    """Validate a human name claim by `node_id`; returns the normalized label.

    Key-shaped names are refused unless they are the claimant's own, so no one
    can squat another node's key name.
    """
    normalized = normalize_label(label)
    if is_key_name(normalized) and normalized != key_name(node_id):
        raise LabelError(
            f"name {label!r}: names of the form {KEY_NAME_PREFIX}XXXXXXXXXXXXXXXX "
            "are reserved for key-derived names"
        )
    return normalized


def default_name_from_hostname(hostname: str, node_id: bytes) -> str:
    """The default claim: the first label of the hostname, if valid, else the key name."""
    first = hostname.split(".", 1)[0]
    try:
        return check_claimable(first, node_id)
    except LabelError:
        return key_name(node_id)


@dataclass(frozen=True, order=True)
class NameClaim:
    """A node's signed claim on a human name."""

    claimed_since: int
    node_id: bytes
    name: str


def resolve_name_claims(claims: Iterable[NameClaim]) -> Mapping[str, bytes]:
    """Who holds each claimed name: earliest `claimed_since`, then lowest node id.

    Invalid claims (bad labels, someone else's key name) are ignored; a node
    holds at most its earliest-ordered valid claim. Order of input is irrelevant.
    """
    valid: list[NameClaim] = []
    for claim in set(claims):
        try:
            normalized = check_claimable(claim.name, claim.node_id)
        except LabelError:
            continue
        valid.append(NameClaim(claim.claimed_since, claim.node_id, normalized))
    holders: dict[str, bytes] = {}
    nodes_with_name: set[bytes] = set()
    for claim in sorted(valid):
        if claim.name in holders or claim.node_id in nodes_with_name:
            continue
        holders[claim.name] = claim.node_id
        nodes_with_name.add(claim.node_id)
    return holders


class NameIndex:
    """`resolve_name_claims` kept up to date one node at a time (one claim per node).

    A claim touches only the claimants of its own name, so a directory update
    costs O(claimants of that name), not a pass over every record. The
    holders are exactly those of `resolve_name_claims` over the current
    claims (tests compare both).
    """

    def __init__(self) -> None:
        self.holders: dict[str, bytes] = {}
        """Human name -> the node id holding it."""
        self._claims: dict[bytes, NameClaim] = {}
        """Node id -> its valid claim, name normalized."""
        self._claimants: dict[str, dict[bytes, NameClaim]] = {}

    def name_of(self, node_id: bytes) -> str | None:
        """The human name a node holds, if any."""
        claim = self._claims.get(node_id)
        if claim is not None and self.holders.get(claim.name) == node_id:
            return claim.name
        return None

    def put(self, node_id: bytes, claim: NameClaim | None) -> set[bytes]:
        """Set a node's claim (None: no name); returns the nodes whose held name changed."""
        normalized: NameClaim | None = None
        if claim is not None:
            try:
                name = check_claimable(claim.name, claim.node_id)
            except LabelError:
                pass
            else:
                normalized = NameClaim(claim.claimed_since, claim.node_id, name)
        if self._claims.get(node_id) == normalized:
            return set()
        changed = self.remove(node_id)
        if normalized is not None:
            self._claims[node_id] = normalized
            self._claimants.setdefault(normalized.name, {})[node_id] = normalized
            changed |= self._elect(normalized.name)
        return changed

    def remove(self, node_id: bytes) -> set[bytes]:
        """Forget a node's claim; returns the nodes whose held name changed."""
        claim = self._claims.pop(node_id, None)
        if claim is None:
            return set()
        claimants = self._claimants[claim.name]
        del claimants[node_id]
        if not claimants:
            del self._claimants[claim.name]
        return {node_id} | self._elect(claim.name)

    def _elect(self, name: str) -> set[bytes]:
        """Give `name` to its least claim; returns the old and new holder if it moved."""
        claimants = self._claimants.get(name)
        holder = min(claimants.values()).node_id if claimants else None
        previous = self.holders.get(name)
        if previous == holder:
            return set()
        if holder is None:
            del self.holders[name]
        else:
            self.holders[name] = holder
        return {n for n in (previous, holder) if n is not None}
