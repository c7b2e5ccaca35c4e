"""FGSM-RS ("fast is better than free", Wong et al., ICLR 2020) against a transcription of the
authors' MNIST training attack: locuslab/fast_adversarial 54f7287, MNIST/train_mnist.py lines
73-82, given the same uniform draw."""
import pytest

torch = pytest.importorskip("torch")

from minidyn import get_backend  # noqa: E402
from minidyn.attacks import pgd  # noqa: E402
from minidyn.methods import FGSM_RS_STEP  # noqa: E402


def fgsm_rs_transcribed(model, X, y, delta, epsilon, alpha):
    """train_mnist.py lines 74-82, with the uniform draw `delta` given (line 74)."""
    delta = delta.clone()
    delta.requires_grad = True
    output = model(X + delta)
    loss = torch.nn.functional.cross_entropy(output, y)
    loss.backward()
    grad = delta.grad.detach()
    delta.data = torch.clamp(delta + alpha * torch.sign(grad), -epsilon, epsilon)
    delta.data = torch.max(torch.min(1 - X, delta.data), 0 - X)
    return (X + delta).detach()


def test_fgsm_rs_is_the_authors_mnist_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10)).eval()
    x = torch.rand(16, 1, 8, 8)
    x[:, :, :2] = 0.0  # pixels on the box's faces, where the unprojected start matters
    y = torch.randint(0, 10, (16,))
    eps = 0.3
    backend = get_backend("torch", device="cpu")
    rng = backend.rng(3)
    draw = backend.uniform(backend.rng(3), tuple(x.shape), -eps, eps)
    ours = pgd(model, x, y, eps=eps, step_size=FGSM_RS_STEP * eps, steps=1, start="uniform-unprojected",
               rng=rng, backend=backend).x_adv
    theirs = fgsm_rs_transcribed(model, x, y, draw, eps, 0.375)
    assert FGSM_RS_STEP * eps == pytest.approx(0.375)  # their --alpha at --epsilon 0.3
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    projected = pgd(model, x, y, eps=eps, step_size=0.375, steps=1, rng=backend.rng(3), backend=backend).x_adv
    assert not torch.equal(projected, theirs)  # the projected start (CIFAR-10's code) differs here
