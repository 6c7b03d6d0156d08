"""Shared benchmark plumbing: repeated timing with medians, peak-RSS and tracemalloc memory, machine
facts, waiting for a quiet machine, and rendering results as text, Markdown and JSON.

Every harness times mlwatch and its peers in the same process, on the same data, with a warm-up
run first and the median of several repetitions reported, so a ratio is never a comparison of two
different machines or two different days.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "Timing",
    "callgrind_args",
    "callgrind_per_item",
    "fmt_bytes",
    "fmt_per_value",
    "fmt_rate",
    "fmt_seconds",
    "load_average",
    "machine_info",
    "measure",
    "render_markdown",
    "render_text",
    "split_cpus",
    "tracemalloc_peak",
    "tree_cpu_seconds",
    "wait_for_quiet",
    "write_results",
]

T = TypeVar("T")

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


# --------------------------------------------------------------------------- memory
def _status_kib(field_name: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in KiB (None off Linux)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """The process's resident-set high-water mark (VmHWM, else ru_maxrss)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``).

    Without a reset the high-water mark still holds the peak of whatever ran before (building the
    benchmark frame, a peer's run), and a growth measured from it would read as zero.
    """
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def tracemalloc_peak(fn: Callable[[], object]) -> int:
    """Peak bytes traced by tracemalloc while `fn` runs: Python objects and numpy buffers (numpy
    reports its allocations to tracemalloc); native allocations inside datasketches are not seen."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return int(peak)


# --------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Wall and CPU seconds of each timed repetition, and the peak-RSS growth each one caused."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_growth: list[int] = field(default_factory=list)
    rss_exact: bool = True  # False when VmHWM could not be reset (growth is then a lower bound)
    warmup_wall: float | None = None

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def rss_growth_median(self) -> int:
        return int(statistics.median(self.rss_growth))

    def as_dict(self) -> dict[str, Any]:
        return {
            "reps": len(self.wall),
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "wall_median_s": self.wall_median,
            "cpu_median_s": self.cpu_median,
            "wall_min_s": min(self.wall),
            "wall_max_s": max(self.wall),
            "rss_growth_bytes": self.rss_growth,
            "rss_growth_median_bytes": self.rss_growth_median,
            "rss_growth_exact": self.rss_exact,
            "warmup_wall_s": self.warmup_wall,
        }


def measure(
    fn: Callable[[], T],
    *,
    reps: int,
    warmup: Callable[[], object] | None = None,
    on_rep: Callable[[int, float], None] | None = None,
) -> tuple[Timing, T]:
    """Run `warmup` (default: `fn`) once untimed, then `fn` `reps` times; returns the timings and
    the last result (for the caller's sanity checks). The garbage collector runs between repetitions,
    never inside one, and stays enabled inside (as it is in production)."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    timing = Timing()
    gc.collect()
    start = time.perf_counter()
    (warmup or fn)()
    timing.warmup_wall = time.perf_counter() - start
    result: T | None = None
    for i in range(reps):
        result = None
        gc.collect()
        timing.rss_exact = reset_peak_rss() and timing.rss_exact
        base = rss_bytes() or peak_rss_bytes()
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        w1, c1 = time.perf_counter(), time.process_time()
        timing.rss_growth.append(max(0, peak_rss_bytes() - base))
        timing.wall.append(w1 - w0)
        timing.cpu.append(c1 - c0)
        if on_rep is not None:
            on_rep(i, w1 - w0)
    assert result is not None
    return timing, result


# --------------------------------------------------------------------------- machine
def callgrind_args(argv: Sequence[str] | None, doc: str | None, variants: Sequence[str]) -> Any:
    """The command line of a callgrind benchmark: ``--python`` (the real binary, not a shim) and ``--variants``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=os.path.realpath(sys.executable), help="interpreter to run (the real binary, not a shim)")
    ap.add_argument("--variants", nargs="*", default=list(variants), choices=variants)
    return ap.parse_args(argv)


