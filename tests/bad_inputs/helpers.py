"""What the bad-input tests share (tests/bad_inputs/test_*.py): the tiny run they attack, the
case context, and the one check they all make, "refused in one Error line, nothing changed".

The `finished_runs` fixture (tests/bad_inputs/conftest.py) trains the tiny runs once per session.
"""
from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from click.testing import CliRunner

from minidyn.cli.main import main


def tiny_args(data_dir, backend="numpy") -> list:
    """`minidyn train` of a softmax model on the tiny MNIST files, 2 epochs (no --out)."""
    extra = ["--device", "cpu"] if backend == "torch" else []
    return ["train", "--backend", backend, *extra, "--model", "softmax", "--dataset", "mnist",
            "--data-dir", str(data_dir), "--epochs", "2", "--batch-size", "32", "--steps", "1",
            "--eval-limit", "16", "--eval-steps", "1"]


def train_finished_runs(tiny: Path, base: Path, backends: tuple[str, ...]) -> dict[str, Path]:
    """{backend: a finished run directory under base} of tiny_args on each backend."""
    runs = {}
    for backend in backends:
        out = base / backend
        r = CliRunner().invoke(main, tiny_args(tiny, backend) + ["--out", str(out)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        runs[backend] = out
    return runs


@dataclass
class Ctx:
    """What a case may use: a scratch directory, the tiny dataset, the run under attack."""

    tmp: Path
    tiny: Path
    run: Path             # a copy of a finished run: it must come out unchanged
    fresh: Path           # a run directory that must not be created
    marker: Path | None = None  # a code-carrying file would create this; it must not appear
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_case(cls, case, tiny: Path, finished_runs: dict[str, Path], tmp: Path) -> "Ctx":
        """The context of `case`: a copy of its finished run in tmp/run, its setup applied."""
        ctx = cls(tmp=tmp, tiny=tiny, run=tmp / "run", fresh=tmp / "fresh", marker=tmp / "code-ran")
        shutil.copytree(finished_runs[case.run], ctx.run)
        if case.setup:
            case.setup(ctx)
        return ctx

    def mnist_dir(self, name: str, mutate: Callable[[bytes], bytes], gz: bool = False) -> Path:
        """The tiny dataset with file `name` replaced by mutate(its bytes), maybe gzipped."""
        d = self.tmp / "mnist"
        shutil.copytree(self.tiny, d)
        data = mutate((d / name).read_bytes())
        (d / name).unlink()
        if gz:
            (d / (name + ".gz")).write_bytes(data)
        else:
            (d / name).write_bytes(data)
        return d

    def cifar_tarball(self, members: list[tuple[str, bytes]], links=()) -> Path:
        d = self.tmp / "cifar"
        d.mkdir()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for name, target in links:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
        (d / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
        return d


def snapshot(directory: Path) -> dict:
    """Every path under `directory` with its bytes (None for a directory)."""
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
            for p in sorted(directory.rglob("*"))}


def assert_one_error_line(r, exit_code: int, message: str | tuple, progress: str | None = None) -> None:
    """`r` exited with exit_code and printed exactly one `Error:` line holding every word of
    `message`; besides it, only click's usage hint (exit 2) or lines starting with `progress`."""
    assert r.exit_code == exit_code, r.output + r.stderr
    lines = [line for line in r.stderr.splitlines() if not (progress and line.startswith(progress))]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    for words in (message,) if isinstance(message, str) else message:
        assert words in errors[0], errors[0]
    if exit_code == 2:  # click's usage hint may come with a usage error, nothing else
        assert all(line.startswith(("Usage:", "Try ", "Error:")) or not line for line in lines), r.stderr
    else:
        assert lines == errors, r.stderr
    assert "Traceback" not in r.output + r.stderr
