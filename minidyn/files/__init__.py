"""What minidyn reads and writes, checked: the run's configuration and the file formats.

    config.py    TrainConfig: the paper's settings by default, per dataset, validated once
    readers.py   one validating reader per JSON file (config, metrics, summary, eval) and the
                 per-example files of a study
    npyfile.py   the one reader of .npy / .npz files: headers checked before data is read
    fileio.py    atomic writes (temporary file, fsync, rename) and directory syncs
    names.py     the checkpoint file names of a run directory, per backend
    compare_configs.py  the options in which a saved config.json differs from the one asked for

The algorithm (minidyn/fosc.py ... train.py) imports none of these.
"""
