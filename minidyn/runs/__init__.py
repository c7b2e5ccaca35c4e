"""The run layer: what turns Algorithm 1 (minidyn.train) into a training run on disk.

    loop.py         train_run and the one visible run loop (epochs, schedules, monitor, metrics,
                    checkpoints, the final evaluation); recorded_steps, the one inner loop
    rundir.py       the run directory (config.json, metrics.jsonl, fosc/, checkpoint, summary.json)
    epoch_state.py  an epoch in progress: its generators, batches and partial statistics
    monitor.py      the clean and PGD accuracy measured after every epoch and at the end
    weights.py      the authors' per-example loss weights, a plug-in of Algorithm 1
    distributed.py  what torchrun adds: this rank's share, the NaN check over ranks, gathers
    reporter.py     progress and logging, one object instead of callbacks
"""
from minidyn.runs.distributed import check_batch_shares
from minidyn.runs.loop import (RESUMABLE_CHANGES, Run, backend_from_config, c_t_warnings,
                               config_differences, epoch_loop, epoch_record, method_of,
                               recorded_steps, standalone_epoch, train_run, weights_are_finite)
from minidyn.runs.rundir import CHECKPOINT_NAMES, RunDir

__all__ = ["CHECKPOINT_NAMES", "RESUMABLE_CHANGES", "Run", "RunDir", "backend_from_config",
           "c_t_warnings", "check_batch_shares", "config_differences", "epoch_loop", "epoch_record",
           "method_of", "recorded_steps", "standalone_epoch", "train_run", "weights_are_finite"]
