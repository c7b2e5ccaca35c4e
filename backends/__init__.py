"""Backends: `minidyn.backend.Backend` for each framework, one module per framework.

`array` serves numpy and cupy with one class (the base's numpy-style array operations with
`xp` swapped; hand-written models in `numpy_models`); `torch_backend` serves torch. Nothing is
imported here: `minidyn.backend.get_backend` imports the module a user asks for, so a machine
without torch or cupy never needs them.
"""
