"""The accuracy a run measures after every epoch and at the end (`monitor`)."""
from __future__ import annotations

import numpy as np

from minidyn.attacks import pgd
from minidyn.backend import Backend, Model
from minidyn.data import Dataset
from minidyn.data.batches import batch_indices, to_backend
from minidyn.seeds import EVALUATION, epoch_seed


def monitor(backend: Backend, model: Model, data: Dataset, *, eps: float, steps: int,
            batch_size: int, seed: int, limit: int | None = None) -> dict:
    """Clean accuracy on all of `data` and PGD-`steps` accuracy (step eps/4, random start) on its
    first `limit` examples, in percent, with their counts: the test accuracy a run measures
    after every epoch and, on more examples, at the end (minidyn.evaluation.evaluate is the full
    evaluation of a trained model). The random starts come from the run seed's EVALUATION
    stream, the same in every epoch."""
    rng = backend.rng(epoch_seed(seed, 0, EVALUATION))
    n_adv = len(data) if limit is None else min(limit, len(data))
    clean = robust = 0
    for idx in batch_indices(np.arange(len(data)), batch_size):
        x, y = to_backend(backend, data, idx)
        clean += backend.count(backend.argmax(backend.logits(model, x)) == y)
    for idx in batch_indices(np.arange(n_adv), batch_size):
        x, y = to_backend(backend, data, idx)
        adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=steps, rng=rng,
                  final_stats=False, backend=backend)
        robust += backend.count(backend.argmax(backend.logits(model, adv.x_adv)) == y)
    return {"clean_acc": 100.0 * clean / len(data), "clean_n": len(data),
            "pgd_acc": 100.0 * robust / n_adv, "pgd_n": n_adv}
