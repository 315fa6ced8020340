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


def main() -> None:
    total, leaves = leaf_shares(sys.argv[1])
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    for leaf, samples in leaves.most_common(top):
        print(f"{100 * samples / max(total, 1):5.1f}%  {leaf}")


if __name__ == "__main__":
    main()
