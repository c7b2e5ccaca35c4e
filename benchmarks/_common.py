"""Helpers shared by the benchmark scripts (not part of the minidyn package).

Every script measures the commands it compares in ONE process run, interleaving them (the
order rotates from repeat to repeat), and reports each ratio as the median and min-max of the
per-repeat ratios: repeat r's minidyn time is divided by repeat r's reference time, so slow
phases of a shared machine hit both sides of a ratio alike.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import statistics
import sys
import time
import types
from typing import Callable, Sequence


def early_threads(argv: Sequence[str] | None = None) -> int | None:
    """Honour `--threads N` for the BLAS/OpenMP pools too: sets OMP_NUM_THREADS,
    OPENBLAS_NUM_THREADS and MKL_NUM_THREADS (unless already set). Must run before numpy or
    torch is imported; torch.set_num_threads is applied later by set_threads."""
    argv = list(sys.argv[1:] if argv is None else argv)
    value = None
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
    if value is None or not value.isdigit() or int(value) < 1:
        return None
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, value)
    return int(value)


def tune_malloc_like_the_cli() -> bool:
    """Apply the CLI's glibc mallopt tuning (before torch allocates); honours MINIDYN_MALLOC_TUNING=0."""
    for module in ("minidyn.runs.malloc", "minidyn.cli.malloc"):  # its home now, and before
        try:
            return importlib.import_module(module).tune_glibc_malloc()
        except ImportError:  # an older checkout: the other home, or none at all
            continue
    return False


def stats(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    vals = [v for v in values if v == v]  # drop NaN
    if not vals:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(vals), min(vals), max(vals)


def fmt(values: Sequence[float], digits: int = 3, pct: bool = False) -> str:
    """'median (min-max)' of the values; pct=True prints (v - 1) as a signed percentage."""
    if not values:
        return "n/a"
    med, lo, hi = stats(values)
    if med != med:
        return "n/a"
    if pct:
        return f"{(med - 1) * 100:+.1f}% ({(lo - 1) * 100:+.1f}%..{(hi - 1) * 100:+.1f}%)"
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def verdict(values: Sequence[float], target: float, at_most: bool = True) -> str:
    """'met' if the median meets the target; 'missed' if every repeat misses it; otherwise
    'unresolved' (the median misses, but the min-max range reaches the target: noise)."""
    med, lo, hi = stats(values)
    if med != med:
        return "n/a"
    ok = (lambda v: v <= target) if at_most else (lambda v: v >= target)
    if ok(med):
        return "met"
    return "unresolved" if ok(lo if at_most else hi) else "missed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: str = "cpu") -> str:
    """One line describing where the numbers come from."""
    import torch

    parts = [f"cpu: {cpu_model()}", f"{os.cpu_count()} logical cores",
             f"torch {torch.__version__}", f"{torch.get_num_threads()} torch threads",
             f"python {platform.python_version()}"]
    if device.startswith("cuda") and torch.cuda.is_available():
        parts.insert(0, f"gpu: {torch.cuda.get_device_name(torch.device(device))}")
    line = "machine: " + ", ".join(parts)
    try:
        load = os.getloadavg()[0]
    except OSError:
        return line
    line += f", load average {load:.2f}"
    cores = os.cpu_count() or 1
    if torch.get_num_threads() > 1 and load > cores / 2 and not device.startswith("cuda"):
        line += (f"\nnote: other processes are using the CPU (load {load:.1f} on {cores} cores); with "
                 f"{torch.get_num_threads()} torch threads every parallel region waits for its slowest "
                 "thread, so timings swing widely: --threads 1 gives steadier ratios")
    return line


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def timer(device: str) -> Callable[[Callable[[], object]], float]:
    """time_it(fn) -> seconds of one call; synchronises the GPU before and after on CUDA."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def time_it(fn: Callable[[], object]) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    return time_it


def rotations(names: Sequence[str], repeats: int):
    """Per repeat, the names in a rotated order (each name takes every position in turn)."""
    names = list(names)
    for r in range(repeats):
        k = r % len(names)
        yield r, names[k:] + names[:k]


def time_rotated(fns: dict, repeats: int, time_it) -> tuple[dict, dict]:
    """Time every function in fns once per repeat, in rotated order (see `rotations`).

    Returns ({name: [seconds per repeat]}, {name: what its last call returned})."""
    times, results = {name: [] for name in fns}, {}
    for _, order in rotations(list(fns), repeats):
        for name in order:
            out = {}
            times[name].append(time_it(lambda: out.setdefault("r", fns[name]())))
            results[name] = out["r"]
    return times, results


def say(*args) -> None:
    print(*args, flush=True)


def warn(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr, flush=True)


def run(main: Callable[[], int | None]) -> None:
    """Run a script's main(): exit with its return code, or with a one-line error for a
    MinidynError (e.g. --device cuda without a GPU) instead of a traceback."""
    from minidyn.errors import MinidynError

    try:
        sys.exit(main())
    except MinidynError as exc:
        sys.exit(f"error: {exc}")


class _Bare(types.ModuleType):
    """torchattacks as a bare package: its submodules without its __init__."""


def load_torchattacks(module: str, name: str):
    """(torchattacks.<name> or None, a note saying which torchattacks and how it was imported)."""
    try:
        version = importlib.metadata.version("torchattacks")
    except importlib.metadata.PackageNotFoundError:
        return None, "torchattacks not installed (pip install --no-deps torchattacks)"
    reason = "scipy"
    if not isinstance(sys.modules.get("torchattacks"), _Bare):
        try:
            import torchattacks

            return getattr(torchattacks, name), f"torchattacks {version}"
        except ImportError as exc:
            reason = exc.name or str(exc)
        # The package's __init__ imports every attack, and a few need scipy (or torchvision).
        # PGD and APGD need only torch: load torchattacks.attack and torchattacks.attacks.<module>
        # under a bare package module instead of running that __init__.
        for key in [k for k in sys.modules if k == "torchattacks" or k.startswith("torchattacks.")]:
            del sys.modules[key]
        spec = importlib.util.find_spec("torchattacks")
        if spec is None or not spec.submodule_search_locations:
            return None, f"torchattacks {version} cannot be imported (needs {reason})"
        package = _Bare("torchattacks")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["torchattacks"] = package
    try:
        loaded = importlib.import_module(f"torchattacks.attacks.{module}")
    except ImportError as exc:
        del sys.modules["torchattacks"]
        return None, f"torchattacks {version} {name} cannot be imported (needs {exc.name or exc})"
    return getattr(loaded, name), f"torchattacks {version} ({name} module only; the package import needs {reason})"
