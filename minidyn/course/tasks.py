"""The course's tasks, in the order a student does them (`minidyn course list`)."""
from __future__ import annotations

from dataclasses import dataclass

from minidyn.errors import ConfigError


@dataclass(frozen=True)
class Task:
    """One task. `module`: the student's file (without .py) in the workspace; `functions`: what
    the student writes there; `graded`: False for the written task (no autograding)."""

    number: int
    key: str
    title: str
    teaches: str
    paper: str
    prerequisites: tuple[int, ...]
    minutes: int
    module: str
    functions: tuple[str, ...]
    graded: bool = True


TASKS: tuple[Task, ...] = (
    Task(1, "fosc", "FOSC, the closed form",
         "what 'converged' means for the inner maximisation; the max of a linear function over a box",
         "Section 3.1, Eq. 3 and Eq. 4", (), 30, "task1_fosc", ("fosc",)),
    Task(2, "projection", "Projection onto the eps-ball within the pixel box",
         "the feasible set of the attack and its Euclidean projection, a coordinate-wise clip",
         "Section 2 (the L_inf threat model); Algorithm 1, line 'Proj'", (), 20,
         "task2_projection", ("project",)),
    Task(3, "pgd_step", "One PGD step with Algorithm 1's per-example stop",
         "the sign-gradient step, and the control V that stops an example once FOSC <= c_t",
         "Algorithm 1 (V, and the printed V = 1(c <= c_t), whose sign is backwards)", (1, 2), 30,
         "task3_pgd_step", ("stop_mask", "pgd_step")),
    Task(4, "schedule", "The dynamic schedule c_t",
         "how the FOSC target falls from c_max to 0, epoch by epoch",
         "Section 4, Algorithm 1: c_t = max(c_max - t * c_max / T', 0)", (), 10,
         "task4_schedule", ("c_t",)),
    Task(5, "gradients", "Softmax cross-entropy and the MLP's backward pass",
         "the autodiff-free core: per-example gradients with respect to the input and the parameters",
         "Section 3.1 (g = grad_x loss per example); Eq. 4's g", (), 60,
         "task5_gradients", ("softmax_cross_entropy", "mlp_backward")),
    Task(6, "algorithm1", "Algorithm 1: the attack of a batch and the training epoch",
         "Dynamic adversarial training end to end: random start, K steps with the stop, one SGD step",
         "Section 4, Algorithm 1", (1, 2, 3, 5), 45, "task6_algorithm1", ("attack_batch", "train_epoch")),
    Task(7, "reading", "Reading the FOSC of a run (written)",
         "what FOSC distributions say about a training run; Figures 1, 3 and 5",
         "Sections 3.2, 5.2; Figures 1, 3, 5", (6,), 40, "task7_reading", (), graded=False),
)

CAPSTONE_NEEDS = (1, 2, 3, 4, 5, 6)  # `course run` refuses until these pass


def task_named(name: str | int) -> Task:
    """The task of number `name` (1..7, as int or str) or key ("fosc"); ConfigError otherwise."""
    for task in TASKS:
        if str(name) in (str(task.number), task.key, task.module):
            return task
    raise ConfigError(f"unknown task {name!r}; the tasks are "
                      + ", ".join(f"{t.number} ({t.key})" for t in TASKS))
