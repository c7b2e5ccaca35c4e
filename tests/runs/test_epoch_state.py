"""minidyn.runs.epoch_state: the mid-epoch state of every rank, gathered and given back by rank."""
import copy
import threading

import numpy as np
import pytest

from minidyn.backend import get_backend
from minidyn.runs.epoch_state import EpochState, gather_json
from minidyn.errors import CheckpointError


class Rank:
    """One of `world` ranks in threads of this process: all_reduce_sum sums every rank's array
    once all have called it, as a torchrun job's all-reduce does."""

    def __init__(self, rank: int, world: int, shared: dict, barrier: threading.Barrier):
        self.rank, self.world_size, self.shared, self.barrier = rank, world, shared, barrier

    def all_reduce_sum(self, a):
        self.shared[self.rank] = np.asarray(a, dtype=np.float64).copy()
        self.barrier.wait()
        total = sum(self.shared[r] for r in range(self.world_size))
        self.barrier.wait()  # every rank has read the sum before the next call overwrites it
        return total


def gather_in_threads(objs):
    world, shared, barrier = len(objs), {}, threading.Barrier(len(objs))
    results = [None] * world

    def work(r):
        results[r] = gather_json(Rank(r, world, shared, barrier), objs[r])
    threads = [threading.Thread(target=work, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_gather_json_gives_every_rank_every_object_in_rank_order():
    objs = [{"rank": 0, "rngs": {"attack": "äb=="}}, [], {"x": list(range(300)), "s": "c_t"}]
    assert gather_in_threads(objs) == [objs] * 3


def test_gather_json_with_one_process_is_the_object_alone():
    assert gather_json(get_backend("numpy"), {"a": 1}) == [{"a": 1}]


def as_rank(rank: int, world: int):
    """The numpy backend as rank `rank` of `world` (a copy: get_backend's instance is shared)."""
    B = copy.copy(get_backend("numpy"))
    B.rank, B.world_size = rank, world
    return B


def saved_state(B, n=8):
    state = EpochState.begin(B, seed=0, t=1, n=n)
    state.record_step(1.5, 3)
    state.fosc[:2] = [0.25, 0.5]
    return state


def test_a_state_comes_back_exactly():
    B = get_backend("numpy")
    state = saved_state(B)
    back = EpochState.from_meta(B, state.to_meta(B), seed=0, t=1, n=8)
    assert back.batches == 1 and back.loss_sum == 1.5 and back.correct == 3
    np.testing.assert_array_equal(back.fosc, state.fosc)  # NaN where not recorded, as saved
    assert B.rng_state(back.rngs["attack"]) == B.rng_state(state.rngs["attack"])


def test_each_rank_resumes_its_own_share():
    B = get_backend("numpy")
    shares = [saved_state(B).to_meta(B), saved_state(B).to_meta(B)]
    shares[1]["batches"] = 2
    assert EpochState.from_meta(as_rank(1, 2), {"ranks": shares}, seed=0, t=1, n=8).batches == 2


@pytest.mark.parametrize("saved, world, words", [
    (1, 2, "by 1 process; resume it without torchrun, not with 2 processes"),
    (2, 1, "by 2 processes; resume it with torchrun --nproc_per_node=2, not with 1 process"),
    (3, 2, "by 3 processes; resume it with torchrun --nproc_per_node=3, not with 2 processes"),
])
def test_a_state_saved_by_another_number_of_processes_is_refused(saved, world, words):
    """Each rank trained its own share of every batch with its own generators, so the partial
    statistics and generator states only fit a job of as many processes."""
    B = get_backend("numpy")
    one = saved_state(B).to_meta(B)
    meta = one if saved == 1 else {"ranks": [one] * saved}
    with pytest.raises(CheckpointError, match=words):
        EpochState.from_meta(as_rank(0, world), meta, seed=0, t=1, n=8)
