"""When this process started, from the kernel (Linux), to time what happened before any of our code ran."""

from __future__ import annotations

import os
import time
from functools import lru_cache


@lru_cache(maxsize=1)
def process_started_at() -> float | None:
    """Unix time this process started (10 ms resolution), or None where /proc is not there."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, in clock ticks after boot
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))
