"""Backends: the array and model operations of `minidyn.backend.Backend`, one module per framework.

`array` serves numpy and cupy with the same code (hand-written models in `numpy_models`);
`torch_backend` serves torch. Nothing is imported here: `minidyn.backend.get_backend` imports the
module a user asks for, so a machine without torch or cupy never needs them.
"""
