'''The student's workspace: one module per task (stubs) and a worksheet per task.

A stub module holds the signatures, docstrings that state the equation, shapes and units, and
`raise NotImplementedError` where the student writes code. The instructor's solution mode
(`course start --solutions`) replaces each such line by a call into `minidyn.course.reference`,
so the solutions live once, in the library. The student workspace holds no solution.
'''
from __future__ import annotations

from minidyn.course.tasks import TASKS, Task

TODO = '    raise NotImplementedError("TODO: implement for Task {number} ({name})")'

MODULES = {
    "task1_fosc": '''"""Task 1: FOSC, the First-Order Stationary Condition (paper, Section 3.1, Eq. 3 and Eq. 4).

For an adversarial example x_k of the natural example x_0 and g = grad_x loss(h(x_k), y),

    c(x_k) = max_{x in X} <x - x_k, g>,   X = {x : ||x - x_0||_inf <= eps}      (Eq. 3)
           = eps * ||g||_1 - <x_k - x_0, g>                                    (Eq. 4)

Run `minidyn course check 1 --dir .` to check your work.
"""
import numpy as np


def fosc(x_k, x_0, g, eps):
    """Per-example FOSC, Eq. 4, over the eps-ball alone (no pixel box).

    x_k, x_0, g: arrays of the same shape (B, ...): B examples of any shape (an MNIST batch is
        (B, 1, 28, 28)); pixels in [0, 1]. g[i] is the gradient of example i's OWN loss with
        respect to its input (from a per-example, summed loss, never the batch mean).
    eps: the L_inf budget, in pixel units (0.3 on MNIST).
    Returns: (B,) float array, c_i = eps * sum_j |g_ij| - sum_j (x_k - x_0)_ij * g_ij,
        summed over every coordinate j of example i.
    """
{fosc}
''',
    "task2_projection": '''"""Task 2: the projection onto the feasible set of the attack.

The set is the L_inf ball of radius eps around x_0 intersected with the pixel box [lo, hi]^d
(images live in [0, 1]). Both are boxes, so their intersection is the box
[max(x_0 - eps, lo), min(x_0 + eps, hi)] and the projection is a coordinate-wise clip.

Run `minidyn course check 2 --dir .` to check your work.
"""
import numpy as np


def project(x, x_0, eps, lo=0.0, hi=1.0):
    """The Euclidean projection of x onto {z : ||z - x_0||_inf <= eps} intersected with [lo, hi]^d.

    x, x_0: arrays of the same shape (B, ...), x_0 in [lo, hi]; eps: the budget in pixel units.
    Returns an array of x's shape whose every coordinate lies within eps of x_0's AND in [lo, hi].
    """
{project}
''',
    "task3_pgd_step": '''"""Task 3: one PGD step of Algorithm 1, with its per-example stop.

Algorithm 1 moves every example by x^{k+1} = Proj(x^k + V * alpha * sign(g^k)), where the
control V_i is 0 for an example that has stopped: one whose FOSC c(x_i^k) <= c_t.
(The paper prints V = 1(c <= c_t); read what it must mean for an example to stop.)

Run `minidyn course check 3 --dir .` to check your work (pgd_step uses your Task 2).
"""
import numpy as np

from task2_projection import project


def stop_mask(c, c_t):
    """V of Algorithm 1: (B,) bool, True for the examples that go on (take the next step).

    c: (B,) FOSC of each example at its current point; c_t: the epoch's FOSC target (>= 0).
    An example stops, V_i = False, once c_i <= c_t.
    """
{stop_mask}


def pgd_step(x_k, x_0, g, v, eps, alpha):
    """x^{k+1} = Proj(x^k + V * alpha * sign(g)), Proj: your Task 2 `project` onto the eps-ball
    of x_0 within the pixel box [0, 1].

    x_k, x_0, g: (B, ...) current points, natural examples, gradients of each example's loss at x_k.
    v: (B,) bool, V (True: the example moves). eps, alpha: budget and step size, pixel units.
    Returns (B, ...) the next points; an example with V False stays exactly where it is.
    """
{pgd_step}
''',
    "task4_schedule": '''"""Task 4: the dynamic schedule of Algorithm 1.

    c_t = max(c_max - t * c_max / T', 0)

t counts epochs from 0: epoch 0 uses c_max itself, and from epoch T' on c_t = 0.

Run `minidyn course check 4 --dir .` to check your work.
"""


def c_t(t, c_max, dynamic_epochs):
    """The FOSC target of epoch t (t = 0, 1, 2, ...): a float in [0, c_max].

    c_max: the target of epoch 0 (the paper: 0.5); dynamic_epochs: T' > 0, the epoch from which
    c_t = 0 (full-strength PGD).
    """
{c_t}
''',
    "task5_gradients": '''"""Task 5: the hand-written backward passes: softmax cross-entropy and the MLP.

Notation: B examples, C classes, z the logits (B, C), y the integer labels (B,). A Linear layer
computes z = h W^T + b with W (out, in) and b (out,); the MLP is
fc1 -> ReLU -> fc2 -> ReLU -> fc3 on the flattened input (minidyn's "mlp": 784-256-256-10).
`mlp_forward` is given; you write the two gradients.

Run `minidyn course check 5 --dir .` to check your work.
"""
import numpy as np


def softmax_cross_entropy(logits, y):
    """Per-example losses and their gradients with respect to the logits.

    logits: (B, C) float; y: (B,) int in [0, C).
    Returns (losses (B,), dlogits (B, C)):
        loss_i = log sum_j exp(z_ij) - z_{i, y_i}      (subtract each row's max first: no overflow)
        dlogits[i] = d loss_i / d z_i = softmax(z_i) - onehot(y_i)
    Each example's own loss: no division by B (a batch mean would make every FOSC 1/B too small).
    """
{softmax_cross_entropy}


def mlp_forward(params, x):
    """Given: the forward pass. params: {"fc<l>.weight": (out, in), "fc<l>.bias": (out,)};
    x (B, ...). Returns (logits (B, C), cache), cache = (x.shape, [input of fc1, of fc2, ...])."""
    h = x.reshape(x.shape[0], -1)
    inputs, layers = [], len(params) // 2
    for layer in range(1, layers + 1):
        inputs.append(h)
        h = h @ params[f"fc{layer}.weight"].T + params[f"fc{layer}.bias"]
        if layer < layers:
            h = np.maximum(h, 0)
    return h, (x.shape, inputs)


def mlp_backward(params, cache, dlogits):
    """The backward pass of `mlp_forward`.

    params: as for mlp_forward; cache: its second output; dlogits: dL/dz (B, C).
    Returns (dx, grads): dx = dL/dx, shaped like x (cache[0]); grads = {name: dL/dparam}, each
    shaped like its parameter. Per layer, with g = dL/d(output) (B, out) and h its input (B, in):
        dL/dW = g^T h  (out, in)     dL/db = sum over the batch of g  (out,)     dL/dh = g W  (B, in)
    and a ReLU a = max(u, 0) passes g * (a > 0) back.
    """
{mlp_backward}
''',
    "task6_algorithm1": '''"""Task 6: Algorithm 1 (Dynamic Adversarial Training), the attack of a batch and one epoch.

Uses your Tasks 1-3 (fosc, project, stop_mask, pgd_step). Run `minidyn course check 6 --dir .`.
"""
import numpy as np

from task1_fosc import fosc
from task2_projection import project
from task3_pgd_step import pgd_step, stop_mask


def attack_batch(loss_and_grad, x_0, y, *, eps, alpha, steps, c_t, rng):
    """Algorithm 1's inner loop for one batch: PGD with the FOSC stop.

    loss_and_grad(x, y) -> (losses (B,), g (B, ...)): each example's loss and its input gradient.
    x_0 (B, ...) natural examples in [0, 1]; y (B,) labels; eps, alpha: budget and step size;
    steps: K; c_t: the epoch's FOSC target; rng: a numpy Generator.
    1. the random start: u = rng.uniform(-eps, eps, size=x_0.shape) (exactly this one draw),
       x^0 = project(x_0 + u, x_0, eps)  (Task 2)
    2. V = all True; for k = 0 .. K-1: g = the gradient at x^k; if k >= 1, an example whose
       FOSC c(x^k) (Task 1, from x_0) is <= c_t stops (V &= stop_mask(c, c_t)); then
       x^{k+1} = pgd_step(x^k, x_0, g, V, eps, alpha) and each example with V True took one step.
    Returns (x_adv (B, ...), steps_taken (B,) int).
    """
{attack_batch}


def train_epoch(loss_and_grad, sgd_step, batches, *, c_t, eps, alpha, steps, rng):
    """One epoch of Algorithm 1: for each (x, y) in `batches`, attack_batch, then one SGD step
    sgd_step(x_adv, y) on the adversarial batch. The same `rng` for every batch, in order.
    Returns the list of each batch's steps_taken.
    """
{train_epoch}
''',
}

