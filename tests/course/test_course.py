"""minidyn course: the stubs fail, the reference solutions pass, each known mistake fails with
its hint, the Gradescope JSON, the CLI's one-line errors, the capstone (torch_free.py: torch
made unimportable)."""
import json

import pytest
from click.testing import CliRunner

from minidyn.cli.main import main
from minidyn.course import TASKS, task_named
from minidyn.course.grader import Settings, grade
from minidyn.course.templates import workspace_files

GRADED = [t for t in TASKS if t.graded]
FAST = Settings(seed=0, max_examples=20)


def workspace(folder, solutions=False):
    for name, text in workspace_files(solutions).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    return workspace(tmp_path_factory.mktemp("stubs"))


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    return workspace(tmp_path_factory.mktemp("solutions"), solutions=True)


def test_stubs_fail_every_task_as_not_implemented(stubs):
    results = grade(stubs, GRADED, Settings(seed=0, max_examples=5))
    assert [r.task.number for r in results] == [1, 2, 3, 4, 5, 6]
    for result in results:
        assert not result.passed
        assert all(o.output.startswith("not implemented yet") for o in result.outcomes), result.task


def test_the_student_workspace_holds_no_solution(stubs):
    for path in stubs.rglob("*.py"):
        assert "reference" not in path.read_text() and "_solution" not in path.read_text(), path


def test_reference_solutions_pass_every_task(solutions):
    results = grade(solutions, GRADED, FAST)
    failed = [(o.task.number, o.name, o.output) for r in results for o in r.outcomes if not o.passed]
    assert not failed


# (task, the planted module: the reference for the rest, one function wrong, the property it
# fails, a phrase of its hint)
REST = {1: "", 2: "", 3: "from minidyn.course.reference import stop_mask, pgd_step\n",
        4: "", 5: "from minidyn.course.reference import softmax_cross_entropy, mlp_backward, mlp_forward\n"}
MUTANTS = {
    "fosc batch mean": (1, """
def fosc(x_k, x_0, g, eps):
    b = len(x_k)
    return (eps * np.abs(g).reshape(b, -1).sum(1) - ((x_k - x_0) * g).reshape(b, -1).sum(1)) / b
""", "vertices", "batch-mean loss mistake"),
    "ce batch mean": (5, """
def softmax_cross_entropy(logits, y):
    losses, dlogits = reference.softmax_cross_entropy(logits, y)
    return losses, dlogits / len(y)
""", "ce", "batch-mean loss mistake"),
    "V as printed": (3, """
def stop_mask(c, c_t):
    return np.asarray(c) <= c_t
""", "stop_mask", "V = 1(c <= c_t) literally"),
    "box clip forgotten": (2, """
def project(x, x_0, eps, lo=0.0, hi=1.0):
    return np.clip(x, x_0 - eps, x_0 + eps)
""", "reference", "box clip [lo, hi] is forgotten"),
    "ball clip forgotten": (2, """
def project(x, x_0, eps, lo=0.0, hi=1.0):
    return np.clip(x, lo, hi)
""", "reference", "eps-ball clip is forgotten"),
    "box clip before the step": (3, """
def pgd_step(x_k, x_0, g, v, eps, alpha):
    v = np.asarray(v).reshape(-1, *[1] * (np.ndim(x_k) - 1))
    return np.clip(np.clip(x_k, 0, 1) + v * alpha * np.sign(g), x_0 - eps, x_0 + eps)
""", "step", "box clip is applied before the step"),
    "c_t one epoch early": (4, """
def c_t(t, c_max, dynamic_epochs):
    return max(c_max - (t + 1) * c_max / dynamic_epochs, 0.0)
""", "formula", "one epoch early"),
    "c_t one epoch late": (4, """
def c_t(t, c_max, dynamic_epochs):
    return max(c_max - max(t - 1, 0) * c_max / dynamic_epochs, 0.0)
""", "formula", "one epoch late"),
    "transposed gradient": (5, """
def mlp_backward(params, cache, dlogits):
    dx, grads = reference.mlp_backward(params, cache, dlogits)
    return dx, {name: g.T if g.ndim == 2 else g for name, g in grads.items()}
""", "mlp_params", "transposed"),
    "unnormalised gradient": (5, """
def softmax_cross_entropy(logits, y):
    losses, _ = reference.softmax_cross_entropy(logits, y)
    dlogits = np.exp(logits - logits.max(axis=1, keepdims=True))
    dlogits[np.arange(len(y)), y] -= 1
    return losses, dlogits
""", "ce_rows", "unnormalised"),
    "FOSC sign flipped": (1, """
def fosc(x_k, x_0, g, eps):
    b = len(x_k)
    return eps * np.abs(g).reshape(b, -1).sum(1) + ((x_k - x_0) * g).reshape(b, -1).sum(1)
""", "vertices", "wrong sign"),
    "FOSC mean over coordinates": (1, """
def fosc(x_k, x_0, g, eps):
    b = len(x_k)
    return eps * np.abs(g).reshape(b, -1).mean(1) - ((x_k - x_0) * g).reshape(b, -1).mean(1)
""", "vertices", "1/d of the expected"),
    "V at the tie": (3, """
def stop_mask(c, c_t):
    return np.asarray(c) >= c_t
""", "stop_mask", "equals c_t exactly must stop"),
    "V ignored": (3, """
def pgd_step(x_k, x_0, g, v, eps, alpha):
    return reference.project(x_k + alpha * np.sign(g), x_0, eps)
""", "stopped", "must stay exactly where they are"),
    "c_t not clamped": (4, """
def c_t(t, c_max, dynamic_epochs):
    return c_max - t * c_max / dynamic_epochs
""", "formula", "went below 0"),
    "ReLU mask missing": (5, """
def mlp_backward(params, cache, dlogits):
    _, grads = reference.mlp_backward(params, cache, dlogits)
    g = dlogits
    for layer in range(len(params) // 2, 0, -1):
        g = g @ params[f"fc{layer}.weight"]
    return g.reshape(cache[0]), grads
""", "mlp_dx", "ReLU"),
    "no stop": (6, """
from minidyn.course.reference import train_epoch


def attack_batch(loss_and_grad, x_0, y, *, eps, alpha, steps, c_t, rng):
    return reference.attack_batch(loss_and_grad, x_0, y, eps=eps, alpha=alpha, steps=steps, c_t=None, rng=rng)
""", "attack", "no example stopped"),
}


