"""The file names of a run directory's checkpoints, by backend: the one map that the run layer
(minidyn.runs.rundir writes them), evaluation (minidyn.evaluation.checkpoints finds them) and
studies (minidyn.studies.worker evaluates them) share."""

CHECKPOINT_NAMES = {"torch": "checkpoint.pt", "numpy": "checkpoint.npz", "cupy": "checkpoint.npz"}
# with --val-size: the end-of-epoch weights of the epoch with the best validation PGD accuracy
BEST_NAMES = {"torch": "best-val.pt", "numpy": "best-val.npz", "cupy": "best-val.npz"}
