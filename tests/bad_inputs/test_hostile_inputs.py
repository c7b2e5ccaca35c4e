"""Hostile and broken inputs: each is refused with one line that names the problem.

Every case runs `minidyn` in-process (click's CliRunner, exceptions not caught: a traceback
fails the test) and expects a non-zero exit, exactly one `Error: ...` line on stderr that
contains the expected words (only click's two-line usage hint may come with it, for usage
errors, exit 2), and nothing changed in a pre-existing, finished run directory: most `train`
cases are pointed at that run with `--resume`, so the bad input arrives on top of a real run.
"""
import gzip
import json
import os
import pickle
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn.cli.main import main

from .helpers import Ctx, assert_one_error_line, snapshot, tiny_args

TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


class Bomb:
    """Unpickling this calls os.mkdir(path): the proof that a file ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def torch_checkpoint(ctx: Ctx, payload) -> None:
    import torch

    torch.save(payload, ctx.run / "checkpoint.pt")


def other_architecture(ctx: Ctx) -> None:
    from minidyn.backend import get_backend

    B = get_backend("torch", device="cpu")
    model = B.make_model("mlp", (1, 28, 28), 10, seed=0)
    B.save_checkpoint(str(ctx.run / "checkpoint.pt"), model, B.make_optimizer(model, 0.1, 0.9, 0),
                      {"epoch": 1})


def damaged_mid_epoch_state(ctx: Ctx) -> None:
    """A mid-epoch checkpoint whose FOSC array is not one of this run's 96 examples."""
    from minidyn.backend import get_backend
    from minidyn.runs.epoch_state import pack_array

    B = get_backend("torch", device="cpu")
    model = B.make_model("softmax", (1, 28, 28), 10, seed=0)
    progress = {"batches": 1, "loss_sum": 1.0, "correct": 0, "grad_evals": 0,
                "rngs": {"attack": B.rng_state(B.rng(0))},
                "fosc": pack_array(np.zeros(5, np.float32)), "steps": pack_array(np.zeros(96, np.int64))}
    B.save_checkpoint(str(ctx.run / "checkpoint.pt"), model, B.make_optimizer(model, 0.1, 0.9, 0),
                      {"epoch": 1, "progress": progress})


def npz_with_object_array(ctx: Ctx) -> None:
    arrays = {"meta": np.array(json.dumps({"epoch": 1})),
              "model/fc1.weight": np.array([Bomb(ctx.marker)], dtype=object)}
    with open(ctx.run / "checkpoint.npz", "wb") as f:
        np.savez(f, **arrays)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def set_magic(magic: int) -> Callable[[bytes], bytes]:
    return lambda data: struct.pack(">I", magic) + data[4:]


def drop_last_label(data: bytes) -> bytes:
    n = struct.unpack(">I", data[4:8])[0]
    return struct.pack(">II", 2049, n - 1) + data[8:-1]


def bad_label(data: bytes) -> bytes:
    return data[:8] + bytes([12]) + data[9:]


CIFAR_RECORD = 1 + 3 * 32 * 32


def fetch_junk(url, dest):
    Path(dest).write_bytes(b"not the file you wanted")


def fetch_offline(url, dest):
    import urllib.error

    raise urllib.error.URLError("Temporary failure in name resolution")


@dataclass
class Case:
    id: str
    args: Callable[[Ctx], list]          # the command line after `minidyn`
    message: str | tuple                 # words the Error line must contain
    exit: int = 1
    setup: Callable[[Ctx], None] | None = None  # prepares ctx.run (a copy of `run`) or files
    run: str = "numpy"                   # which finished run ctx.run copies
    check: Callable[[Ctx], None] | None = None  # more assertions afterwards
    progress: str | None = None          # stderr lines starting so are progress, not errors


def on_run(*extra):
    """`train` on the tiny run with `extra` options, continuing the pre-existing run."""
    return lambda ctx: tiny_args(ctx.tiny) + list(extra) + ["--out", ctx.run, "--resume"]


def on_torch_run(*extra):
    return lambda ctx: tiny_args(ctx.tiny, "torch") + list(extra) + ["--out", ctx.run, "--resume"]


def with_data(make_dir, *extra):
    """`train` on a data directory that make_dir(ctx) builds, continuing the pre-existing run."""
    def args(ctx):
        data_dir = make_dir(ctx)
        return [a if a != str(ctx.tiny) else data_dir for a in tiny_args(ctx.tiny)] + list(extra) + [
            "--out", ctx.run, "--resume"]
    return args


def cifar(make_dir):
    return lambda ctx: ["train", "--dataset", "cifar10", "--data-dir", make_dir(ctx), "--out", ctx.fresh]