def callgrind_per_item(python: str, child_template: str, loops: Mapping[str, tuple[int, int]], unit: str) -> dict[str, int]:
    """Instructions per item of each variant, counted by valgrind's callgrind.

    `child_template` is a script (a `str.format` template whose ``{root}`` is the repository root,
    for its imports) run as ``python script VARIANT N`` that does the same start-up and then N
    items; each variant runs twice, with `loops[variant]` = (short N, long N), under a fixed
    ``PYTHONHASHSEED``, and the difference over the extra items is the cost of one. Prints each
    figure as it comes, "per `unit`"; exits when valgrind is missing.
    """
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"mlwatch_callgrind_{os.getpid()}.py"
    script.write_text(child_template.format(root=str(Path(__file__).resolve().parent.parent)))
    env = dict(os.environ, PYTHONHASHSEED="0")

    def count(variant: str, n: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, str(script), variant, str(n)],
            capture_output=True, text=True, env=env, check=True,
        )
        match = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
        if match is None:
            raise RuntimeError(f"no callgrind total for {variant}: {out.stderr[-500:]}")
        return int(match.group(1))

    per_item: dict[str, int] = {}
    try:
        for variant, (short, long) in loops.items():
            per_item[variant] = (count(variant, long) - count(variant, short)) // (long - short)
            print(f"{variant:>10}: {per_item[variant]:>10,} instructions per {unit}", flush=True)
    finally:
        script.unlink(missing_ok=True)
    return per_item


def split_cpus() -> tuple[int, list[int]] | None:
    """(the last CPU, the others) of this process's affinity, for pinning a server apart from its
    load generator with taskset; None with fewer than two CPUs or without taskset."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None
    return cpus[-1], cpus[:-1]


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU time (user + system, with reaped children's) of `root` and every live descendant, from /proc.

    A process's threads are in its own figure; its helpers (a collector's ingest worker, Spark's JVM
    and the Python workers its daemon forks and reaps) in its descendants'. 0.0 where /proc is absent.
    """
    root = os.getpid() if root is None else root
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(x) for x in fields[11:15]) / tick  # utime, stime, cutime, cstime
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(cpu.get(pid, 0.0) for pid in tree)


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def wait_for_quiet(max_load: float, max_wait_s: float, *, poll_s: float = 15.0, log: Callable[[str], None] = print) -> float:
    """Sleep while the 1-minute load average exceeds `max_load`, for at most `max_wait_s`; returns
    the load when measuring starts (other engineers' jobs share this machine's two cores)."""
    deadline = time.monotonic() + max_wait_s
    load = load_average()[0]
    while load > max_load and time.monotonic() < deadline:
        log(f"load {load:.2f} > {max_load}: waiting for a quieter moment ({deadline - time.monotonic():.0f} s left)")
        time.sleep(poll_s)
        load = load_average()[0]
    if load > max_load:
        log(f"load still {load:.2f} after {max_wait_s:.0f} s: measuring anyway (see the load in the results)")
    return load


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_revision(repo: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(packages: Sequence[str], repo: Path | None = None) -> dict[str, Any]:
    """CPU model, core counts, OS, Python and the versions of `packages` (None when absent)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": None if mem_kib is None else round(mem_kib / 2**20, 1),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "packages": {name: _version(name) for name in packages},
        "git": _git_revision(repo) if repo is not None else None,
    }


# --------------------------------------------------------------------------- formatting
def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.1f} µs"


def fmt_per_value(s: float | None) -> str:
    """Seconds per value as ns or µs."""
    if s is None:
        return "—"
    return f"{s * 1e9:.0f} ns" if s < 1e-6 else f"{s * 1e6:.2f} µs"


def fmt_rate(values_per_s: float | None) -> str:
    if values_per_s is None:
        return "—"
    if values_per_s >= 1e6:
        return f"{values_per_s / 1e6:.1f} M/s"
    return f"{values_per_s / 1e3:.0f} k/s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    if n >= 2**10:
        return f"{n / 2**10:.1f} KiB"
    return f"{n:.0f} B"


def render_text(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def render_markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_results(out_dir: Path, name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under `out_dir`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    md_path = out_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    md_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n", encoding="utf-8")
    return json_path, md_path
