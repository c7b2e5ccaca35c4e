"""Models, losses and SGD with hand-written backward passes, for the numpy and cupy backends.

Every function takes the array module `xp` (numpy or cupy) or reads it from the model, so the
same code runs on the host and on a GPU. Notation: B examples, D = prod(input_shape) input
features, C classes, z the logits (B, C), y the labels (B,).

A Linear layer is torch's: z = h W^T + b with W (out, in) and b (out,), so parameter names and
layouts ("fc1.weight", "fc1.bias", ...) are exactly those of the torch backend's state_dict.
Its backward, given g = dL/dz (B, out):

    dL/dW = g^T h   (out, in)        dL/db = sum_b g   (out,)        dL/dh = g W   (B, in)

ReLU a = max(h, 0) passes g * [a > 0] back (0 at the kink, as torch does).
"""
from __future__ import annotations

import math

import numpy as np

from minidyn.errors import ConfigError

HIDDEN = {"softmax": (), "mlp": (256, 256)}  # model name -> hidden layer widths
MODELS = tuple(HIDDEN)


class LinearNet:
    """Linear layers fc1..fcL with a ReLU between consecutive ones; the input is flattened.

    params: {"fc<l>.weight": (out, in), "fc<l>.bias": (out,)}, arrays of `xp` in `dtype`,
    initialised like torch.nn.Linear: both ~ U(-1/sqrt(in), 1/sqrt(in)), drawn on the host
    from numpy's default_rng(seed) (so numpy and cupy models with one seed are identical).
    """

    def __init__(self, name, input_shape, num_classes, hidden, seed, xp=np, dtype="float32"):
        self.name, self.input_shape, self.num_classes = name, tuple(input_shape), int(num_classes)
        self.xp = xp
        sizes = [math.prod(self.input_shape), *hidden, self.num_classes]
        self.num_layers = len(sizes) - 1
        rng = np.random.default_rng(seed)
        self.params = {}
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            bound = 1.0 / math.sqrt(fan_in)
            weight = rng.uniform(-bound, bound, size=(fan_out, fan_in))
            bias = rng.uniform(-bound, bound, size=(fan_out,))
            self.params[f"fc{layer}.weight"] = xp.asarray(weight, dtype=dtype)
            self.params[f"fc{layer}.bias"] = xp.asarray(bias, dtype=dtype)

    def forward(self, x):
        """x (B, *input_shape) -> (logits (B, C), cache); cache = (x.shape, input of each layer)."""
        h = x.reshape(x.shape[0], -1)
        inputs = []
        for layer in range(1, self.num_layers + 1):
            inputs.append(h)
            h = h @ self.params[f"fc{layer}.weight"].T + self.params[f"fc{layer}.bias"]
            if layer < self.num_layers:
                h = self.xp.maximum(h, 0)
        return h, (x.shape, inputs)

    def backward(self, cache, dlogits, param_grads=True, input_grad=True):
        """dL/dlogits (B, C) -> (dL/dx shaped like x or None, {param name: dL/dparam} or {}).

        The two flags skip the work nobody asked for (an attack needs no parameter gradient,
        a training step no input gradient).
        """
        x_shape, inputs = cache
        g, grads = dlogits, {}
        for layer in range(self.num_layers, 0, -1):
            h = inputs[layer - 1]  # this layer's input: x for fc1, a ReLU output otherwise
            if param_grads:
                grads[f"fc{layer}.weight"] = g.T @ h
                grads[f"fc{layer}.bias"] = g.sum(axis=0)
            if layer == 1 and not input_grad:
                return None, grads
            g = g @ self.params[f"fc{layer}.weight"]
            if layer > 1:
                g = g * (h > 0)  # back through the ReLU that produced h
        return g.reshape(x_shape), grads


class SoftmaxRegression(LinearNet):
    """Multinomial logistic regression: z = flatten(x) W1^T + b1."""

    def __init__(self, input_shape, num_classes, seed, xp=np, dtype="float32"):
        super().__init__("softmax", input_shape, num_classes, HIDDEN["softmax"], seed, xp, dtype)


class MLP(LinearNet):
    """z = fc3(relu(fc2(relu(fc1(flatten(x)))))), hidden widths 256 and 256."""

    def __init__(self, input_shape, num_classes, seed, xp=np, dtype="float32"):
        super().__init__("mlp", input_shape, num_classes, HIDDEN["mlp"], seed, xp, dtype)


def make_model(name, input_shape, num_classes, seed, xp=np, dtype="float32"):
    """The model called `name` ("softmax" or "mlp"); ConfigError for any other name."""
    classes = {"softmax": SoftmaxRegression, "mlp": MLP}
    if name not in classes:
        raise ConfigError(
            f"unknown model {name!r} for the numpy/cupy backends, which have {', '.join(MODELS)} "
            "(cnn4, cnn8 and wrn need --backend torch)"
        )
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    return classes[name](input_shape, num_classes, seed, xp, dtype)


