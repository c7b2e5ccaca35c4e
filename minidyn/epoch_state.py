"""An epoch in progress, as a mid-epoch checkpoint stores it.

Randomness is derived from (seed, epoch, stream), so the data order of an epoch is recomputed on
resume; what a checkpoint taken inside an epoch must add is held by `EpochState`: the state of
the epoch's generators, the mini-batches already trained and the partial statistics. Under
torchrun every rank has its own generators and statistics; the checkpoint holds all of them.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from minidyn.backend import Backend
from minidyn.errors import CheckpointError


def epoch_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """An independent 32-bit seed for (run seed, epoch, stream): 0 data order, 1 attacks,
    2 evaluation, 3 augmentation. Ranks > 0 of a torchrun job get streams of their own."""
    key = [seed, epoch, stream] + ([rank] if rank else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


@dataclass
class EpochStats:
    """What one epoch of training measured; fosc/steps are per training example (dataset order)."""

    loss: float
    acc: float
    grad_evals: int
    fosc: np.ndarray   # (N,) float32, FOSC of the example trained on; NaN where not recorded
    steps: np.ndarray  # (N,) int, PGD steps each example took


# The generators an epoch draws from, with their epoch_seed streams (0 is the data order, 2 the
# evaluation). A mid-epoch checkpoint saves the state of each one; add new ones here.
RNG_STREAMS = {"attack": 1, "augment": 3}


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
    def begin(cls, B: Backend, seed: int, t: int, n: int) -> "EpochState":
        rngs = {name: B.rng(epoch_seed(seed, t, stream, B.rank)) for name, stream in RNG_STREAMS.items()}
        return cls(rngs, np.full(n, np.nan, dtype=np.float32), np.zeros(n, dtype=np.int64))

    def record_attack(self, B: Backend, idx: np.ndarray, adv) -> None:
        self.grad_evals += adv.grad_evals
        self.steps[idx] = B.to_numpy(adv.steps)
        if adv.fosc is not None:
            self.fosc[idx] = B.to_numpy(adv.fosc)

    def record_step(self, batch_loss: float, batch_correct: int) -> None:
        self.loss_sum += batch_loss
        self.correct += batch_correct
        self.batches += 1

    def stats(self, B: Backend) -> EpochStats:
        """The epoch's statistics, summed over the ranks of a torchrun job (each rank trained on
        its own share of every batch, so each example's FOSC and steps come from one rank)."""
        n, seen = len(self.steps), np.isfinite(self.fosc)
        packed = np.concatenate([[self.loss_sum, self.correct, self.grad_evals], self.steps,
                                 seen, np.where(seen, self.fosc, 0.0)])
        total = B.all_reduce_sum(packed)
        loss_sum, correct, evals = total[:3]
        steps, seen, fosc = total[3:3 + n], total[3 + n:3 + 2 * n], total[3 + 2 * n:]
        fosc = np.where(seen > 0, fosc, np.nan).astype(np.float32)
        return EpochStats(float(loss_sum) / n, 100.0 * float(correct) / n, int(evals), fosc,
                          steps.astype(np.int64))

    def to_meta(self, B: Backend) -> dict:
        """JSON-able: counters, the generator state, and fosc/steps as base64 bytes (exact).
        Under torchrun every rank must call it: the result holds every rank's state, by rank."""
        own = {"batches": self.batches, "loss_sum": self.loss_sum, "correct": self.correct,
               "grad_evals": self.grad_evals,
               "rngs": {name: B.rng_state(rng) for name, rng in self.rngs.items()},
               "fosc": pack_array(self.fosc), "steps": pack_array(self.steps)}
        return own if B.world_size == 1 else {"ranks": gather_json(B, own)}

    @classmethod
    def from_meta(cls, B: Backend, meta: dict, seed: int, t: int, n: int) -> "EpochState":
        """The state to_meta saved, checked against an epoch of n examples; CheckpointError if not."""
        meta = _own_share(B, meta)
        state = cls.begin(B, seed, t, n)
        try:
            fosc, steps = unpack_array(meta["fosc"]), unpack_array(meta["steps"])
            state.batches, state.loss_sum = int(meta["batches"]), float(meta["loss_sum"])
            state.correct, state.grad_evals = int(meta["correct"]), int(meta["grad_evals"])
            rng_states = dict(meta["rngs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the checkpoint's mid-epoch state is damaged ({type(exc).__name__}: {exc})") from None
        if fosc.shape != (n,) or fosc.dtype != np.float32 or steps.shape != (n,) or steps.dtype != np.int64 \
                or state.batches < 0 or set(rng_states) != set(state.rngs):
            raise CheckpointError(f"the checkpoint's mid-epoch state is not one of an epoch of {n} examples")
        for name, rng in state.rngs.items():
            B.set_rng_state(rng, rng_states[name])
        state.fosc[:], state.steps[:] = fosc, steps
        return state


def _own_share(B: Backend, meta: dict) -> dict:
    """This rank's entry of a mid-epoch state: each rank trained its own share of the batches with
    its own generators, so a state can only be resumed by as many processes as saved it."""
    ranks = meta.get("ranks")
    saved = len(ranks) if isinstance(ranks, list) else 1
    if saved != B.world_size:
        how = "without torchrun" if saved == 1 else f"with torchrun --nproc_per_node={saved}"
        raise CheckpointError(f"saved in the middle of an epoch by {_processes(saved)}; resume it {how}, "
                              f"not with {_processes(B.world_size)}")
    return meta if ranks is None else ranks[B.rank]


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def gather_json(B: Backend, obj) -> list:
    """`obj` (JSON-able) from every rank, in rank order; each rank calls it.

    all_reduce_sum is the protocol's one collective: a gather is a sum in which each rank fills
    only its own slot, here of the UTF-8 bytes of its JSON (exact in float64).
    """
    data = np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)
    sizes = np.zeros(B.world_size)
    sizes[B.rank] = data.size
    sizes = B.all_reduce_sum(sizes).astype(np.int64)
    ends = np.cumsum(sizes)
    buf = np.zeros(int(ends[-1]))
    buf[ends[B.rank] - data.size:ends[B.rank]] = data
    raw = B.all_reduce_sum(buf).astype(np.uint8).tobytes()
    return [json.loads(raw[end - size:end]) for size, end in zip(sizes, ends)]


def pack_array(a: np.ndarray) -> dict:
    """A numpy array as JSON: dtype, shape and its bytes in base64 (bit-exact, NaN included)."""
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def unpack_array(d: dict) -> np.ndarray:
    """The array pack_array encoded; ValueError/TypeError/KeyError if `d` is not one."""
    dtype = np.dtype(d["dtype"])
    if dtype.kind not in "fiub":
        raise ValueError(f"unexpected dtype {dtype}")
    raw = base64.b64decode(d["base64"], validate=True)
    return np.frombuffer(raw, dtype=dtype).reshape([int(s) for s in d["shape"]]).copy()


