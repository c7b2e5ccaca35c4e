"""Hostile checkpoints on both backends: weights must be finite floats of the model's shapes
(optimiser state included), sizes are checked before data is allocated, every refusal is one
CheckpointError naming the file and the tensor, and a refused `train --resume` changes nothing.
"""
import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.lib import format as npy_format

from minidyn.backend import get_backend
from minidyn.cli.main import main
from minidyn.errors import CheckpointError

BOMB_SHAPE = (8192, 8192)  # 256 MiB of float32 zeros; deflated, a few hundred KiB
HEADROOM = 160 << 20       # address space allowed over the baseline while loading a bomb


def numpy_checkpoint(path, mutate=None, optimizer=True):
    """A softmax checkpoint.npz; mutate({member: array}) edits its arrays before they are saved."""
    B = get_backend("numpy")
    model = B.make_model("softmax", (1, 28, 28), 10, seed=0)
    opt = B.make_optimizer(model, 0.1, 0.9, 0)
    opt.buffers = {k: np.full_like(v, 0.01) for k, v in model.params.items()}
    B.save_checkpoint(path, model, opt if optimizer else None, {"epoch": 1})
    if mutate:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        mutate(arrays)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    return B, B.make_model("softmax", (1, 28, 28), 10, seed=1), B.make_optimizer(model, 0.1, 0.9, 0)


def set_item(key, value):
    def mutate(arrays):
        arrays[key] = value(arrays[key])
    return mutate


def with_nan(a):
    a = a.copy()
    a.flat[3] = np.nan
    return a


@pytest.mark.parametrize("key, value, words", [
    ("model/fc1.weight", with_nan, "'model/fc1.weight' holds NaN or infinite"),
    ("model/fc1.bias", lambda a: np.full_like(a, np.inf), "'model/fc1.bias' holds NaN or infinite"),
    ("optimizer/fc1.weight", with_nan, "'optimizer/fc1.weight' holds NaN or infinite"),
    ("model/fc1.weight", lambda a: a.astype(np.int64), "'fc1.weight' has dtype int64, not a float"),
    ("optimizer/fc1.bias", lambda a: a.astype(np.int32), "'fc1.bias' has dtype int32, not a float"),
    ("model/fc1.bias", lambda a: a.astype(np.complex64), "'fc1.bias' has dtype complex64, not a float"),
], ids=["nan", "inf", "nan-momentum", "int", "int-momentum", "complex"])
def test_numpy_refuses_weights_that_are_not_finite_floats(tmp_path, key, value, words):
    path = tmp_path / "checkpoint.npz"
    B, model, opt = numpy_checkpoint(path, set_item(key, value))
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(CheckpointError, match=words) as info:
        B.load_checkpoint(str(path), model, opt)
    assert str(path) in str(info.value)
    assert all(np.array_equal(before[k], model.params[k]) for k in before) and not opt.buffers