SOLUTIONS = {
    "fosc": "return _solution.fosc(x_k, x_0, g, eps)",
    "project": "return _solution.project(x, x_0, eps, lo, hi)",
    "stop_mask": "return _solution.stop_mask(c, c_t)",
    "pgd_step": "return _solution.pgd_step(x_k, x_0, g, v, eps, alpha)",
    "c_t": "return _solution.c_t(t, c_max, dynamic_epochs)",
    "softmax_cross_entropy": "return _solution.softmax_cross_entropy(logits, y)",
    "mlp_backward": "return _solution.mlp_backward(params, cache, dlogits)",
    "attack_batch": ("return _solution.attack_batch(loss_and_grad, x_0, y, eps=eps, alpha=alpha, "
                     "steps=steps, c_t=c_t, rng=rng)"),
    "train_epoch": ("return _solution.train_epoch(loss_and_grad, sgd_step, batches, c_t=c_t, eps=eps, "
                    "alpha=alpha, steps=steps, rng=rng)"),
}


def module_source(task: Task, solutions: bool = False) -> str:
    """The text of `task`'s module: stubs, or (solutions) calls into minidyn.course.reference."""
    if solutions:
        bodies = {name: "    " + SOLUTIONS[name] for name in task.functions}
        head = "from minidyn.course import reference as _solution  # the instructor's copy\n"
    else:
        bodies = {name: TODO.format(number=task.number, name=name) for name in task.functions}
        head = ""
    text = MODULES[task.module]
    for name, body in bodies.items():  # not str.format: the docstrings hold braces
        text = text.replace("{" + name + "}\n", body + "\n")
    if head:  # after the module docstring
        end = text.index('"""', 3) + 4
        text = text[:end] + head + text[end:]
    return text


