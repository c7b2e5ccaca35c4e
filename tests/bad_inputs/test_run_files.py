"""Run files, checkpoint meta and IDX files that minidyn.files.readers and minidyn.data.idx refuse.

The style of test_hostile_inputs.py: each case runs `minidyn` in-process (CliRunner,
exceptions not caught, so a traceback fails the test) on a copy of a finished run with one file
corrupted, and expects a non-zero exit, exactly one `Error: ...` line naming the problem, and
the run directory unchanged.
"""
import gzip
import json
import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn.cli.main import main

from .helpers import Ctx, assert_one_error_line, snapshot, tiny_args

DEEP = "[" * 100_000 + "]" * 100_000  # nesting that Python's json parser cannot follow


def write(name: str, text: str) -> Callable[[Ctx], None]:
    return lambda c: (c.run / name).write_text(text)


def with_eval_json(name: str, text: str) -> Callable[[Ctx], None]:
    """`name` replaced by `text` in a run with a usable eval.json (compare evaluates nothing)."""
    def setup(c: Ctx) -> None:
        (c.run / "eval.json").write_text('{"accuracy": {"fgsm": 50.0}, "source": null}')
        (c.run / name).write_text(text)
    return setup


def edit_npz_meta(**changes) -> Callable[[Ctx], None]:
    """Rewrite the numpy run's checkpoint.npz with its meta updated by `changes`."""
    def setup(c: Ctx) -> None:
        path = c.run / "checkpoint.npz"
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays["meta"].item())
        arrays["meta"] = np.array(json.dumps({**meta, **changes}))
        with open(path, "wb") as out:
            np.savez(out, **arrays)
    return setup


def edit_pt_meta(**changes) -> Callable[[Ctx], None]:
    """Rewrite the torch run's checkpoint.pt with meta["arch"] updated by `changes`."""
    def setup(c: Ctx) -> None:
        import torch

        path = c.run / "checkpoint.pt"
        obj = torch.load(path, weights_only=True)
        obj["meta"]["arch"] = {**obj["meta"]["arch"], **changes}
        torch.save(obj, path)
    return setup


def eval_args(*extra):
    return lambda c: ["eval", c.run, "--limit", "4", "--attacks", "fgsm", *extra]


def black_box_args(c):
    return ["eval", c.run, "--source", c.run, "--limit", "4", "--attacks", "fgsm"]


def compare_args(c):
    return ["compare", c.run, "--limit", "4", "--apgd-steps", "1"]


def analyze_args(c):
    return ["analyze", c.run, "--limit", "4", "--no-plots"]


def empty_split(prefix: str) -> Callable[[Ctx], list]:
    """`train --resume` on the tiny dataset with split `prefix` replaced by 0 images, 0 labels."""
    def args(c):
        data = c.mnist_dir(f"{prefix}-images-idx3-ubyte", lambda d: struct.pack(">IIII", 2051, 0, 28, 28))
        (data / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, 0))
        return [a if a != str(c.tiny) else data for a in tiny_args(c.tiny)] + ["--out", c.run, "--resume"]
    return args


@dataclass
class Case:
    id: str
    args: Callable[[Ctx], list]
    message: tuple
    setup: Callable[[Ctx], None] | None = None
    run: str = "numpy"


