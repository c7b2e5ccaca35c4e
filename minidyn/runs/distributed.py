"""What torchrun adds to a run: each rank's share of a batch, and agreement between the ranks.

Under `torchrun --nproc_per_node=N` every rank runs the same run loop on the same global batches;
each one attacks and trains on its share of every batch (`rank_share`), DistributedDataParallel
averages the parameter gradients, and the ranks must agree wherever one of them could decide
alone: a non-finite loss stops every rank at the same batch (`check_finite_loss`), and the c_max
estimate is rank 0's (`from_rank_0`). The protocol's one collective is `all_reduce_sum`; with one
process every function here is the identity (or the plain check).
"""
from __future__ import annotations

import json
import math

import numpy as np

from minidyn.backend import Backend
from minidyn.errors import ConfigError, NumericalError


def rank_share(backend: Backend, idx: np.ndarray) -> np.ndarray:
    """This rank's part of a global batch's indices (b,): np.array_split's, so the first
    b % N ranks get one example more than the others."""
    return np.array_split(idx, backend.world_size)[backend.rank]


def check_finite_loss(backend: Backend, batch_loss: float, t: int, batch: int) -> None:
    """NumericalError if the loss of batch `batch` (counted from 1) of epoch t is NaN or infinite.

    The losses are summed over the ranks first, so that every rank stops at the same batch (a
    rank that stopped alone would leave the others waiting in the next all-reduce)."""
    total = float(backend.all_reduce_sum(np.array([batch_loss]))[0])
    if not math.isfinite(total):
        raise NumericalError(f"training loss became {total} at epoch {t + 1}, batch {batch}; "
                             "lower --lr (the last good checkpoint is kept)")


def check_batch_shares(backend: Backend, model, cfg, n: int) -> None:
    """ConfigError if some process would get fewer examples of a batch than the model trains on
    (a BatchNorm model needs 2); the smallest share is that of the last rank in the last batch."""
    size = (n - 1) % cfg.batch_size + 1  # the last batch's
    share, need = size // backend.world_size, backend.min_train_batch(model)
    if share < need:
        split = "" if backend.world_size == 1 else f" split over {backend.world_size} processes gives one of them {share}"
        why = f"{cfg.model}'s BatchNorm needs at least {need}" if need > 1 else "every process needs at least 1"
        raise ConfigError(f"a batch of {size} example{'s' * (size != 1)}{split}, and {why} to train; "
                          f"change --batch-size or --limit ({n} training examples)")


def gather_json(backend: Backend, obj) -> list:
    """`obj` (JSON-able) from every rank, in rank order; each rank calls it.

    all_reduce_sum is the protocol's one collective: a gather is a sum in which each rank fills
    only its own slot, here of the UTF-8 bytes of its JSON (exact in float64).
    """
    data = np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)
    sizes = np.zeros(backend.world_size)
    sizes[backend.rank] = data.size
    sizes = backend.all_reduce_sum(sizes).astype(np.int64)
    ends = np.cumsum(sizes)
    buf = np.zeros(int(ends[-1]))
    buf[ends[backend.rank] - data.size:ends[backend.rank]] = data
    raw = backend.all_reduce_sum(buf).astype(np.uint8).tobytes()
    return [json.loads(raw[end - size:end]) for size, end in zip(sizes, ends)]


def from_rank_0(backend: Backend, value):
    """Rank 0's `value` (JSON-able) on every rank: one value where GPU kernels that are not
    deterministic would give each rank its own."""
    return gather_json(backend, value)[0]
