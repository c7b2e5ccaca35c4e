"""Evaluation and analysis of trained models: machinery around the algorithm.

    evaluate.py      robustness under every attack, worst case, black-box, sanity flags
    attack_table.py  the attacks evaluation runs: name, label, random start, how to craft
    checkpoints.py   find, read and load a run's checkpoint for evaluation
    analysis.py      the paper's FOSC analyses (Figs 1a, 1b, 2/3/5, 4a); plots.py draws them
    aggregate.py     runs grouped over seeds: means, standard deviations, paired intervals
    bootstrap.py     the two-way bootstrap over seeds and test examples (intervals, p-values)
    significance.py  exact McNemar, the paired t test's p-value, Holm's correction
"""