def test_numpy_refuses_a_member_that_is_not_npy(tmp_path):
    path = tmp_path / "checkpoint.npz"
    B, model, opt = numpy_checkpoint(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("model/fc1.weight", b"\x00" * 64)  # no .npy: np.load hands it over as bytes
    with pytest.raises(CheckpointError, match="'model/fc1.weight' is not a .npy array"):
        B.load_checkpoint(str(path), model, opt)
    with pytest.raises(CheckpointError, match="not a .npy array"):
        B.read_meta(str(path))


# --- torch ------------------------------------------------------------------------------------
def torch_checkpoint(path, name="softmax", edit=None):
    """A checkpoint.pt; edit(payload) changes the dict torch.save writes."""
    torch = pytest.importorskip("torch")
    B = get_backend("torch", device="cpu")
    model = B.make_model(name, (1, 28, 28), 10, seed=0)
    opt = B.make_optimizer(model, 0.1, 0.9, 0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # momentum buffers exist
    B.save_checkpoint(str(path), model, opt, {"epoch": 1})
    if edit:
        payload = torch.load(path, weights_only=True)
        edit(payload)
        torch.save(payload, path)
    fresh = B.make_model(name, (1, 28, 28), 10, seed=1)
    return B, fresh, B.make_optimizer(fresh, 0.1, 0.9, 0)


def weight(key, value):
    def edit(payload):
        payload["model"][key] = value(payload["model"][key])
    return edit


def momentum(index, value):
    def edit(payload):
        entry = payload["optimizer"]["state"][index]
        entry["momentum_buffer"] = value(entry["momentum_buffer"])
    return edit


def t_nan(t):
    t = t.clone()
    t.view(-1)[5] = float("nan")
    return t


@pytest.mark.parametrize("edit, words", [
    (weight("fc1.weight", t_nan), "parameter fc1.weight holds NaN or infinite"),
    (weight("fc1.bias", lambda t: t.double() * 1e300), "parameter fc1.bias holds NaN or infinite"),
    (weight("fc1.weight", lambda t: t.to(__import__("torch").complex64)), "fc1.weight has dtype complex64"),
    (weight("fc1.bias", lambda t: t > 0), "fc1.bias has dtype bool"),
    (weight("fc1.bias", lambda t: t.long()), "fc1.bias has dtype int64, the model holds floats"),
    (momentum(0, t_nan), "momentum buffer of fc1.weight holds NaN or infinite"),
    (momentum(0, lambda t: t[:, :5].clone()), r"momentum buffer of fc1.weight has shape \(10, 5\)"),
    (momentum(1, lambda t: t.long()), "momentum buffer of fc1.bias has dtype int64"),
], ids=["nan", "overflows-float32", "complex", "bool", "int", "nan-momentum", "momentum-shape", "int-momentum"])
def test_torch_refuses_weights_that_are_not_finite_floats_of_the_model(tmp_path, edit, words):
    import torch
    path = tmp_path / "checkpoint.pt"
    B, model, opt = torch_checkpoint(path, edit=edit)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=words) as info:
        B.load_checkpoint(str(path), model, opt)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not opt.state


def test_torch_batchnorm_counts_are_integers_and_load(tmp_path):
    import torch
    path = tmp_path / "checkpoint.pt"
    B, model, opt = torch_checkpoint(path, "cnn4")
    saved = torch.load(path, weights_only=True)
    B.load_checkpoint(str(path), model, opt)
    assert all(torch.equal(saved["model"][k], v) for k, v in model.state_dict().items())
    buffers = [saved["optimizer"]["state"][i]["momentum_buffer"] for i in sorted(saved["optimizer"]["state"])]
    assert all(torch.equal(b, opt.state[p]["momentum_buffer"]) for b, p in zip(buffers, model.parameters()))
    counts = [k for k in saved["model"] if k.endswith("num_batches_tracked")]
    _, model, opt = torch_checkpoint(path, "cnn4", edit=weight(counts[0], lambda t: t.float()))
    with pytest.raises(CheckpointError, match=f"{counts[0]} has dtype float32, the model holds integers"):
        B.load_checkpoint(str(path), model, opt)


# --- bombs: refused on their declared size, with memory bounded ---------------------------------
LOAD_UNDER_A_CAP = textwrap.dedent("""
    import json, resource, sys
    from minidyn.backend import get_backend
    from minidyn.errors import CheckpointError
    def status(key):
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1]) * 1024
    backend, good, path, headroom = sys.argv[1:]
    B = get_backend(backend, **({"device": "cpu"} if backend == "torch" else {}))
    model = B.make_model("softmax", (1, 28, 28), 10, seed=0)
    B.load_checkpoint(good, model)  # warm up: the lazy imports of a load
    limit = status("VmSize") + int(headroom)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rss = status("VmRSS")
    try:
        B.load_checkpoint(path, model)
        error = None
    except CheckpointError as exc:
        error = str(exc)
    print(json.dumps({"error": error, "growth": status("VmHWM") - rss}))
""")


def load_under_a_cap(backend, good, path):
    """(error message, peak RSS growth in bytes) of loading `path` in a fresh process whose
    address space may grow by HEADROOM only (after loading the checkpoint `good`)."""
    r = subprocess.run([sys.executable, "-c", LOAD_UNDER_A_CAP, backend, str(good), str(path), str(HEADROOM)],
                       capture_output=True, text=True, timeout=120, cwd=path.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["error"], out["growth"]


def write_deflated_zeros(archive, name, header: bytes, nbytes: int):
    with archive.open(name, "w", force_zip64=True) as f:  # the archive's compression
        f.write(header)
        chunk = bytes(1 << 20)
        for _ in range(nbytes // len(chunk)):
            f.write(chunk)


def test_a_numpy_deflate_bomb_is_refused_on_its_header(tmp_path):
    numpy_checkpoint(tmp_path / "good.npz")
    bomb = tmp_path / "bomb.npz"
    header = npy_format.header_data_from_array_1_0(np.zeros(0, np.float32)) | {"shape": BOMB_SHAPE}
    with zipfile.ZipFile(tmp_path / "good.npz") as good, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for info in good.infolist():
            if info.filename == "model/fc1.weight.npy":
                buf = io.BytesIO()
                npy_format.write_array_header_1_0(buf, header)
                write_deflated_zeros(z, info.filename, buf.getvalue(), 4 * BOMB_SHAPE[0] * BOMB_SHAPE[1])
            else:
                z.writestr(info, good.read(info))
    assert bomb.stat().st_size < 2 << 20
    error, growth = load_under_a_cap("numpy", tmp_path / "good.npz", bomb)
    assert error and "model parameter 'fc1.weight' has shape (8192, 8192)" in error, error
    assert growth < 32 << 20, growth


def test_a_torch_deflate_bomb_is_refused_before_it_is_inflated(tmp_path):
    torch = pytest.importorskip("torch")
    torch_checkpoint(tmp_path / "good.pt")
    big = tmp_path / "big.pt"  # torch.empty: pages never touched, written as zeros
    torch.save({"format": "minidyn-checkpoint/1", "model": {"fc1.weight": torch.empty(BOMB_SHAPE)},
                "optimizer": None, "meta": {"arch": {}}}, big)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(big) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for info in src.infolist():
            if info.file_size > 1 << 20:
                write_deflated_zeros(z, info.filename, b"", info.file_size)
            else:
                z.writestr(info.filename, src.read(info))
    big.unlink()
    assert bomb.stat().st_size < 2 << 20
    error, growth = load_under_a_cap("torch", tmp_path / "good.pt", bomb)
    assert error and "is compressed" in error and str(bomb) in error, error
    assert growth < 32 << 20, growth


# --- the CLI: a refused --resume changes nothing ---------------------------------------------
def tiny_train(data_dir, backend, out):
    extra = ["--device", "cpu"] if backend == "torch" else []
    return ["train", "--backend", backend, *extra, "--model", "softmax", "--dataset", "mnist",
            "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "32", "--steps", "1",
            "--eval-limit", "16", "--eval-steps", "1", "--out", str(out)]


def poison(run: Path, backend: str) -> None:
    """One NaN weight in the run's checkpoint."""
    if backend == "numpy":
        path = run / "checkpoint.npz"
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["model/fc1.weight"] = with_nan(arrays["model/fc1.weight"])
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        import torch
        payload = torch.load(run / "checkpoint.pt", weights_only=True)
        payload["model"]["fc1.weight"] = t_nan(payload["model"]["fc1.weight"])
        torch.save(payload, run / "checkpoint.pt")


def snapshot(run: Path) -> dict:
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_nan_weight_refuses_resume_and_eval_and_changes_nothing(tiny_mnist, tmp_path, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    run = tmp_path / "run"
    r = CliRunner().invoke(main, tiny_train(tiny_mnist, backend, run), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    poison(run, backend)
    before = snapshot(run)
    for args in (tiny_train(tiny_mnist, backend, run) + ["--resume"],
                 ["eval", str(run), "--attacks", "clean", "--limit", "8", "--device", "cpu"]):
        r = CliRunner().invoke(main, args, catch_exceptions=False)
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert r.exit_code == 1, r.output
        assert len(errors) == 1 and "fc1.weight" in errors[0] and "NaN or infinite" in errors[0], r.stderr
        assert "checkpoint." in errors[0]
    assert snapshot(run) == before  # summary.json byte-identical, nothing else touched


# --- the mid-epoch state's arrays ------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("shape", [float("inf")]),             # JSON's Infinity: int() of it overflowed
    ("shape", [-1]),                       # was inferred from the bytes
])
def test_a_damaged_mid_epoch_array_is_one_checkpoint_error(field, value):
    from minidyn.runs.epoch_state import EpochState
    B = get_backend("numpy")
    meta = json.loads(json.dumps(EpochState.begin(B, 0, 0, 4).to_meta(B)))
    meta["fosc"] = {**meta["fosc"], field: value}
    with pytest.raises(CheckpointError, match="mid-epoch state is damaged"):
        EpochState.from_meta(B, meta, 0, 0, 4)
