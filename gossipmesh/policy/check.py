"""Running a policy's [[tests]] offline: what `policy check` prints and `policy sign` requires.

Each test is decided by the reference evaluator (`Policy.first_allowing_rule`)
between its two synthetic endpoints (see `PolicyTest`), so a report can name
the rule that allowed the flow, or say that none did.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossipmesh.policy.model import Policy, PolicyTest, Protocol

_TEST_PROTOCOL_NUMBERS = {Protocol.TCP: 6, Protocol.UDP: 17, Protocol.ICMP: 1}


@dataclass(frozen=True)
class TestResult:
    test: PolicyTest
    allowed: bool
    rule: int | None
    """The number of the first rule that allowed it; None when it was denied."""

    @property
    def expected(self) -> bool:
        return self.test.expect_allow

    @property
    def passed(self) -> bool:
        return self.allowed == self.test.expect_allow

    def describe(self) -> str:
        """One line: `PASS test #1: host:alice -> group:web tcp/22: allow (rule #2)`."""
        outcome = "allow" if self.allowed else "deny"
        why = f"rule #{self.rule}" if self.rule is not None else "no rule allows it"
        head = (
            f"{'PASS' if self.passed else 'FAIL'} test #{self.test.number}: {self.test.description}"
        )
        if self.passed:
            return f"{head}: {outcome} ({why})"
        expected = "allow" if self.expected else "deny"
        return f"{head}: expected {expected}, got {outcome} ({why})"


def run_tests(policy: Policy) -> list[TestResult]:
    results = []
    for test in policy.tests:
        protocol = _TEST_PROTOCOL_NUMBERS[test.protocol]
        rule = policy.first_allowing_rule(test.source, test.destination, protocol, test.port)
        results.append(TestResult(test, rule is not None, rule.number if rule else None))
    return results


def failures(results: list[TestResult]) -> list[TestResult]:
    return [result for result in results if not result.passed]
