"""Measures this machine's own stalls: spins on the monotonic clock for
SECONDS and records every gap over 1 ms, i.e. every moment the process was
not running though it wanted to (hypervisor steal, interrupts, the kernel).
Run it pinned to a core nothing else uses. Prints one JSON line.

Usage: python3 scripts/stalls.py [SECONDS]   (default 10)"""
import json
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
threshold = 1_000_000  # 1 ms, in ns
clock = time.perf_counter_ns
end = clock() + int(seconds * 1e9)
last = clock()
gaps = []
while last < end:
    now = clock()
    if now - last > threshold:
        gaps.append(now - last)
    last = now
gaps.sort()
print(json.dumps({
    "seconds": seconds,
    "stalls_over_1ms": len(gaps),
    "per_second": round(len(gaps) / seconds, 2),
    "max_ms": round(gaps[-1] / 1e6, 2) if gaps else 0,
    "median_ms": round(gaps[len(gaps) // 2] / 1e6, 2) if gaps else 0,
}))
