"""Peak resident memory of this process since it started its program (no heavy imports).

``getrusage(RUSAGE_SELF).ru_maxrss`` is the wrong number for a child started by a large
process: Linux keeps the largest RSS the task had before ``execve`` (``signal->maxrss`` takes
the old address space's high-water mark at exec, ``fs/exec.c``), and after ``fork``/``vfork``
that is the parent's RSS. ``VmHWM`` in ``/proc/self/status`` belongs to the address space the
program runs in, so it counts only what this program touched (proc(5)).
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """Peak RSS of this program in MiB: ``VmHWM`` (Linux), else ``ru_maxrss`` (KiB on Linux,
    bytes on macOS; other systems only)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if rss > 1 << 32 else 1)
