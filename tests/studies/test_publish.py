"""`minidyn study publish`: the copy of a finished study holds what its report reads and nothing
heavy, reports the same numbers, and refuses an unfinished study, a stale report or a foreign folder."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn.cli.main import main
from minidyn.errors import ConfigError
from minidyn.studies.claims import judge, parse_claim
from minidyn.studies.publish import publish
from minidyn.studies.report import write_report


@pytest.fixture
def study(tmp_path, three_seed_study, done_cells):
    """tiny with 3 seeds, every cell done with per-example results (Dynamic right on 2 + seed
    more of the 40 examples than Standard), the heavy files a real cell has, and its report."""
    study, spec = three_seed_study(tmp_path / "runs" / "tiny")
    done_cells(study, spec, lambda cell: np.arange(40) < 20 + cell.values["seed"]
               + (2 + cell.values["seed"]) * (cell.values["method"] == "dynamic"))
    for cell in spec.cells():
        directory = study.cell_dir(cell)
        (directory / "fosc").mkdir()
        (directory / "summary.json").write_text("{}")
        for name in ("checkpoint.pt", "best-val.pt"):
            (directory / name).write_bytes(b"x" * 100)
        for epoch in (0, 1):
            np.save(directory / "fosc" / f"epoch_{epoch:03d}.npy", np.linspace(0, 0.2, 50, dtype=np.float32))
    (study.logs_dir / "a.log").write_text("log")
    write_report(study.path)
    return study


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_the_copy_holds_what_the_report_reads_and_reports_the_same_numbers(study, tmp_path):
    dest = tmp_path / "docs" / "tiny"
    written = publish(study.path, dest)
    files = files_under(dest)
    assert sorted(str(p.relative_to(dest)) for p in written) == files
    assert "study.toml" in files and "report/results.json" in files and "report/report.md" in files
    assert not [f for f in files if f.endswith(".pt") or f.startswith(("logs", "locks"))]
    cell = "cells/dynamic_seed-1/"
    assert {cell + n for n in ("config.json", "summary.json", "metrics.jsonl", "study-eval.json",
                               "study-eval.examples.npz")} <= set(files)
    before = json.loads((dest / "report" / "results.json").read_text())
    write_report(dest)
    assert json.loads((dest / "report" / "results.json").read_text()) == before
    claim = parse_claim({"id": "T", "statement": "s", "distance": "d", "direction": "greater", "study": "tiny",
                         "setting": {"method": "dynamic"}, "attack": "pgd10", "checkpoint": "best"}, 1)
    assert judge(claim, dest.parent).ours == judge(claim, study.path.parent).ours  # +8.33 points, 3 seeds x 40


def test_only_the_reports_fosc_epochs_are_copied(study, tmp_path):
    publish(study.path, tmp_path / "d")
    files = files_under(tmp_path / "d")
    assert [f for f in files if "fosc/" in f] == [f"cells/{c}/fosc/epoch_001.npy" for c in
                                                    sorted(p.name for p in study.cells_dir.iterdir())]


def test_a_second_publish_replaces_the_first(study, tmp_path):
    dest = tmp_path / "d"
    publish(study.path, dest)
    (dest / "cells" / "standard_seed-0" / "stale.json").write_text("{}")
    publish(study.path, dest)
    assert not (dest / "cells" / "standard_seed-0" / "stale.json").exists()
    assert not list(tmp_path.glob("d.*"))                       # no staging folder left


def test_an_unfinished_study_or_a_stale_report_is_refused(study, tmp_path):
    result = study.path / "cells" / "dynamic_seed-2" / "study-eval.json"
    later = result.stat().st_mtime + 10
    os.utime(result, (later, later))
    with pytest.raises(ConfigError, match="report is older than a result or a Fig. 1a file; `minidyn study report"):
        publish(study.path, tmp_path / "d")
    (study.path / "report" / "results.json").unlink()
    with pytest.raises(ConfigError, match="no report"):
        publish(study.path, tmp_path / "d")
    result.unlink()
    with pytest.raises(ConfigError, match=r"1 of 6 tasks not done \(dynamic_seed-2.train\); `minidyn study run"):
        publish(study.path, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_a_folder_holding_other_files_is_refused_and_kept(study, tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "notes.md").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files that are not a published study \(notes.md\)"):
        publish(study.path, dest)
    assert files_under(dest) == ["notes.md"]
    with pytest.raises(ConfigError, match="is the study itself"):
        publish(study.path, study.path)


def test_the_command_says_what_it_wrote_or_one_line_why_not(study, tmp_path):
    ok = CliRunner().invoke(main, ["study", "publish", str(study.path), str(tmp_path / "d")])
    assert ok.exit_code == 0 and ok.output.startswith(f"{tmp_path / 'd'}: ") and " files, " in ok.output
    (tmp_path / "f").write_text("")
    bad = CliRunner().invoke(main, ["study", "publish", str(study.path), str(tmp_path / "f")])
    assert bad.exit_code == 1 and bad.output.strip().splitlines() == [f"Error: {tmp_path / 'f'} is a file, not a folder"]
