"""--compile: torch.compile'd attack gradients equal eager ones, and a failure falls back."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from minidyn.backends.torch_backend import torch_backend  # noqa: E402


def batch(B, n):
    rng = np.random.default_rng(0)
    return B.asarray(rng.random((n, 1, 28, 28))), B.asarray(rng.integers(0, 10, n))


def test_compiled_attack_gradients_equal_eager_ones():
    eager, compiled = torch_backend(device="cpu"), torch_backend(device="cpu", compile=True)
    model = eager.make_model("mlp", (1, 28, 28), 10, seed=0)
    for n in (16, 5):  # the active sub-batch shrinks during Dynamic PGD: dynamic shapes
        x, y = batch(eager, n)
        for loss in ("ce", "cw"):
            l1, g1 = eager.loss_and_grad(model, x, y, loss)
            l2, g2 = compiled.loss_and_grad(model, x, y, loss)
            torch.testing.assert_close(l2, l1, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-6)


def test_a_failed_compilation_falls_back_to_eager(monkeypatch, capsys):
    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no compiler here")
        return call
    monkeypatch.setattr(torch, "compile", broken)
    B = torch_backend(device="cpu", compile=True)
    model = B.make_model("mlp", (1, 28, 28), 10, seed=0)
    x, y = batch(B, 4)
    losses, grad = B.loss_and_grad(model, x, y)
    l_eager, g_eager = torch_backend(device="cpu").loss_and_grad(model, x, y)
    torch.testing.assert_close(grad, g_eager)
    assert "--compile failed (RuntimeError: no compiler here)" in capsys.readouterr().err
    B.loss_and_grad(model, x, y)  # the message is said once
    assert capsys.readouterr().err == ""
