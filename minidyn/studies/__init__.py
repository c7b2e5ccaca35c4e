"""Studies: the paper's experiments as grids of runs over seeds, run, resumed and reported.

    minidyn study list                                   # the specs shipped here (*.toml)
    minidyn study run table1-mnist-sample --out studies/t1 --jobs 2
    minidyn study status studies/t1
    minidyn study report studies/t1                      # report.md, results.csv/json, PNGs

spec.py reads a spec and expands its grid into cells; tasks.py is a study on disk and its
tasks; lock.py lets runners share a study; worker.py does one task; examples.py holds its
per-example results; runner.py schedules the tasks; cost.py counts a study's work in passes
(--dry-run); results.py reads back what the cells left; report.py aggregates it over seeds and
test examples; figures.py draws it.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped() -> dict[str, str]:
    """{name: first comment line} of the specs shipped in minidyn/studies/."""
    out = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            first = entry.read_text(encoding="utf-8").splitlines()[:1]
            out[entry.name[:-5]] = first[0].lstrip("# ").strip() if first else ""
    return out


def spec_path(name_or_path: str) -> Path:
    """A spec file: the path itself where it exists, else the shipped spec of that name."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix == ".toml" and path.parent != Path("."):
        return path
    stem = path.name[:-5] if path.name.endswith(".toml") else path.name
    if stem in shipped():
        return Path(str(resources.files(__name__).joinpath(f"{stem}.toml")))
    return path
