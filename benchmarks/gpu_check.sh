#!/usr/bin/env bash
# What one short GPU session checks and measures for minidyn (docs/performance.md, "On a GPU"):
#
#     bash benchmarks/gpu_check.sh OUTDIR          # minidyn installed (pip install -e .), a CUDA GPU
#
# Made for a lease of ~15 minutes on one GPU: every part has its own time limit and the whole
# script ends within GPU_CHECK_SECONDS (default 500 s); each part writes one log to OUTDIR:
#   env.log     the GPU, the driver, Python, torch, CuPy
#   lock.log    benchmarks/lock_race.py: six processes claim one stale study lock, 25 times
#               (the race two claimers won on this lease's first machine, 16 cores)
#   dryrun.log  `minidyn study run family-fashion-gpu --dry-run`: passes per cell and the
#               training rate measured on this GPU (the fastest of ~1 s of steps)
#   train.log   real training on the GPU: one epoch of Standard (PGD-10) and of Dynamic,
#               cnn4, batch 32, on the 7,000 mnist-sample digits left after 1,000 for
#               validation (Fashion-MNIST's shape, 1x28x28), counted by
#               benchmarks/count_passes.py; one epoch of Dynamic on the CuPy backend (mlp, the
#               NumPy code on the GPU); then four Standard runs at once (as --jobs 4 runs them)
#   tests.log   the tests that touch a GPU, CUDA and CuPy present (the `backend` fixture adds
#               CuPy; tests/backends/test_torch_backend.py's CUDA tests run); last, the others
#   pgd.log     benchmarks/pgd_throughput.py on the GPU: cnn8 and wrn-34-10, batch 512, fp32
#               and bf16 + channels-last
#   dynstd.log  benchmarks/dynamic_vs_standard.py on the GPU
# The order puts the lock race and the study's sizing first; the suite's other tests come last, in what time is left.
# GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 runs the same commands on a CPU, small, to check the script.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}
mkdir -p "$out"
dev=${GPU_CHECK_DEVICE:-cuda}
quick=${GPU_CHECK_QUICK:-0}
py=${PYTHON:-python3}
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
budget=${GPU_CHECK_SECONDS:-500}  # the whole script's limit: each part gets its own or what is left
part() { echo "== $1 ($(date -u +%H:%M:%S), ${SECONDS} s in)"; }
lim() { local r=$((budget - SECONDS - 5)); ((r < $1)) || r=$1; ((r > 1)) || r=1; echo "$r"; }

{
  part env
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  nproc
  "$py" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
  "$py" -c "import cupy; print('cupy', cupy.__version__, cupy.cuda.runtime.getDeviceCount(), 'device(s)')" 2>&1 | tail -n 1
  minidyn --version
} > "$out/env.log" 2>&1

{
  part "lock race (many cores)"
  timeout "$(lim 60)" "$py" benchmarks/lock_race.py --procs 6 --tries 25
} > "$out/lock.log" 2>&1

part dryrun > "$out/dryrun.log"
timeout "$(lim 60)" minidyn study run family-fashion-gpu --out "$work/ffg" --dry-run >> "$out/dryrun.log" 2>&1

{
  limit=()
  [ "$quick" = 1 ] && limit=(--limit 256)
  train() {  # train SECONDS ARGS...: one epoch, validation on 200 of 1,000 held-out digits
    timeout "$(lim "$1")" minidyn train --epochs 1 --val-size 1000 --eval-limit 200 --no-final-eval \
      "${limit[@]}" "${@:2}"
  }
  for method in standard dynamic; do
    part "train $method"
    train 60 --backend torch --device "$dev" --model cnn4 --method "$method" --batch-size 32 \
      --out "$work/$method" > "$work/$method.log" 2>&1
    tail -n 2 "$work/$method.log"
    "$py" benchmarks/count_passes.py "$work/$method"
  done
  part "train dynamic on the cupy backend (mlp)"
  train 60 --backend cupy --device "$dev" --model mlp --method dynamic --out "$work/cupy" > "$work/cupy.log" 2>&1
  tail -n 2 "$work/cupy.log"
  "$py" benchmarks/count_passes.py "$work/cupy"
  part "train: four standard runs at once"
  for seed in 1 2 3 4; do
    train 75 --backend torch --device "$dev" --model cnn4 --method standard --batch-size 32 \
      --seed "$seed" --out "$work/four-$seed" > "$work/four-$seed.log" 2>&1 &
  done
  started=$(date +%s%N); wait; ended=$(date +%s%N)
  "$py" benchmarks/count_passes.py "$work"/four-[0-9]
  echo "four at once: wall clock $(( (ended - started) / 1000000 )) ms, process start-up and data loading included"
} > "$out/train.log" 2>&1

# the tests that run on a GPU first (CUDA, and the `backend` fixture's CuPy), then the rest
gpu_tests=(tests/backends tests/test_fosc.py tests/test_augment.py tests/test_square.py tests/test_fab.py
           tests/runs/test_resume_family.py tests/test_attacks.py tests/test_apgd.py tests/test_attacks_family.py)
[ "$quick" = 1 ] && gpu_tests=(tests/backends/test_array_backend.py tests/backends/test_torch_backend.py)
xdist=(); "$py" -c "import xdist" 2>/dev/null && xdist=(-n 12)
pytests() {  # SIGINT at the limit: pytest still prints what failed so far
  timeout -s INT "$(lim $1)" "$py" -m pytest -q -p no:cacheprovider "${xdist[@]}" -rfEs "${@:2}"; echo "exit $?"
}
{ part "tests on the GPU"; pytests 120 "${gpu_tests[@]}"; } > "$out/tests.log" 2>&1

{
  models=cnn8,wrn-34-10 batch=512 repeats=3
  [ "$quick" = 1 ] && models=cnn8 batch=8 repeats=1
  part "pgd fp32"
  timeout "$(lim 75)" "$py" benchmarks/pgd_throughput.py --device "$dev" --models "$models" --batch "$batch" --repeats "$repeats"
  part "pgd bf16 channels-last"
  timeout "$(lim 75)" "$py" benchmarks/pgd_throughput.py --device "$dev" --models "$models" --batch "$batch" --repeats "$repeats" \
    --amp bf16 --channels-last
} > "$out/pgd.log" 2>&1

{
  part "dynamic vs standard"
  n=2048; [ "$quick" = 1 ] && n=256
  timeout "$(lim 60)" "$py" benchmarks/dynamic_vs_standard.py --device "$dev" --n "$n" --repeats 3
} > "$out/dynstd.log" 2>&1

if [ "$quick" != 1 ]; then
  ignore=(); for t in "${gpu_tests[@]}"; do ignore+=(--ignore "$t"); done
  { part "the other tests"; pytests 150 tests "${ignore[@]}"; } >> "$out/tests.log" 2>&1
fi
part done >> "$out/env.log"
