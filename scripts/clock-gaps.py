#!/usr/bin/env python3
"""Reads the clock in a tight loop for N seconds (default 10) and reports every jump of more
than 0.5 ms: on an otherwise idle machine those are stalls of the host (or of the kernel), which
any server or load client meets the same way. Run one per core at once, e.g.
    python3 scripts/clock-gaps.py 10 & python3 scripts/clock-gaps.py 10; wait
(BENCHMARKS.md, "the machine's own stalls")."""
import sys
import time

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
t0 = last = time.perf_counter()
gaps = []
while last - t0 < secs:
    t = time.perf_counter()
    if t - last > 0.0005:
        gaps.append(t - last)
    last = t
total = sum(gaps)
print(
    f"jumps over 0.5 ms: {len(gaps)}  total {total * 1e3:.1f} ms ({total / secs * 100:.2f}% of the time)"
    f"  max {max(gaps, default=0) * 1e3:.2f} ms  over 2 ms: {sum(g > 0.002 for g in gaps)}"
    f"  over 10 ms: {sum(g > 0.01 for g in gaps)}"
)