def worksheet_name(task: Task) -> str:
    """worksheetN_key: not the module's name, which the worksheet imports."""
    return f"worksheet{task.number}_{task.key}"


def worksheet_markdown(task: Task) -> str:
    """The worksheet of `task` in Markdown."""
    lines = [f"# Task {task.number}: {task.title}", "",
             f"**Paper:** {task.paper}.  **Teaches:** {task.teaches}.  **Time:** about {task.minutes} min.",
             f"**Needs:** {', '.join(f'Task {n}' for n in task.prerequisites) or 'nothing'}.", ""]
    lines += [WORKSHEETS[task.key].strip(), ""]
    if task.graded:
        lines += ["## Check your work", "",
                  f"Edit `{task.module}.py` in your workspace (the folder above `worksheets/`), then run there:", "",
                  "```", f"minidyn course check {task.number} --dir .", "```", "",
                  "Each line names a property your code must have; a failing one shows the smallest "
                  "input Hypothesis found that breaks it and, for a known mistake, a hint.", ""]
    return "\n".join(lines)


def worksheet_script(task: Task) -> str:
    """The same worksheet as a jupytext percent-format script: `jupytext --to notebook` (or
    opening it in Jupyter with jupytext installed) makes a notebook; `python` runs it as is."""
    cells = [JUPYTEXT_HEADER,
             "# %% [markdown]\n" + "\n".join(f"# {line}".rstrip() for line in worksheet_markdown(task).splitlines())]
    if task.graded:
        cells.append("# %%\n" + PATH_CELL + EXPERIMENTS[task.key].strip() + "\n")
    else:
        cells.append("# %%\nprint(\"Task 7 is written: answer the questions above in task7_reading.md.\")\n")
    return "\n\n".join(cells) + "\n"


