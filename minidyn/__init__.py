"""minidyn: FOSC and Dynamic Adversarial Training (Wang et al., ICML 2019), written once.

    >>> import numpy as np, minidyn
    >>> minidyn.fosc(x_adv, x0, grad, eps=0.3)   # per-example FOSC, shape (B,)
"""
__version__ = "0.1.0"
