"""The seed streams' registry: the numbers every run was made with, in one home."""
import numpy as np

from minidyn import seeds
from minidyn.data import validation
from minidyn.evaluation import attack_table
from minidyn.runs import epoch_state


def test_the_streams_keep_their_numbers_and_every_user_reads_them_from_the_registry():
    assert (seeds.DATA_ORDER, seeds.ATTACK, seeds.EVALUATION, seeds.AUGMENT) == (0, 1, 2, 3)
    assert (seeds.EVAL_TABLE, seeds.VALIDATION) == (3, 4)
    assert epoch_state.RNG_STREAMS == {"attack": seeds.ATTACK, "augment": seeds.AUGMENT}
    assert attack_table._EVAL_STREAM == seeds.EVAL_TABLE
    assert validation.VALIDATION_STREAM == seeds.VALIDATION


def test_epoch_seed_is_the_seed_sequence_of_seed_epoch_stream_and_rank():
    assert seeds.epoch_seed(7, 2, 1) == int(np.random.SeedSequence([7, 2, 1]).generate_state(1)[0])
    assert seeds.epoch_seed(7, 2, 1, rank=3) == int(np.random.SeedSequence([7, 2, 1, 3]).generate_state(1)[0])
    assert seeds.epoch_seed(7, 2, 1, rank=0) != seeds.epoch_seed(7, 2, 1, rank=3)
