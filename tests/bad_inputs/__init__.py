"""The bad-input tests: hostile or broken inputs, each refused in one line, nothing changed.

A package (unlike the other test folders) so that its test modules import `helpers.py`
relatively under pytest's --import-mode=importlib, with no sys.path entry for tests/.
"""
