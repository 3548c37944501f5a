"""Peak resident memory of this process, for the benchmarks' child processes."""

from __future__ import annotations


def peak_rss_mib() -> int:
    """VmHWM in MiB: this process's own high-water mark since exec.

    Not getrusage's ru_maxrss: Linux keeps that across execve, so a child started by a large
    parent reports the parent's size at fork.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")
