#!/usr/bin/env bash
# Usage: benchmarks/bitcheck.sh VENV OUTDIR
# A behaviour fingerprint for refactorings: runs a fixed set of CPU commands (numpy and torch
# training of every method, c_max auto, --checkpoint-every, white-box and black-box eval, analyze,
# compare --json) with VENV's minidyn, and writes OUTDIR/hashes.txt: a sha256 (16 hex digits) of
# every result that must stay bit-identical (metrics.jsonl, fosc/*.npy, checkpoint tensors, the
# JSON files, CSVs, printed eval/analyze output, crop_flip on both backends). Wall-clock fields
# ("seconds") and the version are removed before hashing. Run it with the code before and after a
# change (two venvs, e.g. two git worktrees) and `diff` the two hashes.txt: it must print nothing.
# About 5 minutes on 2 quiet cores.
set -eu
VENV=$1; OUT=$2
. "$VENV/bin/activate"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/hashes.txt" ]; then
  echo "error: $OUT exists and is not an earlier bitcheck output; choose another OUTDIR" >&2; exit 1
fi
rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"
S="--epochs 3 --limit 384 --batch-size 64 --eval-limit 64 --eval-steps 5 --final-eval-limit 200"
minidyn train --backend numpy --method dynamic $S --out np-dyn > np-dyn.log 2>&1
minidyn train --backend numpy --method dynamic $S --c-max auto --seed 5 --out np-auto > np-auto.log 2>&1
for m in unsecured standard curriculum fgsm-pgd dynamic; do
  minidyn train --backend torch --method $m $S --curriculum-epochs 2 --fgsm-epochs 1 --out t-$m > t-$m.log 2>&1
done
minidyn train --backend torch --method dynamic $S --checkpoint-every 2 --out t-ckpt > t-ckpt.log 2>&1
A="--attacks clean,fgsm,pgd10,pgd20,cw,apgd-ce,apgd-dlr --limit 128 --apgd-steps 20"
minidyn eval t-dynamic $A --restarts 2 --save > eval-t.txt 2>/dev/null
minidyn eval t-dynamic $A --source t-standard --save > eval-bb.txt 2>/dev/null
minidyn eval np-dyn $A --save > eval-np.txt 2>/dev/null
minidyn analyze t-dynamic --limit 100 --trajectories 5 --trajectory-steps 5 --no-plots > analyze.txt 2>&1
minidyn compare t-standard t-dynamic t-curriculum --limit 64 --apgd-steps 10 --json > compare.json 2>/dev/null
python - <<'PY'
import hashlib, json, pathlib, re
import numpy as np, torch
from minidyn import get_backend
out = []
def h(b): return hashlib.sha256(b).hexdigest()[:16]
def clean_json(obj):
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items() if k not in ("seconds", "version")}
    if isinstance(obj, list):
        return [clean_json(v) for v in obj]
    return obj
for run in sorted(p for p in pathlib.Path(".").iterdir() if p.is_dir()):
    for f in sorted(run.rglob("*")):
        if f.suffix in (".json",):
            out.append((str(f), h(json.dumps(clean_json(json.loads(f.read_text())), sort_keys=True).encode())))
        elif f.name == "metrics.jsonl":
            recs = [clean_json(json.loads(l)) for l in f.read_text().splitlines()]
            out.append((str(f), h(json.dumps(recs, sort_keys=True).encode())))
        elif f.suffix == ".npy":
            out.append((str(f), h(np.load(f).tobytes())))
        elif f.suffix == ".csv":
            out.append((str(f), h(f.read_bytes())))
        elif f.name == "checkpoint.pt":
            ck = torch.load(f, weights_only=True, map_location="cpu")
            def walk(o, pre=""):
                if isinstance(o, torch.Tensor): out.append((f"{f}:{pre}", h(o.numpy().tobytes())))
                elif isinstance(o, dict):
                    for k in sorted(o, key=str): walk(o[k], f"{pre}/{k}")
                elif isinstance(o, (list, tuple)):
                    for i, v in enumerate(o): walk(v, f"{pre}/{i}")
                else: out.append((f"{f}:{pre}", h(repr(o).encode())))
            walk(ck)
        elif f.name == "checkpoint.npz":
            with np.load(f, allow_pickle=False) as z:
                for k in sorted(z.files): out.append((f"{f}:{k}", h(z[k].tobytes())))
for name in ("eval-t.txt", "eval-bb.txt", "eval-np.txt", "analyze.txt"):
    out.append((name, h(pathlib.Path(name).read_bytes())))
c = json.loads(pathlib.Path("compare.json").read_text())
out.append(("compare.json", h(json.dumps(clean_json(c), sort_keys=True).encode())))
rng = np.random.default_rng(0)
x = rng.random((8, 3, 32, 32))
for name in ("numpy", "torch"):
    B = get_backend(name)
    out.append((f"crop_flip/{name}", h(B.to_numpy(B.crop_flip(B.asarray(x), B.rng(3))).tobytes())))
pathlib.Path("hashes.txt").write_text("".join(f"{k} {v}\n" for k, v in out))
print(len(out), "hashes")
PY
for f in *.log; do grep -h "Error\|Traceback" "$f" && echo "FAILED in $f"; done; true
