"""An epoch in progress: its batches, and what a mid-epoch checkpoint stores of it.

Randomness is derived from (seed, epoch, stream), so the data order of an epoch is recomputed on
resume (`epoch_order`) and `epoch_batches` starts again at the batch the checkpoint reached;
what a checkpoint taken inside an epoch must add is held by `EpochState`: the state of the
epoch's generators, the mini-batches already trained and the partial statistics. Under torchrun
every rank trains on its own share of every batch, with generators and statistics of its own;
the checkpoint holds those of every rank.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from itertools import islice
from typing import Iterator

import numpy as np

from minidyn.backend import Backend
from minidyn.data import Dataset
from minidyn.data.batches import batch_indices, to_backend
from minidyn.errors import CheckpointError
from minidyn.files.npyfile import plain_dtype
from minidyn.runs.distributed import gather_json, rank_share
from minidyn.seeds import ATTACK, AUGMENT, DATA_ORDER, epoch_seed
from minidyn.train import Batch, Step

__all__ = ["Batch", "EpochState", "EpochStats", "epoch_batches", "epoch_order", "epoch_seed",
           "gather_json", "pack_array", "unpack_array"]


def epoch_order(seed: int, t: int, n: int) -> np.ndarray:
    """The order (n,) in which epoch t visits the n training examples (a permutation)."""
    return np.random.default_rng(epoch_seed(seed, t, DATA_ORDER)).permutation(n)


def epoch_batches(backend: Backend, data: Dataset, state: "EpochState", t: int, seed: int,
                  batch_size: int, augment: bool = False) -> Iterator[Batch]:
    """This rank's share of each mini-batch of epoch t, from batch `state.batches` on (those
    before it were trained before the checkpoint the epoch resumed from). With `augment`, each
    share is randomly cropped and flipped (CIFAR-10) with the epoch's "augment" generator.
    Each Batch carries the global batch's size and its examples' positions (`index`)."""
    order = epoch_order(seed, t, len(data))
    for idx in islice(batch_indices(order, batch_size), state.batches, None):
        mine = rank_share(backend, idx)
        x, y = to_backend(backend, data, mine)
        if augment:
            x = backend.crop_flip(x, state.rngs["augment"])
        yield Batch(x, y, size=len(idx), index=mine)


@dataclass
class EpochStats:
    """What one epoch of training measured; fosc/steps are per training example (dataset order)."""

    loss: float
    acc: float
    grad_evals: int
    fosc: np.ndarray   # (N,) float32, FOSC of the example trained on; NaN where not recorded
    steps: np.ndarray  # (N,) int, PGD steps each example took


# The generators an epoch draws from, with their seed streams (minidyn/seeds.py). A mid-epoch
# checkpoint saves the state of each one; add new ones here.
RNG_STREAMS = {"attack": ATTACK, "augment": AUGMENT}


@dataclass
class EpochState:
    """An epoch in progress: its random generators and what the batches so far measured.

    This is everything a mid-epoch checkpoint must hold besides the model and optimiser (the
    data order is derived from (seed, epoch) again): `to_meta` makes it JSON, `from_meta`
    restores it, and training continues at batch `batches` exactly as if never interrupted.
    """

    rngs: dict           # the epoch's backend generators, by name (see RNG_STREAMS)
    fosc: np.ndarray     # (N,) float32, NaN where not recorded (yet)
    steps: np.ndarray    # (N,) int64
    batches: int = 0     # mini-batches trained so far
    loss_sum: float = 0.0
    correct: int = 0
    grad_evals: int = 0

    @classmethod
    def begin(cls, backend: Backend, seed: int, t: int, n: int) -> "EpochState":
        rngs = {name: backend.rng(epoch_seed(seed, t, stream, backend.rank)) for name, stream in RNG_STREAMS.items()}
        return cls(rngs, np.full(n, np.nan, dtype=np.float32), np.zeros(n, dtype=np.int64))

    def record(self, backend: Backend, step: Step) -> None:
        """What one step of Algorithm 1 (train.train_epoch) measured: its attack's FOSC and
        steps per example (at the batch's `index`), its loss and correct count."""
        if step.attack is not None:
            self.record_attack(backend, step.batch.index, step.attack)
        self.record_step(step.loss, step.correct)

    def record_attack(self, backend: Backend, idx: np.ndarray, adv) -> None:
        self.grad_evals += adv.grad_evals
        self.steps[idx] = backend.to_numpy(adv.steps)
        if adv.fosc is not None:
            self.fosc[idx] = backend.to_numpy(adv.fosc)

    def record_step(self, batch_loss: float, batch_correct: int) -> None:
        self.loss_sum += batch_loss
        self.correct += batch_correct
        self.batches += 1

    def stats(self, backend: Backend) -> EpochStats:
        """The epoch's statistics, summed over the ranks of a torchrun job (each rank trained on
        its own share of every batch, so each example's FOSC and steps come from one rank)."""
        n, seen = len(self.steps), np.isfinite(self.fosc)
        packed = np.concatenate([[self.loss_sum, self.correct, self.grad_evals], self.steps,
                                 seen, np.where(seen, self.fosc, 0.0)])
        total = backend.all_reduce_sum(packed)
        loss_sum, correct, evals = total[:3]
        steps, seen, fosc = total[3:3 + n], total[3 + n:3 + 2 * n], total[3 + 2 * n:]
        fosc = np.where(seen > 0, fosc, np.nan).astype(np.float32)
        return EpochStats(float(loss_sum) / n, 100.0 * float(correct) / n, int(evals), fosc,
                          steps.astype(np.int64))

    def to_meta(self, backend: Backend) -> dict:
        """JSON-able: counters, the generator state, and fosc/steps as base64 bytes (exact).
        Under torchrun every rank must call it: the result holds every rank's state, by rank."""
        own = {"batches": self.batches, "loss_sum": self.loss_sum, "correct": self.correct,
               "grad_evals": self.grad_evals,
               "rngs": {name: backend.rng_state(rng) for name, rng in self.rngs.items()},
               "fosc": pack_array(self.fosc), "steps": pack_array(self.steps)}
        return own if backend.world_size == 1 else {"ranks": gather_json(backend, own)}

    @classmethod
    def from_meta(cls, backend: Backend, meta: dict, seed: int, t: int, n: int) -> "EpochState":
        """The state to_meta saved, checked against an epoch of n examples; CheckpointError if not."""
        meta = _own_share(backend, meta)
        state = cls.begin(backend, seed, t, n)
        try:
            fosc, steps = unpack_array(meta["fosc"]), unpack_array(meta["steps"])
            state.batches, state.loss_sum = int(meta["batches"]), float(meta["loss_sum"])
            state.correct, state.grad_evals = int(meta["correct"]), int(meta["grad_evals"])
            rng_states = dict(meta["rngs"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"the checkpoint's mid-epoch state is damaged ({type(exc).__name__}: {exc})") from None
        if fosc.shape != (n,) or fosc.dtype != np.float32 or steps.shape != (n,) or steps.dtype != np.int64 \
                or state.batches < 0 or set(rng_states) != set(state.rngs):
            raise CheckpointError(f"the checkpoint's mid-epoch state is not one of an epoch of {n} examples")
        for name, rng in state.rngs.items():
            backend.set_rng_state(rng, rng_states[name])
        state.fosc[:], state.steps[:] = fosc, steps
        return state


def _own_share(backend: Backend, meta: dict) -> dict:
    """This rank's entry of a mid-epoch state: each rank trained its own share of the batches with
    its own generators, so a state can only be resumed by as many processes as saved it."""
    ranks = meta.get("ranks")
    saved = len(ranks) if isinstance(ranks, list) else 1
    if saved != backend.world_size:
        how = "without torchrun" if saved == 1 else f"with torchrun --nproc_per_node={saved}"
        raise CheckpointError(f"saved in the middle of an epoch by {_processes(saved)}; resume it {how}, "
                              f"not with {_processes(backend.world_size)}")
    return meta if ranks is None else ranks[backend.rank]


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def pack_array(a: np.ndarray) -> dict:
    """A numpy array as JSON: dtype, shape and its bytes in base64 (bit-exact, NaN included)."""
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def unpack_array(d: dict) -> np.ndarray:
    """The array pack_array encoded; ValueError/TypeError/KeyError if `d` is not one: a plain
    bool/int/float dtype (`minidyn.files.npyfile.plain_dtype`) and a shape of non-negative ints whose
    size is that of the bytes, checked before any array is made."""
    dtype = plain_dtype(d["dtype"], kinds="fiub")
    shape = d["shape"]
    if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
        raise ValueError(f"shape {shape!r} is not a list of non-negative ints")
    raw = base64.b64decode(d["base64"], validate=True)
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{len(raw)} bytes are not an array {tuple(shape)} of {dtype}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
