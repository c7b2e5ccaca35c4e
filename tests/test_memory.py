"""Evaluation streams over the test set: its peak memory does not grow with the test set.

benchmarks/memory.py measures resident memory on both backends; this checks the numpy
backend's traced allocations (tracemalloc sees numpy arrays), which is cheap and exact.
"""
import tracemalloc

from minidyn.backend import get_backend
from minidyn.data import Dataset, load_dataset
from minidyn.runs.monitor import monitor


def traced_peak(backend, model, data) -> int:
    tracemalloc.start()
    monitor(backend, model, data, eps=0.3, steps=2, batch_size=64, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_evaluation_peak_memory_does_not_grow_with_the_number_of_examples():
    backend = get_backend("numpy")
    test = load_dataset("mnist-sample", "test")
    model = backend.make_model("softmax", (1, 28, 28), 10, seed=0)
    small = Dataset("small", test.x[:256], test.y[:256], 10, "test")
    large = Dataset("large", test.x[:1024], test.y[:1024], 10, "test")
    traced_peak(backend, model, small)  # warm-up
    peaks = [traced_peak(backend, model, small), traced_peak(backend, model, large)]
    # 4x the examples, the same per-batch working set: +10% allowed, where keeping even a
    # float copy of the 768 extra images would add 2.4 MB (the whole peak is about that)
    assert peaks[1] <= 1.1 * peaks[0], peaks
