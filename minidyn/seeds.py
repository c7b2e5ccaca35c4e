"""The seed streams of a run, in one place.

Every random draw of minidyn comes from a numpy SeedSequence keyed by the run's seed and a
stream number, so that no two uses of randomness share a generator and each is a function of
(seed, epoch) alone:

    DATA_ORDER   0   epoch t's permutation of the training set     [seed, t, 0]
    ATTACK       1   epoch t's random starts of the training attack [seed, t, 1(, rank)]
    EVALUATION   2   the per-epoch monitor's random starts          [seed, 0, 2]
    AUGMENT      3   epoch t's CIFAR-10 crops and flips             [seed, t, 3(, rank)]
    EVAL_TABLE   3   the full evaluation's random starts            [seed, 3, attack, restart, batch]
                     (a five-number key: never equal to an epoch_seed key of three or four)
    VALIDATION   4   the held-out validation examples               [seed, 0, 4]

A new use of randomness takes a new number here.
"""
from __future__ import annotations

import numpy as np

DATA_ORDER, ATTACK, EVALUATION, AUGMENT = 0, 1, 2, 3
EVAL_TABLE = 3
VALIDATION = 4


def epoch_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """An independent 32-bit seed for (run seed, epoch, stream) (streams above). Ranks > 0 of a
    torchrun job get streams of their own."""
    key = [seed, epoch, stream] + ([rank] if rank else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])
