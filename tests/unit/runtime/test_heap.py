"""keep_freed_memory: big buffers freed and allocated again stop costing page faults.

Each case runs in a fresh interpreter, so that this test process's own heap
history cannot decide the outcome. The allocation pattern is the stream
links' in miniature: a dozen 256 KiB buffers alive at once, all freed, again.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gossipmesh.runtime.heap import user_tuned_malloc

PATTERN = """
import json, resource, sys
from gossipmesh.runtime.heap import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    blocks = [bytearray(256 * 1024) for _ in range(12)]
    del blocks
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": kept, "faults": faults}))
"""
PAGES_TOUCHED = 200 * 12 * 256 * 1024 // 4096


def run_pattern(mode: str) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin"}  # no GLIBC_TUNABLES from the caller
    done = subprocess.run(
        [sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reused_buffers_stop_faulting() -> None:
    default = run_pattern("default")
    kept = run_pattern("keep")
    # Without the fix the pattern re-faults most of its pages: the case the fix is for.
    assert int(str(default["faults"])) > PAGES_TOUCHED // 2
    assert kept["kept"] is True
    assert int(str(kept["faults"])) < PAGES_TOUCHED // 50


def test_operator_thresholds_win() -> None:
    assert user_tuned_malloc({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"})
    assert user_tuned_malloc({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert not user_tuned_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    assert not user_tuned_malloc({})
