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


def raise_on_call(number):
    """A torch.compile whose compiled function fails on its `number`-th call (1: at once, as a
    missing compiler does; 2: later, as a recompilation for a new batch size can)."""
    def fake_compile(fn, **kw):
        calls = [0]

        def call(*a, **k):
            calls[0] += 1
            if calls[0] >= number:
                raise RuntimeError("no compiler here")
            return fn(*a, **k)
        return call
    return fake_compile


def unsupported(fn, **kw):
    raise RuntimeError("no compiler here")  # torch.compile itself refuses (Dynamo on a new Python)


@pytest.mark.parametrize("fake", [raise_on_call(1), raise_on_call(2), unsupported],
                         ids=["first-call", "later-call", "torch.compile"])
def test_a_failed_compilation_falls_back_to_eager(monkeypatch, capsys, fake):
    monkeypatch.setattr(torch, "compile", fake)
    B = torch_backend(device="cpu", compile=True)
    model = B.make_model("mlp", (1, 28, 28), 10, seed=0)
    x, y = batch(B, 4)
    g_eager = torch_backend(device="cpu").loss_and_grad(model, x, y)[1]
    for _ in range(3):  # every call gives the eager gradient, failed or not
        torch.testing.assert_close(B.loss_and_grad(model, x, y)[1], g_eager)
    err = capsys.readouterr().err
    assert err.count("--compile failed (RuntimeError: no compiler here); attacking eagerly") == 1


def test_compiled_targeted_losses_and_logits_equal_eager_ones():
    """The losses with a target ("kl", "margin-targeted") and return_logits take their own
    compiled function; its losses, gradients and logits are the eager ones."""
    eager, compiled = torch_backend(device="cpu"), torch_backend(device="cpu", compile=True)
    model = eager.make_model("mlp", (1, 28, 28), 10, seed=0)
    for n in (16, 5):
        x, y = batch(eager, n)
        clean, t = eager.logits(model, x.flip(0)), (y + 1) % 10
        for loss, target in (("kl", clean), ("margin-targeted", t), ("ce", None)):
            got = compiled.loss_and_grad(model, x, y, loss, target=target, return_logits=True)
            for a, b in zip(got, eager.loss_and_grad(model, x, y, loss, target=target, return_logits=True)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert (id(model), "logits") in compiled._compiled  # their own entry, the older losses' untouched
