"""Resident memory of this process, read from Linux's ``/proc`` (the benchmarks' one copy)."""

from __future__ import annotations

MB = 2**20


def status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (VmRSS: now; VmHWM: the peak so far)."""
    with open("/proc/self/status", encoding="ascii") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False