@pytest.mark.parametrize("mutant", MUTANTS)
def test_each_known_mistake_fails_with_its_hint(tmp_path, mutant):
    number, body, prop, phrase = MUTANTS[mutant]
    folder = workspace(tmp_path, solutions=True)
    task = task_named(number)
    head = "import numpy as np\nfrom minidyn.course import reference\n" + REST.get(number, "")
    (folder / f"{task.module}.py").write_text(head + body)
    (result,) = grade(folder, [task], FAST)
    outcome = next(o for o in result.outcomes if o.name == prop)
    assert not outcome.passed
    assert "counterexample (shrunk by Hypothesis)" in outcome.output
    assert phrase in outcome.output, outcome.output


def test_check_json_has_gradescope_fields_and_exit_codes(stubs, solutions, tmp_path):
    runner = CliRunner()
    out = tmp_path / "results.json"
    failing = runner.invoke(main, ["course", "check", "--dir", str(stubs), "--json", str(out), "--max-examples", "3"])
    assert failing.exit_code == 1, failing.output
    results = json.loads(out.read_text())
    assert set(results) == {"score", "tests"} and results["score"] == 0
    assert len(results["tests"]) == 18
    for test in results["tests"]:
        assert set(test) == {"name", "score", "max_score", "output"}
        assert test["score"] == 0 and test["max_score"] == 1 and "not implemented yet" in test["output"]
    passing = runner.invoke(main, ["course", "check", "schedule", "--dir", str(solutions), "--json", str(out)])
    assert passing.exit_code == 0, passing.output
    assert json.loads(out.read_text())["score"] == 2
    assert "PASS  c_0 = c_max and c_T' = 0" in passing.output


@pytest.mark.parametrize("args, message", [
    (["check", "--dir", "{tmp}/nowhere"], "no such directory"),
    (["check", "--dir", "{tmp}"], "not a course workspace"),
    (["check", "9", "--dir", "{ws}"], "unknown task '9'"),
    (["start", "{ws}"], "not overwriting a workspace"),
    (["run", "{ws}"], "needs Task 1 (fosc, task1_fosc.py)"),
    (["run", "{ws}", "--out", "{ws}/worksheets"], "is not empty"),
])
def test_bad_input_is_one_line(tmp_path, stubs, args, message):
    args = [a.format(tmp=tmp_path, ws=stubs) for a in args]
    result = CliRunner().invoke(main, ["course", *args])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_module_that_does_not_import_is_named_with_its_line(tmp_path):
    folder = workspace(tmp_path)
    (folder / "task4_schedule.py").write_text("def c_t(t, c_max, dynamic_epochs):\n    return (\n")
    result = CliRunner().invoke(main, ["course", "check", "4", "--dir", str(folder)])
    assert result.exit_code == 1
    assert "task4_schedule.py, line 2: SyntaxError" in result.output
    assert "Traceback" not in result.output