def no_download_left(ctx):
    d = ctx.tmp / "download"
    assert not (d / "train-images-idx3-ubyte.gz").exists()
    assert not [p for p in d.iterdir() if p.name.endswith(".part")]


def marker_absent(ctx):
    assert not ctx.marker.exists(), "the checkpoint ran code"


def _has_gpu():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


CASES = [
    # --- datasets: IDX files (MNIST) --------------------------------------------------------------
    Case("idx-truncated-payload", with_data(lambda c: c.mnist_dir(TRAIN_FILES[0], lambda d: d[:-100])),
         ("train-images-idx3-ubyte", "truncated")),
    Case("idx-truncated-header", with_data(lambda c: c.mnist_dir(TRAIN_FILES[1], lambda d: d[:6])),
         ("train-labels-idx1-ubyte", "truncated", "header")),
    Case("idx-corrupted-gzip", with_data(lambda c: c.mnist_dir(TRAIN_FILES[0], lambda d: b"\x1f\x8b" + d[2:200], gz=True)),
         ("train-images-idx3-ubyte.gz", "corrupted gzip")),
    Case("idx-gz-name-but-not-gzip", with_data(lambda c: c.mnist_dir(TRAIN_FILES[1], lambda d: d, gz=True)),
         ("train-labels-idx1-ubyte.gz", "not a gzip file")),
    Case("idx-wrong-magic-images", with_data(lambda c: c.mnist_dir(TRAIN_FILES[0], set_magic(2049))),
         ("train-images-idx3-ubyte", "wrong magic number", "2051")),
    Case("idx-wrong-magic-labels", with_data(lambda c: c.mnist_dir(TRAIN_FILES[1], set_magic(0xDEADBEEF))),
         ("train-labels-idx1-ubyte", "wrong magic number", "2049")),
    Case("idx-count-mismatch", with_data(lambda c: c.mnist_dir(TRAIN_FILES[1], drop_last_label)),
         "has 96 images but train-labels-idx1-ubyte has 95 labels"),
    Case("idx-label-out-of-range", with_data(lambda c: c.mnist_dir(TRAIN_FILES[1], bad_label)),
         ("label 12", "outside 0..9")),
    Case("idx-oversized", with_data(lambda c: c.mnist_dir(TRAIN_FILES[0], lambda d: d + b"\0" * 7)),
         ("train-images-idx3-ubyte", "oversized")),
    Case("idx-missing", with_data(lambda c: (c.tmp / "empty").mkdir() or c.tmp / "empty"),
         ("train-images-idx3-ubyte", "not found", "minidyn data download")),
    Case("data-dir-is-a-file", with_data(lambda c: (c.tmp / "f").write_text("x") and c.tmp / "f"),
         ("is a file",), exit=2),
    # --- datasets: the CIFAR-10 tarball -----------------------------------------------------------
    Case("cifar-path-traversal", cifar(lambda c: c.cifar_tarball(
        [("cifar-10-batches-bin/../../evil.bin", b"x" * 10)])),
         ("unsafe member path", "../../evil.bin"), check=lambda c: (
             assert_not_exists(c.tmp / "evil.bin"), assert_not_exists(c.tmp.parent / "evil.bin"))),
    Case("cifar-absolute-path", cifar(lambda c: c.cifar_tarball([("/tmp/minidyn-evil.bin", b"x")])),
         ("unsafe member path", "/tmp/minidyn-evil.bin")),
    Case("cifar-link-outside", cifar(lambda c: c.cifar_tarball(
        [], links=[("cifar-10-batches-bin/data_batch_1.bin", "../../../etc/passwd")])),
         ("links outside the archive",)),
    Case("cifar-truncated-batch", cifar(lambda c: c.cifar_tarball(
        [("cifar-10-batches-bin/data_batch_1.bin", b"\0" * (CIFAR_RECORD * 10))])),
         ("data_batch_1.bin", "truncated")),
    Case("cifar-not-a-tarball", cifar(lambda c: (c.tmp / "cifar").mkdir() or (
        (c.tmp / "cifar" / "cifar-10-binary.tar.gz").write_bytes(gzip.compress(b"junk" * 100)) and c.tmp / "cifar")),
         ("cifar-10-binary.tar.gz", "corrupted archive")),
    # --- checkpoints and run files met by --resume ----------------------------------------------------
    Case("checkpoint-pickle-with-code", on_torch_run(), ("checkpoint.pt", "refused by weights_only", "posix.mkdir"),
         run="torch",
         setup=lambda c: torch_checkpoint(c, {"format": "minidyn-checkpoint/1", "model": Bomb(c.marker)}),
         check=marker_absent),
    Case("checkpoint-raw-pickle-with-code", on_torch_run(), ("checkpoint.pt", "refused by weights_only"),
         run="torch", setup=lambda c: (c.run / "checkpoint.pt").write_bytes(pickle.dumps(Bomb(c.marker))),
         check=marker_absent),
    Case("checkpoint-npz-object-array", on_run(), ("checkpoint.npz", "not a valid minidyn checkpoint"),
         setup=npz_with_object_array, check=marker_absent),
    Case("checkpoint-other-architecture", on_torch_run(), ("checkpoint.pt", "model mlp, not softmax"),
         run="torch", setup=other_architecture),
    Case("checkpoint-truncated", on_torch_run(), ("checkpoint.pt", "truncated or damaged"), run="torch",
         setup=lambda c: truncate(c.run / "checkpoint.pt")),
    Case("checkpoint-truncated-npz", on_run(), ("checkpoint.npz", "not a valid minidyn checkpoint"),
         setup=lambda c: truncate(c.run / "checkpoint.npz")),
    Case("checkpoint-damaged-mid-epoch-state", on_torch_run(), ("checkpoint.pt: ", "mid-epoch state", "96 examples"),
         run="torch", setup=damaged_mid_epoch_state),
    Case("config-json-damaged", on_run(), ("config.json", "cannot be read"),
         setup=lambda c: (c.run / "config.json").write_text('{"eps": 0.3,')),
    Case("metrics-jsonl-damaged", on_run(), ("metrics.jsonl", "line 2"),
         setup=lambda c: (c.run / "metrics.jsonl").write_text(
             (c.run / "metrics.jsonl").read_text().splitlines()[0] + "\n{torn\n")),
    Case("resume-with-other-options", on_run("--eps", "0.2", "--seed", "3"),
         ("--resume with options that differ", "eps (0.3 saved, 0.2 now)", "seed (0 saved, 3 now)")),
    Case("existing-run-without-resume", lambda c: tiny_args(c.tiny) + ["--out", c.run],
         ("is not empty", "--resume")),
    Case("resume-into-a-foreign-directory", lambda c: tiny_args(c.tiny) + ["--out", c.run / "fosc", "--resume"],
         ("holds no minidyn run", "not empty")),
    # --- downloads --------------------------------------------------------------------------------
    Case("download-checksum-mismatch", lambda c: ["data", "download", "mnist", "--data-dir", c.tmp / "download"],
         ("train-images-idx3-ubyte.gz", "SHA-256 mismatch", "deleted"),
         setup=lambda c: c.extra.update(fetch=fetch_junk), check=no_download_left, progress="downloading "),
    Case("download-offline", lambda c: ["data", "download", "mnist", "--data-dir", c.tmp / "download"],
         ("cannot download train-images-idx3-ubyte.gz", "name resolution"),
         setup=lambda c: c.extra.update(fetch=fetch_offline), check=no_download_left, progress="downloading "),
    # --- options ------------------------------------------------------------------------------------
    Case("eps-zero", on_run("--eps", "0"), "eps must be in (0, 1], got 0", exit=2),
    Case("eps-negative", on_run("--eps", "-0.1"), "eps must be in (0, 1]", exit=2),
    Case("eps-above-one", on_run("--eps", "1.5"), "eps must be in (0, 1], got 1.5", exit=2),
    Case("eps-division-by-zero", on_run("--eps", "8/0"), ("'8/0'", "division by zero"), exit=2),
    Case("eps-not-a-number", on_run("--eps", "eight"), ("'eight'", "not a number"), exit=2),
    Case("step-size-zero", on_run("--step-size", "0"), "step size must be > 0, got 0.0", exit=2),
    Case("step-size-negative", on_run("--step-size", "-0.01"), "step size must be > 0", exit=2),
    Case("steps-zero", on_run("--steps", "0"), "steps must be >= 1, got 0", exit=2),
    Case("c-max-negative", on_run("--c-max", "-0.5"), "c_max must be >= 0", exit=2),
    Case("t-prime-zero", on_run("--dynamic-epochs", "0"), "T' (--dynamic-epochs) must be > 0", exit=2),
    Case("t-prime-negative", on_run("--dynamic-epochs", "-2"), "T' (--dynamic-epochs) must be > 0, got -2", exit=2),
    Case("batch-size-zero", on_run("--batch-size", "0"), "batch size must be >= 1, got 0", exit=2),
    Case("epochs-zero", on_run("--epochs", "0"), "epochs must be >= 1, got 0", exit=2),
    Case("lr-negative", on_run("--lr", "-0.1"), "learning rate must be > 0", exit=2),
    Case("checkpoint-every-zero", on_run("--checkpoint-every", "0"), ("--checkpoint-every", "0"), exit=2),
    Case("unknown-dataset", on_run("--dataset", "imagenet"), ("unknown dataset 'imagenet'", "mnist")),
    Case("unknown-model", on_run("--model", "resnet9000"), ("resnet9000",)),
    Case("unknown-method", on_run("--method", "magic"), ("'magic'", "dynamic"), exit=2),
    Case("unknown-backend", on_run("--backend", "jax"), ("'jax'", "torch"), exit=2),
    Case("unknown-preset", on_run("--preset", "paper-imagenet"), ("paper-imagenet",), exit=2),
    Case("limit-beyond-dataset", on_run("--limit", "97"), "--limit 97 exceeds the 96 training examples of mnist"),
    Case("limit-zero", on_run("--limit", "0"), "--limit must be >= 1, got 0", exit=2),
    Case("out-under-a-file", lambda c: tiny_args(c.tiny) + ["--out", c.tmp / "afile" / "run"],
         ("cannot create --out", "Not a directory"), setup=lambda c: (c.tmp / "afile").write_text("x")),
    Case("out-is-a-file", lambda c: tiny_args(c.tiny) + ["--out", c.run / "config.json"], ("is a file",), exit=2),
    Case("device-cuda-without-gpu", on_torch_run("--device", "cuda"), ("--device cuda", "no CUDA GPU"),
         run="torch"),
    Case("device-unknown", on_torch_run("--device", "tpu"), ("unknown device 'tpu'",), run="torch"),
    Case("backend-cupy-without-gpu", on_run("--backend", "cupy"), ("--backend cupy needs CuPy and a CUDA GPU",)),
    Case("amp-on-numpy", lambda c: tiny_args(c.tiny) + ["--amp", "bf16", "--out", c.fresh],
         "--amp needs --backend torch"),
    Case("channels-last-on-numpy", lambda c: tiny_args(c.tiny) + ["--channels-last", "--out", c.fresh],
         "--channels-last needs --backend torch"),
    Case("batchnorm-batch-of-one", lambda c: tiny_args(c.tiny, "torch") + ["--model", "cnn8", "--batch-size", "95",
                                                                           "--out", c.fresh],
         ("a batch of 1 example,", "cnn8's BatchNorm needs at least 2", "96 training examples"), run="torch"),
]