JUPYTEXT_HEADER = """# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---"""

# The worksheet runs from worksheets/ (a script) or wherever Jupyter starts: the task modules are in
# the folder above it.
PATH_CELL = """import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent if "__file__" in globals() else pathlib.Path.cwd()
sys.path.insert(0, str(here.parent if here.name == "worksheets" else here))
"""

WORKSHEETS = {
    "fosc": """
Adversarial training's inner problem is `max_{||x - x_0||_inf <= eps} loss(h(x), y)`. The paper asks
how well an attack solves it, per example, and answers with FOSC (Eq. 3): how much a linear
step could still gain inside the ball. Because a linear function over a box is maximised at a
vertex, the max has the closed form of Eq. 4.

1. Show that the maximiser of `<x - x_k, g>` over the ball is `x_0 + eps * sign(g)`; derive Eq. 4.
2. Why is `c >= 0` for every `x_k` in the ball? When is it 0?
3. Implement `fosc` in `task1_fosc.py`. Sum over every coordinate of an example, not over the batch.
4. The check compares your closed form with the brute-force maximum over all `2^d` vertices of the
   ball for tiny `d`. Why is that enough to trust it?
""",
    "projection": """
PGD projects back onto the feasible set after every step. With images in `[0, 1]` that set is the
eps-ball of `x_0` intersected with the pixel box.

1. Show that the intersection of two boxes is a box, and that projecting onto a box is a clip.
2. Implement `project` in `task2_projection.py`. Both constraints must hold at once.
""",
    "pgd_step": """
Algorithm 1 stops each example as soon as its FOSC falls to the epoch's target `c_t`: its control
`V` becomes 0 and it does not move any more. The paper prints `V = 1(c <= c_t)`; the authors' code
zeroes `V` where `FOSC <= c_t`.

1. Which reading makes the weak examples of early epochs weak? Implement `stop_mask` accordingly.
2. Implement `pgd_step`: the sign-gradient step of size `alpha` for the examples that go on, then
   the projection of Task 2 (after the step: what goes wrong if you clip before it?).
""",
    "schedule": """
`c_t = max(c_max - t * c_max / T', 0)`: the target starts at `c_max` (weak, early-stopped
examples) and reaches 0 (full PGD) at epoch `T'`.

1. With `c_max = 0.5` and `T' = 40` (the paper's MNIST), what is `c_t` at epochs 0, 20, 40, 49?
2. Implement `c_t` in `task4_schedule.py`; `t` counts from 0.
""",
    "gradients": """
minidyn's NumPy backend has no autodiff: every gradient is written by hand. FOSC needs the
gradient of each example's own loss with respect to its input; SGD needs the parameters'.

1. Derive `d loss_i / d z_i = softmax(z_i) - onehot(y_i)` for the cross-entropy.
2. For a Linear layer `z = h W^T + b`, derive `dL/dW`, `dL/db` and `dL/dh`; mind the shapes.
3. Implement `softmax_cross_entropy` and `mlp_backward` in `task5_gradients.py`. The check
   compares them with minidyn's and with finite differences.
4. If you averaged the loss over the batch, by how much would every FOSC value shrink? Why would
   that make the paper's `c_max = 0.5` meaningless?
""",
    "algorithm1": """
Put Tasks 1-3 together into Algorithm 1: a random start in the ball, up to `K` PGD steps with the
per-example FOSC stop, then one SGD step on the adversarial batch.

1. Implement `attack_batch` and `train_epoch` in `task6_algorithm1.py`.
2. The gradient for the FOSC after step `k` is also the gradient for step `k + 1`: how many
   gradient evaluations does an example that stops after 3 of 10 steps cost?
3. When the checks of Tasks 1-6 pass, train a model with your own code: `minidyn course run .`
""",
    "reading": """
Run the capstone (`minidyn course run .`), or a longer run (`minidyn train --backend numpy
--epochs 10 --out runs/dyn`), then `minidyn analyze RUN_DIR` for the FOSC figures. Answer in
`task7_reading.md` (this task is read by your instructor, not autograded).

1. How does the FOSC distribution of the training examples change from the first to the last
   epoch? Compare with the paper's Figures 3 and 5.
2. In the first epoch, what fraction of examples stopped after one step? What does that say
   about `c_max = 0.5` for this model and eps?
3. Figure 1a: why should examples of lower FOSC be misclassified more often?
4. Compare the PGD accuracy of your run with the paper's Table 1: what differs in the setting?
""",
}