def test_worksheets_run_as_scripts(solutions):
    import subprocess
    import sys

    for name in ("worksheet1_fosc", "worksheet6_algorithm1", "worksheet7_reading"):
        done = subprocess.run([sys.executable, str(solutions / "worksheets" / f"{name}.py")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert (solutions / "worksheets" / f"{name}.md").read_text().startswith("# Task")
    assert "# %% [markdown]" in (solutions / "worksheets" / "worksheet1_fosc.py").read_text()


def test_the_failing_fosc_shown_in_docs_is_what_a_student_sees(tmp_path):
    import pathlib

    folder = workspace(tmp_path)
    (folder / "task1_fosc.py").write_text(
        "import numpy as np\n\n\ndef fosc(x_k, x_0, g, eps):\n"
        "    return eps * np.abs(g).sum(axis=1) - ((x_k - x_0) * g).sum(axis=1)\n")
    result = CliRunner().invoke(main, ["course", "check", "1", "--dir", str(folder)])
    assert result.exit_code == 1
    docs = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "course.md").read_text()
    shown = docs.split("sums over axis 1 only:\n\n```\n")[1].split("```")[0]
    assert shown.strip() in result.output


def test_the_capstone_with_correct_pieces_trains_what_minidyn_trains(solutions, tmp_path):
    """The student's loop (here the reference solutions) and minidyn's run loop, same settings:
    the same accuracies and steps, losses and FOSC to float rounding."""
    from minidyn.course.capstone import capstone_config, train_capstone
    from minidyn.runs import RunDir, train_run

    train_capstone(solutions, tmp_path / "student", epochs=2, limit=96, eval_limit=20)
    train_run(capstone_config(2, 96, 0, 20), tmp_path / "minidyn")
    student, library = (RunDir(tmp_path / name).read_metrics() for name in ("student", "minidyn"))
    assert len(student) == len(library) == 2
    for mine, theirs in zip(student, library):
        assert mine.keys() == theirs.keys()
        for key in mine.keys() - {"seconds", "grad_evals"}:
            assert mine[key] == (pytest.approx(theirs[key], rel=1e-5)
                                 if isinstance(theirs[key], float) else theirs[key]), key


def test_worksheets_open_as_notebooks_where_jupytext_is_installed(solutions):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(solutions / "worksheets" / "worksheet1_fosc.py")
    assert [c.cell_type for c in notebook.cells] == ["markdown", "code"]


def test_an_exception_in_the_student_code_names_its_line_and_the_shrunk_input(tmp_path):
    folder = workspace(tmp_path)
    (folder / "task4_schedule.py").write_text(
        "def c_t(t, c_max, dynamic_epochs):\n    return c_max * (1 - t / (dynamic_epochs - 1))\n")
    (result,) = grade(folder, [task_named(4)], FAST)
    output = result.outcomes[0].output
    assert "your code raised ZeroDivisionError: division by zero (task4_schedule.py, line 2)" in output
    assert "on the input (shrunk by Hypothesis): c_max=0.5, dynamic_epochs=1, t=0" in output


def test_a_correct_step_that_writes_into_its_inputs_passes_and_a_wrong_one_fails(tmp_path):
    """The expected value is computed from the example, not from arrays the student's function
    may change in place: an in-place correct pgd_step passes, an in-place one that ignores V fails."""
    folder = workspace(tmp_path, solutions=True)
    head = "import numpy as np\nfrom minidyn.course import reference\n"
    step = ("def pgd_step(x_k, x_0, g, v, eps, alpha):\n"
            "    moved = np.clip(np.clip(x_k + alpha * np.sign(g) * {mask}, x_0 - eps, x_0 + eps), 0, 1)\n"
            "    x_k[...] = moved\n    return x_k\n")
    task = task_named(3)
    keep = REST[3]  # the reference's stop_mask (and a pgd_step the one below replaces)
    mask = "v.reshape((-1,) + (1,) * (x_k.ndim - 1))"
    (folder / f"{task.module}.py").write_text(head + keep + step.format(mask=mask))
    (right,) = grade(folder, [task], FAST)
    assert all(o.passed for o in right.outcomes), [o.output for o in right.outcomes if not o.passed]
    (folder / f"{task.module}.py").write_text(head + keep + step.format(mask="1"))
    (wrong,) = grade(folder, [task], FAST)
    assert not all(o.passed for o in wrong.outcomes)


def test_a_student_module_that_exits_is_reported_not_obeyed(tmp_path):
    folder = workspace(tmp_path)
    (folder / "task4_schedule.py").write_text("import sys\nsys.exit(3)\n")
    result = CliRunner().invoke(main, ["course", "check", "4", "--dir", str(folder)])
    assert result.exit_code == 1 and "task4_schedule.py, line 2: SystemExit: 3" in result.output, result.output
    (folder / "task4_schedule.py").write_text("def c_t(t, c_max, dynamic_epochs):\n    raise SystemExit('bye')\n")
    (outcome, *_), = [r.outcomes for r in grade(folder, [task_named(4)], FAST)]
    assert not outcome.passed and "your code raised SystemExit: bye (task4_schedule.py, line 2)" in outcome.output
