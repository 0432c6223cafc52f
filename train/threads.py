"""torch's intra-op threads for training: a default that does not collapse when other work shares the cores.

torch's OpenMP threads meet at a barrier after every parallel operation. When one of them
shares its core with another busy process, every barrier waits for a time slice: measured on
2 cores beside one busy loop, 2 threads ran a small model 4.2x slower than 1 thread. So the
default is the number of cores that are idle when the run starts (measured over a short
window), and the threads give up their core after a short spin (GOMP_SPINCOUNT), which keeps
the idle speed and bounds the loss when work arrives later (bench/threads.py).
"""

import os
import time

SPINCOUNT = "1000"  # libgomp's spins before a waiting thread sleeps (its default: 300,000)
WINDOW = 0.25  # seconds over which idle cores are counted


def prepare_environment() -> None:
    """Before torch is imported: waiting threads sleep soon (a setting of the user's stays)."""
    os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def idle_cores(window: float = WINDOW) -> int:
    """How many of the available cores were idle over `window` seconds (Linux's /proc/stat);
    all of them where that cannot be read."""
    cores = available_cores()
    try:
        first = _busy_and_total()
        time.sleep(window)
        second = _busy_and_total()
    except (OSError, ValueError, IndexError):
        return cores
    busy, total = (b - a for a, b in zip(first, second))
    machine = os.cpu_count() or cores
    busy_cores = machine * busy / total if total > 0 else 0.0
    return max(1, min(cores, round(machine - busy_cores)))


def _busy_and_total() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def default_threads() -> int:
    """OMP_NUM_THREADS where the user set it (torch reads it); otherwise the idle cores."""
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        import torch

        return torch.get_num_threads()
    return idle_cores()