EXPERIMENTS = {
    "fosc": """
import numpy as np
from task1_fosc import fosc

x_0 = np.zeros((1, 3)); g = np.array([[1.0, -2.0, 0.5]])
print("FOSC at x_0 (expect eps * ||g||_1 = 0.35):", fosc(x_0, x_0, g, 0.1))
print("FOSC at the maximiser x_0 + eps sign(g) (expect 0):", fosc(x_0 + 0.1 * np.sign(g), x_0, g, 0.1))
""",
    "projection": """
import numpy as np
from task2_projection import project

x_0 = np.array([[0.0, 0.5, 0.95]])
print(project(np.array([[-0.5, 0.9, 1.5]]), x_0, 0.1))  # expect [[0.  0.6 1. ]]
""",
    "pgd_step": """
import numpy as np
from task3_pgd_step import pgd_step, stop_mask

print(stop_mask(np.array([0.1, 0.9]), 0.5))  # expect [False  True]
x_0 = np.full((2, 2), 0.5)
print(pgd_step(x_0, x_0, np.array([[1.0, -1.0], [1.0, -1.0]]), np.array([False, True]), 0.3, 0.1))
""",
    "schedule": """
from task4_schedule import c_t

print([c_t(t, 0.5, 40) for t in (0, 20, 40, 49)])  # expect [0.5, 0.25, 0.0, 0.0]
""",
    "gradients": """
import numpy as np
from task5_gradients import softmax_cross_entropy

losses, dlogits = softmax_cross_entropy(np.array([[2.0, 0.0, -1.0]]), np.array([0]))
print(losses, dlogits, dlogits.sum(axis=1))  # each row of dlogits sums to 0
""",
    "algorithm1": """
import numpy as np
from task6_algorithm1 import attack_batch

w = np.array([[1.0, -1.0], [-1.0, 1.0]])  # a linear model on 2 pixels, 2 classes


def loss_and_grad(x, y):
    z = x @ w.T
    p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    onehot = np.eye(2)[y]
    return -np.log(p[np.arange(len(y)), y]), (p - onehot) @ w


x_adv, taken = attack_batch(loss_and_grad, np.array([[0.6, 0.4]]), np.array([0]), eps=0.3, alpha=0.075,
                            steps=10, c_t=0.0, rng=np.random.default_rng(0))
print(x_adv, taken)
""",
}


def workspace_files(solutions: bool = False) -> dict[str, str]:
    """{file name: text} of a workspace: per task its module (graded tasks), its worksheet as
    Markdown and as a jupytext script, the written task's answer sheet, and a README."""
    files = {"README.md": README}
    for task in TASKS:
        if task.graded:
            files[f"{task.module}.py"] = module_source(task, solutions)
        files[f"worksheets/{worksheet_name(task)}.md"] = worksheet_markdown(task)
        files[f"worksheets/{worksheet_name(task)}.py"] = worksheet_script(task)
    files["task7_reading.md"] = "# Task 7: answers\n\n1.\n\n2.\n\n3.\n\n4.\n"
    return files


README = """# minidyn coursework: your workspace

One Python module per task (`task1_fosc.py` ... `task6_algorithm1.py`): write the code where it
says `raise NotImplementedError`. The worksheets (`worksheets/`) explain each task, as Markdown and
as scripts you can run (`python worksheets/worksheet1_fosc.py`, or open them as notebooks with jupytext).

    minidyn course list              the tasks, in order, with the time each takes
    minidyn course check --dir .     check every task (or `check 1 --dir .` for one)
    minidyn course run .             when Tasks 1-6 pass: train a robust model with your code

Start with Task 1. Guide: docs/course.md in minidyn.
"""
