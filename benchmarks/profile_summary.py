"""Summarise a py-spy raw (collapsed-stack) profile: share of samples per leaf frame.

python benchmarks/profile_summary.py /tmp/prof.sender.txt [top]
"""

from __future__ import annotations

import sys
from collections import Counter


def leaf_shares(path: str) -> tuple[int, Counter[str]]:
    """Total samples and samples per innermost frame (function and file)."""
    leaves: Counter[str] = Counter()
    total = 0
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            total += samples
            leaf = stack.split(";")[-1]
            leaves[leaf.split(" (")[0] + " " + leaf.rsplit("/", 1)[-1].rstrip(")")] += samples
    return total, leaves


def inclusive_shares(path: str) -> tuple[int, Counter[str]]:
    """Total samples and samples in which each function is anywhere on the stack."""
    functions: Counter[str] = Counter()
    total = 0
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            total += samples
            for name in {frame.split(" (")[0] for frame in stack.split(";")}:
                functions[name] += samples
    return total, functions


def main() -> None:
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    for title, (total, shares) in (
        ("self (innermost frame, by line)", leaf_shares(sys.argv[1])),
        ("inclusive (function anywhere on the stack)", inclusive_shares(sys.argv[1])),
    ):
        print(f"-- {title}")
        for name, samples in shares.most_common(top):
            print(f"{100 * samples / max(total, 1):5.1f}%  {name}")


if __name__ == "__main__":
    main()
