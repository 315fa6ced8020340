"""The filter's counters: what it let in and every drop by its reason."""

from __future__ import annotations

from dataclasses import asdict, dataclass

DROP_REASONS = frozenset(
    (
        "no_rule",
        "no_policy",
        "malformed",
        "fragment",
        "table_full",
        "source_limit",
        "icmp_unrelated",
        "icmp_refused",
    )
)
"""The counters that count dropped packets (`status` shows them as policy_dropped_<reason>)."""


@dataclass
class FilterCounters:
    """What the filter let in, and every drop by its reason (for `status`)."""

    new_inbound: int = 0
    """New flows from the mesh that a rule allowed."""
    new_outbound: int = 0
    """Flows this node or its leaves opened into the mesh."""
    related: int = 0
    """ICMP errors about a flow tracked here, let in."""
    no_rule: int = 0
    no_policy: int = 0
    malformed: int = 0
    fragment: int = 0
    """Later fragments whose first fragment was not admitted (or came after them)."""
    table_full: int = 0
    """New flows (either way) refused: the table held only confirmed flows."""
    source_limit: int = 0
    """New inbound flows refused: their source already held MAX_FLOWS_PER_SOURCE."""
    icmp_unrelated: int = 0
    """ICMP errors quoting nothing tracked here (or not addressed to its sender)."""
    icmp_refused: int = 0
    """Redirects, router and neighbour discovery: never taken from the mesh."""
    expired: int = 0
    evicted: int = 0
    revoked: int = 0
    """Flows opened from the mesh that a new policy version no longer allows."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
