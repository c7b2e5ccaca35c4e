"""The example of docs/evaluation.md, "Any torch model: examine": a small nn.Sequential, trained
here in a second, examined by `minidyn.evaluation.examine.examine` (attacks, checks, FOSC).

    python docs/examples/examine_sequential.py

tests/evaluation/test_examine.py checks that what it prints is the block shown in the docs.
"""
import numpy as np
import torch
from torch import nn

from minidyn.evaluation.examine import examine


def toy_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n 1x8x8 images in [0, 1] of 4 classes: class k is a bright 4x4 quadrant k on noise."""
    y = rng.integers(0, 4, n)
    x = rng.uniform(0.0, 0.7, (n, 1, 8, 8))
    for i, k in enumerate(y):
        row, col = divmod(int(k), 2)
        x[i, 0, 4 * row:4 * row + 4, 4 * col:4 * col + 4] += 0.3
    return x.astype(np.float32), y


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x_train, y_train = toy_images(512, rng)
    x_test, y_test = toy_images(200, rng)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):  # three epochs of natural training
        for i in range(0, 512, 32):
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x_train[i:i + 32])),
                                               torch.from_numpy(y_train[i:i + 32]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    report = examine(model, x_test, y_test, eps=0.1, attacks=("clean", "fgsm", "pgd10", "apgd-ce"),
                     apgd_steps=20)
    print(report)


if __name__ == "__main__":
    main()
