"""Coursework on the paper: tasks a student implements, checks that explain what is wrong, and
a capstone that trains a robust model with the student's own code (docs/course.md).

    tasks.py       the task registry: what each task teaches, its paper reference, its module
    templates.py   the student modules (stubs; the instructor's solution mode delegates to
                   reference.py) and the worksheets (Markdown and jupytext percent scripts)
    reference.py   the reference solutions, each a call into minidyn's own implementation
    properties.py  the properties each task's check states, run with Hypothesis, with the
                   known mistakes recognised by name (`hints`)
    grader.py      loading a workspace, running the checks, the Gradescope results.json
    capstone.py    `course run`: the NumPy MLP trained by the student's pieces into a run directory

NumPy only: nothing here imports torch.
"""
from minidyn.course.tasks import TASKS, Task, task_named

__all__ = ["TASKS", "Task", "task_named"]