CASES = [
    # --- config.json --------------------------------------------------------------------------
    Case("config-a-list", eval_args(), ("config.json", "not a JSON object"), write("config.json", "[1]")),
    Case("config-deeply-nested", eval_args(), ("config.json", "nested too deeply"), write("config.json", DEEP)),
    Case("config-nan-literal", eval_args(), ("config.json", "NaN is not strict JSON"),
         write("config.json", '{"eps": NaN}')),
    Case("config-not-utf8", eval_args(), ("config.json", "not UTF-8"),
         lambda c: (c.run / "config.json").write_bytes(b'{"seed": "\xff\xfe"}')),
    Case("config-a-directory", eval_args(), ("config.json", "not a regular file"),
         lambda c: (c.run / "config.json").unlink() or (c.run / "config.json").mkdir()),
    Case("config-wrong-type", eval_args(), ("config.json", "data_dir is 7"), write("config.json", '{"data_dir": 7}')),
    Case("config-unknown-key", eval_args(), ("config.json", "unknown key 'x'"), write("config.json", '{"x": 1}')),
    Case("config-a-list-in-compare", compare_args, ("config.json", "not a JSON object"),
         write("config.json", "[1]")),
    Case("config-a-list-in-analyze", analyze_args, ("config.json", "not a JSON object"),
         write("config.json", "[1]")),
    # --- eval.json ----------------------------------------------------------------------------
    Case("eval-json-a-list", black_box_args, ("eval.json", "not a JSON object"), write("eval.json", "[1]")),
    Case("eval-json-a-list-in-compare", compare_args, ("eval.json", "not a JSON object"), write("eval.json", "[1]")),
    Case("eval-json-infinity", compare_args, ("eval.json", "Infinity is not strict JSON"),
         write("eval.json", '{"accuracy": {"fgsm": Infinity}, "source": null}')),
    Case("eval-json-accuracy-text", compare_args, ("eval.json", "accuracy of 'fgsm'", "not a number"),
         write("eval.json", '{"accuracy": {"fgsm": "high"}, "source": null}')),
    Case("eval-json-overflowing-number", compare_args, ("eval.json", "overflows to infinity"),
         write("eval.json", '{"accuracy": {"fgsm": 1e999}, "source": null}')),
    # --- metrics.jsonl --------------------------------------------------------------------------
    Case("metrics-a-list-line", compare_args, ("metrics.jsonl", "line 1 is not a minidyn epoch record"),
         with_eval_json("metrics.jsonl", "[1]\n")),
    Case("metrics-text-grad-evals", compare_args, ("metrics.jsonl", "line 1 is not a minidyn epoch record"),
         with_eval_json("metrics.jsonl", '{"epoch": 0, "grad_evals": "many"}\n')),
    # --- checkpoint meta ----------------------------------------------------------------------
    Case("meta-input-shape-an-int", eval_args(), ("checkpoint.npz", "input_shape 784"), edit_npz_meta(input_shape=784)),
    Case("meta-input-shape-zero", eval_args(), ("checkpoint.npz", "input_shape [0]"), edit_npz_meta(input_shape=[0])),
    Case("meta-input-shape-negative", eval_args(), ("checkpoint.npz", "input_shape [-1, 28, 28]"),
         edit_npz_meta(input_shape=[-1, 28, 28])),
    Case("meta-num-classes-text", eval_args(), ("checkpoint.npz", "num_classes 'ten'"), edit_npz_meta(num_classes="ten")),
    Case("meta-eps-text", eval_args(), ("checkpoint.npz", "eps 'abc'", "(0, 1]"), edit_npz_meta(eps="abc")),
    Case("meta-num-classes-one-in-analyze", analyze_args, ("checkpoint.npz", "num_classes 1"),
         edit_npz_meta(num_classes=1)),
    Case("meta-torch-num-classes-text", eval_args("--device", "cpu"), ("checkpoint.pt", "num_classes 'ten'"),
         edit_pt_meta(num_classes="ten"), run="torch"),
    Case("meta-torch-input-shape-zero", eval_args("--device", "cpu"), ("checkpoint.pt", "input_shape [0, 28, 28]"),
         edit_pt_meta(input_shape=[0, 28, 28]), run="torch"),
    # --- IDX: an empty split ------------------------------------------------------------------
    Case("idx-empty-training-split", empty_split("train"), ("train-images-idx3-ubyte", "holds 0 images")),
    Case("idx-empty-test-split", empty_split("t10k"), ("t10k-images-idx3-ubyte", "holds 0 images")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_run_file_is_refused_in_one_line(case, tiny_mnist, finished_runs, tmp_path):
    if case.run == "torch":
        pytest.importorskip("torch")
    ctx = Ctx.for_case(case, tiny_mnist, finished_runs, tmp_path)
    before = snapshot(ctx.run)

    r = CliRunner().invoke(main, [str(a) for a in case.args(ctx)], catch_exceptions=False)

    assert_one_error_line(r, 1, case.message)
    assert snapshot(ctx.run) == before, "the run directory was changed"


def gzip_bomb(path: Path, images: int) -> None:
    """A gzip IDX image file whose header declares `images` 28x28 images and whose zeros
    really decompress to that size: gzip members of 1 MiB of zeros (~1 KiB each) concatenated."""
    member = gzip.compress(bytes(1 << 20), mtime=0)
    total = 16 + images * 784
    with open(path, "wb") as f:
        f.write(gzip.compress(struct.pack(">IIII", 2051, images, 28, 28), mtime=0))
        f.write(member * (total // (1 << 20) + 1))


def test_a_gzip_bomb_is_refused_before_it_is_decompressed(tmp_path):
    """1.1 MiB of gzip whose header claims 1.5 M images: under a memory cap of 1 GiB above what
    the process uses, the reader refuses it with a DataError (it used 1.1 GiB before)."""
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_bomb(bomb, 1_500_000)
    assert bomb.stat().st_size < 2 << 20
    script = textwrap.dedent(f"""
        import resource
        from minidyn.data.idx import read_images
        from minidyn.errors import DataError
        with open("/proc/self/status") as f:
            used = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), resource.RLIM_INFINITY))
        try:
            read_images({str(bomb)!r})
        except DataError as exc:
            print("DataError:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd="/")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    assert proc.stdout.startswith("DataError: train-images-idx3-ubyte.gz: the header declares"), proc.stdout
