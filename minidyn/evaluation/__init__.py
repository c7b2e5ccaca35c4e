"""Evaluation and analysis of trained models: machinery around the algorithm.

    evaluate.py      robustness under every attack, worst case, black-box, sanity flags
    attack_table.py  the attacks evaluation runs: name, label, random start, how to craft
    checkpoints.py   find, read and load a run's checkpoint for evaluation
    analysis.py      the paper's FOSC analyses as numbers (Figs 1a, 1b, 2/3/5, 4a); kde.py their KDE
    analysis_files.py  one run's analyses to CSV, analysis.json and PNGs (`minidyn analyze`)
    plots.py         draws the analyses; drawing.py the figure and file helpers it shares with studies
    aggregate.py     runs grouped over seeds: means, standard deviations, paired intervals
    compare.py       `minidyn compare` without its command line: plan, evaluate, aggregate
    table1.py        the one writer of Table 1's Markdown and CSV text (compare, study reports)
    bootstrap.py     the two-way bootstrap over seeds and test examples (intervals, p-values)
    significance.py  exact McNemar, the paired t test's p-value, Holm's correction
"""