def assert_not_exists(path):
    assert not Path(path).exists(), path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line(case, tiny_mnist, finished_runs, tmp_path, monkeypatch):
    if case.id.startswith(("device-cuda", "backend-cupy")) and _has_gpu():
        pytest.skip("a GPU is present")
    if case.run == "torch":
        pytest.importorskip("torch")
    ctx = Ctx.for_case(case, tiny_mnist, finished_runs, tmp_path)
    if "fetch" in ctx.extra:
        monkeypatch.setattr("minidyn.data.download.urllib_fetch", ctx.extra["fetch"])
    before = snapshot(ctx.run)

    r = CliRunner().invoke(main, [str(a) for a in case.args(ctx)], catch_exceptions=False)

    assert_one_error_line(r, case.exit, case.message, case.progress)
    assert snapshot(ctx.run) == before, "the pre-existing run directory was changed"
    assert not ctx.fresh.exists()
    if case.check:
        case.check(ctx)


def test_an_unwritable_out_is_refused(tiny_mnist, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    parent = tmp_path / "locked"
    parent.mkdir(mode=0o500)
    try:
        r = CliRunner().invoke(main, tiny_args(tiny_mnist) + ["--out", str(parent / "run")],
                               catch_exceptions=False)
    finally:
        parent.chmod(0o700)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("Error: cannot create --out") and "Permission denied" in r.stderr


def test_torchrun_with_the_numpy_backend_is_refused(tiny_mnist, tmp_path, monkeypatch):
    """Every process of the job would be rank 0 of a job of one, and all would write --out."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = CliRunner().invoke(main, tiny_args(tiny_mnist) + ["--out", str(tmp_path / "run")],
                           catch_exceptions=False)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("Error: torchrun trains with --backend torch; the numpy backend runs in one process")
    assert not (tmp_path / "run").exists()


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25


def test_a_code_carrying_checkpoint_in_a_real_process(tiny_mnist, finished_runs, tmp_path):
    """The same refusal from a real `minidyn` process: its whole stderr is the one line (no
    warning from torch.load comes with it) and the code in the pickle never ran."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    run, marker = tmp_path / "run", tmp_path / "code-ran"
    shutil.copytree(finished_runs["torch"], run)
    (run / "checkpoint.pt").write_bytes(pickle.dumps(Bomb(marker)))
    before = snapshot(run)
    proc = subprocess.run([sys.executable, "-m", "minidyn.cli.main", *tiny_args(tiny_mnist, "torch"),
                           "--out", str(run), "--resume"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"Error: {run / 'checkpoint.pt'} ")
    assert "refused by weights_only unpickling" in proc.stderr
    assert not marker.exists() and snapshot(run) == before
