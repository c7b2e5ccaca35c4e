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


def _log_softmax(xp, logits):
    """Row-wise log softmax, each row's max subtracted first (as cross_entropy computes it)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def kl(xp, logits, target):
    """TRADES' inner loss: the KL divergence from the clean prediction to the current one,

        loss_i = sum_j p_ij (log p_ij - log q_ij),   p = softmax(target), q = softmax(z),

    `target` (B, C) the clean logits, a constant. With sum_j p_ij = 1,
    dloss_i/dz_ik = -sum_j p_ij (delta_jk - q_ik) = q_ik - p_ik.
    (yaodongyu/TRADES trades.py lines 27 and 36-37: nn.KLDivLoss(size_average=False) of
    log_softmax(model(x_adv)) against softmax(model(x_natural)), summed over the batch; per
    example here, log p from log_softmax rather than log(softmax).)
    """
    log_q = _log_softmax(xp, logits)
    log_p = _log_softmax(xp, target)
    p = xp.exp(log_p)
    return (p * (log_p - log_q)).sum(axis=1), xp.exp(log_q) - p


def margin_targeted(xp, logits, y, target):
    """FAB-T's logit difference to a target class: loss_i = z_{i,t_i} - z_{i,y_i}, t = target;
    gradient +1 at t_i and -1 at y_i (zero, like the loss, when t_i = y_i)."""
    rows = xp.arange(logits.shape[0])
    dlogits = xp.zeros_like(logits)
    dlogits[rows, target] += 1
    dlogits[rows, y] -= 1
    return logits[rows, target] - logits[rows, y], dlogits


# --- outer (training) losses of two forward passes: z_nat = z(x_natural), z_adv = z(x_adv) -----
def trades_outer(xp, z_nat, z_adv, y, beta):
    """TRADES' training loss per example, with its gradients w.r.t. both logits:

        l_i = CE(z_nat_i, y_i) + beta KL(p_i || q_i),   p = softmax(z_nat), q = softmax(z_adv),
        KL(p || q) = sum_j p_j s_j,   s_j = log p_j - log q_j.

    Returns (l (B,), dl/dz_nat (B, C), dl/dz_adv (B, C)). Derivation (one row; e_y the unit
    vector of y; dp_j/dz_nat_k = p_j (delta_jk - p_k), dlog p_j/dz_nat_k = delta_jk - p_k):

        dKL/dz_adv_k = -sum_j p_j (delta_jk - q_k) = q_k - p_k
        dKL/dz_nat_k = sum_j p_j (delta_jk - p_k) s_j + sum_j p_j (delta_jk - p_k)
                     = p_k (s_k - KL) + (p_k - p_k) = p_k (s_k - KL)
        dl/dz_nat = p - e_y + beta p * (s - KL),    dl/dz_adv = beta (q - p).

    yaodongyu/TRADES 6e8e11b7c281371c2f027ffadfbaea80361f09de trades.py lines 79-83
    (`trades_loss`): loss_natural = F.cross_entropy(model(x_natural), y) (batch mean),
    loss_robust = (1 / B) KLDivLoss(size_average=False)(log_softmax(model(x_adv)),
    softmax(model(x_natural))), loss = loss_natural + beta loss_robust = mean_i l_i. Deviations:
    log p from log_softmax rather than log(softmax) (equal up to rounding); the caller runs one
    natural forward where the authors run two (see the backends' train_step).
    """
    ce, d_nat = cross_entropy(xp, z_nat, y)
    log_p, log_q = _log_softmax(xp, z_nat), _log_softmax(xp, z_adv)
    p = xp.exp(log_p)
    s = log_p - log_q
    kl_div = (p * s).sum(axis=1)
    d_nat = d_nat + beta * p * (s - kl_div[:, None])
    d_adv = beta * (xp.exp(log_q) - p)
    return ce + beta * kl_div, d_nat, d_adv


def mart_targets(xp, q, y):
    """MART's new_y: the most probable class of q (B, C) other than y, by the authors' rule
    (argsort ascending, the last two columns; the second-to-last where the last is y)."""
    top2 = xp.argsort(q, axis=1)[:, -2:]
    return xp.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])


def mart_outer(xp, z_nat, z_adv, y, beta):
    """MART's training loss per example, with its gradients w.r.t. both logits:

        l_i = CE(z_adv_i, y_i) - log(c - q_t) + beta K_i w_i,          c = 1.0001 + 1e-12,
        K = sum_j p_j s_j,  s_j = log p_j - log(q_j + eps),  w = 1.0000001 - p_y,  eps = 1e-12,

    q = softmax(z_adv), p = softmax(z_nat), t = mart_targets(q, y) (a constant index). Returns
    (l (B,), dl/dz_nat, dl/dz_adv). Derivation (one row; dq_j/dz_adv_k = q_j (delta_jk - q_k)):

        d[-log(c - q_t)]/dz_adv = q_t (e_t - q) / (c - q_t)
        dK/dz_adv_k = -sum_j p_j q_j (delta_jk - q_k) / (q_j + eps) = -(r_k - q_k sum_j r_j),
                      r_j = p_j q_j / (q_j + eps)        (r = p, hence q - p, when eps = 0)
        dK/dz_nat = p * (s - K)                          (as in trades_outer)
        dw/dz_nat = -p_y (e_y - p)
        dl/dz_adv = q - e_y + q_t (e_t - q) / (c - q_t) - beta w (r - q sum_j r_j)
        dl/dz_nat = beta (w p * (s - K) - K p_y (e_y - p)).

    YisenWang/MART 2d83e17b381dd2ee52223695e517bf6d5ff09c2c mart.py lines 38-56 (`mart_loss`):
    loss_adv = CE(logits_adv, y) + nll_loss(log(1.0001 - adv_probs + 1e-12), new_y) (batch
    means), loss_robust = (1 / B) sum_i KLDiv(log(adv_probs + 1e-12), nat_probs)_i
    (1.0000001 - true_probs_i), loss = loss_adv + beta loss_robust = mean_i l_i; the gradient
    flows through true_probs, as there. Deviation: log p from log_softmax, not log(softmax).
    """
    rows = xp.arange(z_adv.shape[0])
    ce, d_adv = cross_entropy(xp, z_adv, y)
    q = xp.exp(_log_softmax(xp, z_adv))
    t = mart_targets(xp, q, y)
    q_t = q[rows, t]
    gap = 1.0001 - q_t + 1e-12
    boost = -xp.log(gap)
    d_adv = d_adv - (q_t / gap)[:, None] * q
    d_adv[rows, t] += q_t / gap
    log_p = _log_softmax(xp, z_nat)
    p = xp.exp(log_p)
    s = log_p - xp.log(q + 1e-12)
    k = (p * s).sum(axis=1)
    p_y = p[rows, y]
    w = 1.0000001 - p_y
    r = p * q / (q + 1e-12)
    d_adv = d_adv - beta * w[:, None] * (r - q * r.sum(axis=1, keepdims=True))
    d_nat = (w[:, None] * p * (s - k[:, None]) + (k * p_y)[:, None] * p)
    d_nat[rows, y] -= k * p_y
    return ce + boost + beta * k * w, beta * d_nat, d_adv


LOSSES = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr}
TARGETED_LOSSES = {"dlr-targeted": dlr_targeted, "margin-targeted": margin_targeted}
OUTER = {"trades": trades_outer, "mart": mart_outer}


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
