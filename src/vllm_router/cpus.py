"""How many CPUs this process may use: the default of `--threads`.

The smallest of the CPUs in the process's affinity mask (taskset, cpusets) and the cgroup CPU
quota rounded up (a container's `--cpus`, a pod's CPU limit; cgroup v2 `cpu.max`, else v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`), at least 1. `os.cpu_count()` counts the host's cores,
so an I/O thread per host core in a 2-CPU container would only add contention.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["cgroup_cpu_quota", "usable_cpus"]

_CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_cgroup_dirs(root: Path) -> list[Path]:
    """The folders of this process's cgroup, innermost first, up to the root (v2 nesting)."""
    text = _read(Path("/proc/self/cgroup")) or ""
    dirs: list[Path] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0" and parts[1] == "":  # the v2 line
            relative = parts[2].strip("/")
            here = root / relative if relative else root
            while True:
                dirs.append(here)
                if here == root or root not in here.parents:
                    break
                here = here.parent
    if root not in dirs:
        dirs.append(root)
    return dirs


def cgroup_cpu_quota(root: Path = _CGROUP) -> float | None:
    """CPUs the cgroup quota allows (2.5 for `--cpus 2.5`), or None when there is no quota."""
    quotas: list[float] = []
    for folder in _own_cgroup_dirs(root):  # v2: the tightest limit on the way up counts
        text = _read(folder / "cpu.max")
        if not text:
            continue
        fields = text.split()
        if len(fields) == 2 and fields[0] != "max":
            try:
                quota, period = float(fields[0]), float(fields[1])
            except ValueError:
                continue
            if quota > 0 and period > 0:
                quotas.append(quota / period)
    if quotas:
        return min(quotas)
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        quota_text, period_text = _read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us")
        try:
            quota, period = int(quota_text or ""), int(period_text or "")
        except ValueError:
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def usable_cpus() -> int:
    """min(affinity, ceil(cgroup quota)), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)