# --- losses: per-example values (B,) and their gradients w.r.t. the logits (B, C) -----------
def cross_entropy(xp, logits, y):
    """loss_i = logsumexp(z_i) - z_{i,y_i};  dloss_i/dz_i = softmax(z_i) - onehot(y_i).

    Computed as -log_softmax with each row's max subtracted first, so huge logits cannot overflow.
    """
    rows = xp.arange(logits.shape[0])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    dlogits = xp.exp(log_probs)
    dlogits[rows, y] -= 1
    return -log_probs[rows, y], dlogits


def cw_margin(xp, logits, y):
    """loss_i = max_{j != y_i} z_ij - z_{i,y_i};  gradient +1 at that j and -1 at y_i.

    The true class is masked with -inf before the max. Multiplying by (1 - onehot) instead, as
    the authors' code does, turns z_y into 0, which wins the max when every logit is negative.
    """
    rows = xp.arange(logits.shape[0])
    others = logits.copy()
    others[rows, y] = -xp.inf
    best_other = others.argmax(axis=1)
    dlogits = xp.zeros_like(logits)
    dlogits[rows, best_other] = 1
    dlogits[rows, y] -= 1
    return logits[rows, best_other] - logits[rows, y], dlogits


def dlr(xp, logits, y):
    """The Difference of Logits Ratio of Croce & Hein (2020), for APGD-DLR (needs C >= 3):

        loss_i = -(z_y - z_o) / (z_pi1 - z_pi3 + 1e-12),   o = argmax_{j != y} z_j,

    with z_pi1 >= z_pi2 >= z_pi3 the three largest logits. Writing m = z_y - z_o and
    d = z_pi1 - z_pi3 + 1e-12, loss = -m / d and

        dloss/dz = -(e_y - e_o) / d + m / d^2 * (e_pi1 - e_pi3)

    (e_k the k-th unit vector; when the example is classified correctly pi1 = y, otherwise
    pi1 = o, and the two terms add up at that index). At ties among the top three logits the
    loss is not differentiable and the sort's order picks one subgradient.
    """
    if logits.shape[1] < 3:
        raise ConfigError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    rows = xp.arange(logits.shape[0])
    others = logits.copy()
    others[rows, y] = -xp.inf
    best_other = others.argmax(axis=1)
    order = xp.argsort(-logits, axis=1)  # descending
    pi1, pi3 = order[:, 0], order[:, 2]
    m = logits[rows, y] - logits[rows, best_other]
    d = logits[rows, pi1] - logits[rows, pi3] + 1e-12
    dlogits = xp.zeros_like(logits)
    dlogits[rows, y] -= 1 / d
    dlogits[rows, best_other] += 1 / d
    coef = m / d ** 2
    dlogits[rows, pi1] += coef
    dlogits[rows, pi3] -= coef
    return -m / d, dlogits


def dlr_targeted(xp, logits, y, target):
    """The targeted DLR of Croce & Hein (2020), for APGD-T (needs C >= 4):

        loss_i = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12),   t = target_i,

    with z_pi1 >= ... >= z_pi4 the four largest logits. With m = z_y - z_t and d the
    denominator, dloss/dz = -(e_y - e_t) / d + m / d^2 * (e_pi1 - (e_pi3 + e_pi4) / 2).
    """
    if logits.shape[1] < 4:
        raise ConfigError(f"the targeted DLR loss needs at least 4 classes, got {logits.shape[1]}")
    rows = xp.arange(logits.shape[0])
    order = xp.argsort(-logits, axis=1)  # descending
    pi1, pi3, pi4 = order[:, 0], order[:, 2], order[:, 3]
    m = logits[rows, y] - logits[rows, target]
    d = logits[rows, pi1] - 0.5 * (logits[rows, pi3] + logits[rows, pi4]) + 1e-12
    dlogits = xp.zeros_like(logits)
    dlogits[rows, y] -= 1 / d
    dlogits[rows, target] += 1 / d  # y == t gives a zero loss and gradient, as it should
    coef = m / d ** 2
    dlogits[rows, pi1] += coef
    dlogits[rows, pi3] -= 0.5 * coef
    dlogits[rows, pi4] -= 0.5 * coef
    return -m / d, dlogits


LOSSES = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr}


# --- optimizer ---------------------------------------------------------------------------------
class SGD:
    """torch.optim.SGD (dampening 0, no Nesterov), updating `params` (a model's dict) in place.

    For each parameter p with gradient g:
        d = g + weight_decay * p
        buf = d on the first step, else momentum * buf + d      (only when momentum != 0)
        p -= lr * buf                                            (lr * d without momentum)
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        self.params, self.lr = params, lr
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers = {}  # name -> momentum buffer, created on a parameter's first step

    def step(self, grads):
        """Apply one update from {name: gradient}; parameters without a gradient are left alone."""
        for name, g in grads.items():
            p = self.params[name]
            d = g + self.weight_decay * p if self.weight_decay else g
            if self.momentum:
                buf = self.buffers.get(name)
                if buf is None:
                    buf = self.buffers[name] = d.copy()
                else:
                    buf *= self.momentum
                    buf += d
                d = buf
            p -= self.lr * d
