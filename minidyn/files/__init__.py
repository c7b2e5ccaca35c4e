"""What minidyn reads and writes, checked: the run's configuration and the file formats.

    config.py    TrainConfig: the paper's settings by default, per dataset, validated once
    readers.py   one validating reader per JSON file (config, metrics, summary, eval) and the
                 per-example files of a study
    npyfile.py   the one reader of .npy / .npz files: headers checked before data is read
    fileio.py    atomic writes (temporary file, fsync, rename) and directory syncs

The algorithm (minidyn/fosc.py ... train.py) imports none of these.
"""
