"""A study's tasks: their order, when one is done, and cell directories the spec no longer names."""
import json

from minidyn.studies.spec import parse_spec
from minidyn.studies.tasks import StudyDir, Task, settings, write_result


def spec(grid, **sections):
    raw = {"train": {"backend": "numpy", "model": "softmax", "epochs": 2}, "grid": grid, **sections}
    return parse_spec(raw)


def test_tasks_are_taken_seed_by_seed_in_numeric_order(tmp_path):
    s = spec({"method": ["standard", "dynamic"], "seed": [10, 2, 0, 1]})
    seeds = [t.cell.values["seed"] for t in StudyDir(tmp_path).tasks(s)]
    assert seeds == [0, 0, 1, 1, 2, 2, 10, 10]


def test_a_black_box_result_crafted_on_another_surrogate_is_not_done(tmp_path):
    """[eval] surrogate changed from standard to dynamic: the black-box results crafted on the
    standard cells must be made again; the white-box ones stay done."""
    grid = {"method": ["standard", "dynamic", "curriculum"], "seed": [0, 1]}
    before = spec(grid, eval={"surrogate": {"method": "standard"}})
    after = spec(grid, eval={"surrogate": {"method": "dynamic"}})
    study = StudyDir(tmp_path)
    cell = before.cells()[-1]
    for kind in ("train", "blackbox"):
        task = Task(cell, kind)
        study.cell_dir(cell).mkdir(parents=True, exist_ok=True)
        write_result(study.result(task), {"settings": settings(before, task), "results": {}})
        assert study.done(before, task)
    assert study.done(after, Task(cell, "train"))
    assert not study.done(after, Task(cell, "blackbox"))


def test_cell_directories_the_spec_does_not_name_are_listed(tmp_path):
    s = spec({"method": ["standard"], "seed": [0, 1]})
    study = StudyDir(tmp_path)
    for name in ("standard_seed-0", "seed-0", "empty"):
        (study.cells_dir / name).mkdir(parents=True)
    for name in ("standard_seed-0", "seed-0"):
        (study.cells_dir / name / "config.json").write_text(json.dumps({}))
    assert study.orphans(s) == ["seed-0"]


def test_a_task_is_done_and_stamped_under_the_spec_it_read_when_study_toml_changes_midway(tmp_path, tiny_text):
    """study.toml rewritten with another [eval] while a task trains: the task's evaluation is
    the [eval] it started with, and its result says so (not computed under one, stamped with
    the other)."""
    from minidyn.runs.reporter import Reporter
    from minidyn.studies.spec import load_spec
    from minidyn.studies.worker import run_task

    path = tmp_path / "tiny.toml"
    path.write_text(tiny_text)
    study = StudyDir(tmp_path / "study")
    study.prepare(load_spec(path))

    class RewriteAfterTheFirstEpoch(Reporter):
        def epoch(self, record):
            if record["epoch"] == 0:
                study.spec_file.write_text(tiny_text.replace("limit = 40", "limit = 20"))

    run_task(study, "standard_seed-0", "train", RewriteAfterTheFirstEpoch())
    record = json.loads(study.result(Task(load_spec(path).cells()[0], "train")).read_text())
    assert record["settings"]["limit"] == 40
    assert {r["n"] for which in record["results"].values() for r in which["eps"].values()} == {40}


def test_prepare_refuses_another_spec_while_a_runner_of_the_study_lives(tmp_path, tiny_text):
    """The spec is fixed per study while a runner runs it: a second runner's prepare with
    other settings is refused naming the difference (before: it rewrote study.toml, and the
    first runner's cells trained with the second's settings); the same spec is welcome, and
    once the first runner is gone the edit is the trained-cell check's to judge."""
    import pytest
    from minidyn.errors import ConfigError
    from minidyn.studies.spec import load_spec

    first, edited = tmp_path / "tiny.toml", tmp_path / "edited.toml"
    first.write_text(tiny_text)
    edited.write_text(tiny_text.replace("eps = 0.1", "eps = 0.2"))
    study = StudyDir(tmp_path / "study")
    mark = study.prepare(load_spec(first), mark=True)
    with pytest.raises(ConfigError, match=r"another `study run` .*\(\[train\] eps = 0\.1 there, 0\.2 here"):
        study.prepare(load_spec(edited), mark=True)
    assert study.spec_file.read_text() == tiny_text
    assert [p.name for p in study.locks_dir.iterdir()] == [mark.path.name]  # the refused one's mark is gone
    study.prepare(load_spec(first), mark=True).release()  # a second runner of the same spec
    mark.release()
    study.prepare(load_spec(edited))  # nothing trained, nobody running: the spec may change
    assert study.spec_file.read_text() == edited.read_text()


def test_a_result_out_of_range_is_not_done_and_load_result_says_why(tmp_path):
    import pytest
    from minidyn.errors import ConfigError
    from minidyn.studies.tasks import load_result, read_result

    s = spec({"method": ["standard"], "seed": [0]})
    study, task = StudyDir(tmp_path), Task(s.cells()[0], "train")
    study.cell_dir(task.cell).mkdir(parents=True)
    evaluation = {"accuracy": {"clean": 250.0}, "n": 40}
    write_result(study.result(task), {"settings": settings(s, task), "results": {
        "last": {"epoch": 2, "seconds": 1.0, "eps": {"0.1": evaluation}}}})
    assert read_result(study.result(task)) is None and not study.done(s, task)
    with pytest.raises(ConfigError, match=r"study-eval\.json: results\.last eps '0\.1' accuracy of 'clean' is 250\.0"):
        load_result(study.result(task))


def test_a_trained_cell_whose_epochs_changed_is_refused_naming_epochs(tmp_path):
    """epochs 10 -> 20 also moves the options TrainConfig derives from it (curriculum_epochs first
    in config order): the one-line refusal names what the user changed."""
    import pytest

    from minidyn.errors import ConfigError
    from minidyn.studies.tasks import check_trained_cells

    before = parse_spec({"train": {"backend": "numpy", "model": "softmax", "epochs": 10},
                         "grid": {"method": ["standard"], "seed": [0]}})
    after = parse_spec({"train": {"backend": "numpy", "model": "softmax", "epochs": 20},
                        "grid": {"method": ["standard"], "seed": [0]}})
    study = StudyDir(tmp_path)
    cell = before.cells()[0]
    study.cell_dir(cell).mkdir(parents=True)
    (study.cell_dir(cell) / "config.json").write_text(json.dumps(cell.config().to_dict()))
    with pytest.raises(ConfigError) as error:
        check_trained_cells(study, after)
    assert "trained with epochs = 10 (the spec now gives 20)" in str(error.value)
    assert "\n" not in str(error.value)
