"""Where a run's wall time goes: stage durations for summary.json's `timings` (seconds)."""

from __future__ import annotations

import os
import time


def process_age_seconds() -> float | None:
    """Seconds since this process started (interpreter start-up + imports + config, when called first
    thing in `train`); from /proc (Linux, 10 ms ticks), None elsewhere."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 3)


class StageClock:
    """`lap(name)` records the seconds since the previous lap (or creation) under `seconds[name]`, and the
    seconds since creation under `at[name]`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.at: dict[str, float] = {}
        self._started = self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 3)
        self.at[name] = round(now - self._started, 3)
        self._last = now
