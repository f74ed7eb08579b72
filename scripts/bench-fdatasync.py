#!/usr/bin/env python3
"""Write + fdatasync latency, appending to a file against writing inside a zero-filled one.

Usage: scripts/bench-fdatasync.py [DIR] [BYTES_PER_WRITE]   (default: /tmp, 8192)

What the journal's preallocated segments (src/journal/spare.rs) are for: an append changes
the file's size, so its fdatasync writes the inode as well as the data.
"""
import os
import sys
import time


def run(path, prealloc, n=2000, size=8192):
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY)
    try:
        if prealloc:
            zeros = b"\0" * (1 << 20)
            for _ in range((n * size >> 20) + 2):
                os.write(fd, zeros)
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        buf = b"x" * size
        times = []
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, buf)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.remove(path)
    times.sort()
    q = lambda p: times[int(n * p)] * 1e3
    print(f"{'zero-filled' if prealloc else 'append':12} p50 {q(0.5):.3f}  p90 {q(0.9):.3f}  p99 {q(0.99):.3f} ms")


if __name__ == "__main__":
    d = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 8192
    path = os.path.join(d, f"bench-fdatasync.{os.getpid()}")
    for _ in range(2):
        run(path, False, size=size)
        run(path, True, size=size)
