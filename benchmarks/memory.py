#!/usr/bin/env python
"""Peak memory of evaluation against the number of test examples (it must not grow with it).

    python benchmarks/memory.py                       # numpy mlp + torch cnn4, N = 1024 and 4096
    python benchmarks/memory.py --n 4096 --steps 10 --threads 1

`minidyn.runs.monitor.monitor` (clean accuracy on every example, PGD accuracy on every example here:
limit=None) streams over the test set one batch at a time and keeps only counts. For each
backend and each size (N and 4N) a fresh child process builds the test set (mnist-sample test
digits tiled to the size: that input is allocated before the measurement starts) and the
model, runs a warm-up evaluation on one batch, then measures the evaluation of all examples:

    rss_growth   peak resident set size during evaluate minus the resident size just before
                 (VmHWM after resetting it through /proc/self/clear_refs; Linux only)
    traced_peak  peak of Python-traced allocations during evaluate (tracemalloc; numpy
                 arrays are traced, torch's own allocator is not: n/a for torch)

and prints both for N and 4N and their ratio 4N / N. Bounded memory means a ratio near 1 (the
growth is the per-batch working set), where a version that kept every example's adversarial
image would need 4x. The CLI's glibc allocator tuning is applied first, as in `minidyn train`.

Choose N a multiple of --batch: a last, smaller batch allocates differently shaped buffers,
which costs torch a few tens of MiB more resident memory (allocator fragmentation, once, not
per example: with batch 128, N = 2000 vs 8000 measured 38 vs 80 MiB, N = 1024, 4096, 16384
measured 51, 48, 45 MiB).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import early_threads, run, tune_malloc_like_the_cli  # noqa: E402

MODELS = {"numpy": "mlp", "torch": "cnn4"}


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(backend: str, n: int, steps: int, batch: int) -> dict:
    import tracemalloc

    import numpy as np

    from minidyn.backend import get_backend
    from minidyn.data import Dataset, load_dataset
    from minidyn.runs.monitor import monitor as evaluate

    options = {"device": "cpu"} if backend == "torch" else {}
    B = get_backend(backend, **options)
    test = load_dataset("mnist-sample", "test")
    reps = -(-n // len(test))
    data = Dataset("tiled", np.ascontiguousarray(np.tile(test.x, (reps, 1, 1, 1))[:n]),
                   np.tile(test.y, reps)[:n].copy(), test.num_classes, "test")
    model = B.make_model(MODELS[backend], (1, 28, 28), 10, seed=0)
    warm = Dataset("warm", data.x[:batch], data.y[:batch], 10, "test")
    evaluate(B, model, warm, eps=0.3, steps=steps, batch_size=batch, seed=0)

    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    tracemalloc.start()
    result = evaluate(B, model, data, eps=0.3, steps=steps, batch_size=batch, seed=0)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"n": n, "rss_growth": _status("VmHWM") - before,
            "traced_peak": traced_peak if backend != "torch" else None,
            "pgd_n": result["pgd_n"], "data_bytes": data.x.nbytes + data.y.nbytes}


def mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1024, help="the smaller size N (the other is 4N)")
    parser.add_argument("--steps", type=int, default=2, help="PGD steps of the evaluation")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--backends", default="numpy,torch")
    parser.add_argument("--threads", type=int, help="BLAS/OpenMP/torch threads")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        early_threads()
        tune_malloc_like_the_cli()
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        print(json.dumps(child(args.child, args.n, args.steps, args.batch)))
        return

    print(f"evaluate(): clean + PGD-{args.steps} accuracy on every example, batch {args.batch}")
    print(f"{'backend':8s} {'model':6s} {'N':>6s} {'rss_growth':>12s} {'traced_peak':>12s} {'input data':>12s}")
    for backend in args.backends.split(","):
        rows = []
        for n in (args.n, 4 * args.n):
            cmd = [sys.executable, __file__, "--child", backend, "--n", str(n), "--steps", str(args.steps),
                   "--batch", str(args.batch)] + (["--threads", str(args.threads)] if args.threads else [])
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode != 0:
                print(f"{backend}: failed: {out.stderr.strip().splitlines()[-1:]}")
                break
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{backend:8s} {MODELS[backend]:6s} {n:6d} {mib(r['rss_growth']):>12s} "
                  f"{mib(r['traced_peak']):>12s} {mib(r['data_bytes']):>12s}")
        if len(rows) == 2:
            ratio = rows[1]["rss_growth"] / max(rows[0]["rss_growth"], 1)
            traced = (f", traced peak {rows[1]['traced_peak'] / max(rows[0]['traced_peak'], 1):.2f}x"
                      if rows[0]["traced_peak"] is not None else "")
            print(f"{backend:8s} 4N / N: rss growth {ratio:.2f}x{traced} (4.00x would be memory "
                  "proportional to N)")


if __name__ == "__main__":
    run(main)
