"""L_inf attacks: FGSM, PGD (with the FOSC stopping rule of Algorithm 1) and CW_inf.

Every attack is PGD with different settings, so there is one loop, `pgd`:

    x^0     = project(x_0 + U(-eps, eps))                    (random start, optional;
                                                              fosc_reference="start": unprojected)
    x^{k+1} = project(x^k + alpha * sign(grad_x loss(x^k)))   (k = 0 .. K-1)

With `stop_fosc=c_t` it is the inner loop of Algorithm 1 (Dynamic Adversarial Training): after
each step the FOSC of every example is computed from the gradient that the next step needs
anyway, and an example with c(x^k) <= c_t stops where it is. Stopped examples cost nothing:
when some stop, the loop writes their points to the output and keeps working on the smaller
batch of the still-active rows (`minidyn.active`), so gradients are evaluated only for them.
Because the backend's gradients are per example (attacks run the model in eval mode), the
result is identical to the paper's masked full-batch update x + V * alpha * sign(g).

FOSC here (the stop rule, final_stats and the trace) is always the paper's Eq. 4 over the
eps-ball alone, c(x^k) = eps ||g||_1 - <x^k - x_0, g>, whatever `bounds` is: the box changes
where PGD may go, not how FOSC is measured. The FOSC over the set PGD actually searches, the
ball intersected with the box, is `minidyn.fosc(..., bounds=(0, 1))`; it is never larger, and
much smaller where pixels sit on the box's faces (MNIST's are mostly 0 or 1), because the box
removes the vertices that push pixels outside [0, 1] (docs/fosc.md).

`fosc_reference="start"` (training's `--fosc-reference start`, off by default) is the loop of
the authors' code (YisenWang/dynamic_adv_training, commit 470210e, pgd_attack.py,
`LinfPGDAttack.perturb`, lines 41-101): the random start x_0 + u, u ~ U(-eps, eps)^d, is NOT
projected into the box; the first gradient is taken there and the first step is taken from
there, and FOSC is measured from it, c(x^k) = eps ||g||_1 - <x^k - (x_0 + u), g>, which can be
negative. The noise u is the same draw as under "natural", which projects the start first.
Line by line, against `pgd(..., fosc_reference="start")`:

    45      x = x_nat + U(-eps, eps), not clipped: the same here, but u comes from the backend
            generator `rng` (the authors': numpy's global np.random, over the batch passed)
    59, 62  batch_x and original_batch_x (FOSC's reference) are that unclipped start: the same
    65-69   the first gradient at the unclipped start, the first step from it: the same
    74-75   clip into the eps-ball of x_nat, then into [clip_min, clip_max] (train_models.py
            lines 84-85: the training set's min and max): the same as one clip into
            `feasible_box` (identical numbers for x_nat inside the box); `bounds` is the box
    77      the gradient at every x^1 .. x^K, of every example, stopped or not (K + 1
            evaluations per example): minidyn evaluates only the active examples, and at x^K
            only for final_stats/trace (grad_evals counts what it spends). Same points.
    84-88   FOSC = eps ||g||_1 - <x^k - x^0, g> over the flattened example, with g the gradient
            of the summed per-example losses (line 39): the same (minidyn.fosc, Eq. 4, the ball)
    90-92, 70-72  the mask from FOSC at x^j gates step j + 1 (first at x^1, never at x^0); a
            masked example does not move, so its FOSC stays and it stays stopped. minidyn stops
            an example at the first k in 1 .. K-1 with c(x^k) <= c_t and drops it from the
            batch: the same points and steps (with deterministic gradients). FOSC at x^K is
            computed there but gates nothing: here it is computed only for final_stats/trace.
    72      the mask is repeated 32*32*3 times: the authors' loop runs on CIFAR-10 shapes only;
            minidyn on any shape
    94-97   fosc_batch (B, K) holds FOSC at x^1 .. x^K, repeated after a stop; `Trace` holds
            x^0 .. x^K with NaN after the stop, and out.fosc the value at the point returned
    30      the loss is -sum_j y_j log(softmax_j + 1e-20); minidyn's cross-entropy has no 1e-20
            (the gradients differ by the factor p_y / (p_y + 1e-20): float rounding unless
            p_y < 1e-12). Their 'cw' loss (lines 32-35, -relu(z_y - max_j (1 - y_j) z_j +
            kappa), not used for training: train_models.py line 83) differs from minidyn's
            margin max_{j != y} z_j - z_y.
    45      x_nat (float32) + float64 noise: the authors step and clip in float64 and feed
            float32 to the model; minidyn computes in the backend's dtype (float32 by default)

tests/test_authors_switches.py transcribes lines 44-99 in NumPy and checks that pgd matches it.

Dynamic's family (issue 21): pgd's options `start`, loss="kl", `stop_tau`, `omega` and `kappa`
are the inner loops of FAT, TRADES, MART and GAIRAT; each default is the old behaviour. They
combine with each other and with stop_fosc (FOSC uses the gradient of the chosen loss, so
stop_fosc with loss="kl" is FOSC-stopped TRADES): at x^k an example stops if either rule says
so (FOSC at k >= 1, tau at k >= 0). tests/test_attacks_family.py checks each against a torch
transcription of the authors' function.

FAT, zjfheart/Friendly-Adversarial-Training, commit 80a0640, earlystop.py `earlystop`,
lines 5-113, against pgd(stop_tau=tau, ...):

    26      control = tau for every example: the same (kept beside x^k, narrowed with it)
    31-35   starts, each clamped into [0, 1]: normal_distribution_randominit, x + 0.001 n
            (FAT_for_TRADES.py line 68, FAT_for_MART.py line 73) = start="normal-clamped";
            uniform_randominit, x + U(-eps, eps) (FAT.py line 58) = start="uniform" (its clip
            into the ball changes nothing). The draws come from `rng` (theirs: np.random and
            torch's global generator)
    41      the clean logits for "kl", once: the same (backend.logits, counted in `forwards`)
    43-59   at x^k, k = 0 .. K-1, the prediction of the forward pass: misclassified with
            control 0 -> stops at x^k; misclassified with control > 0 -> control -= 1, goes on;
            classified correctly -> goes on. The same, from the logits of the forward that
            gives the gradient (return_logits). So an example stops at its (tau + 1)-th
            misclassified iterate, not necessarily tau steps after the first one
    61-72, 104-113  the stopped examples are returned first, in the order they stop, then
            the others (targets and natural examples reordered alike): minidyn returns every
            row in batch order (a mean over the batch differs only in summation order)
    74-83   the gradient of the whole remaining batch at x^k, of the examples that stop there
            too; their `count` (line 98) counts only the examples that step on: an example
            stopped at x^k costs k + 1 evaluations in grad_evals and k in `count`
    77-78   CE with reduction 'mean' (gradient / B): the sign of minidyn's per-example
            gradient, unless a component underflows to 0. 79-81: KL, summed: loss="kl"
    93-97   x + alpha sign(g) + omega n (FAT.py line 27: omega 0.001; FAT_for_TRADES.py and
            FAT_for_MART.py line 27: 0.0), clipped into the ball, then into [0, 1]: the same,
            one clip into the feasible box, n drawn from `rng` for the rows that go on
    99-101  returns once no example is left: the same
    -       not theirs: an example stopped at x^0 returns x^0 projected into the feasible box,
            as every returned point is (x^0 of start="normal" may lie outside; for
            "normal-clamped" it differs from earlystop only where 0.001 |n| > eps). Its FOSC
            and loss (final_stats, trace) are those at x^0 as evaluated, before that projection

GAIRAT, zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training, commit 16813b5,
attack_generator.py `GA_PGD`, lines 20-53, against pgd(kappa=True, ...):

    22, 29-36  Kappa = 0; at each x^k, k = 0 .. K-1, Kappa += 1 where the prediction is the
            label: AttackResult.kappa, the same (from the gradient's forward). With a stop rule,
            kappa counts the iterates the example visited, up to the one where it stopped
    23-28   category "Madry": x + U(-eps, eps) clamped (GAIRAT.py line 132, with CE) =
            start="uniform"; "trades": x + 0.001 n, not clamped, KL to model(data) computed
            once = start="normal", loss="kl". As written, "trades" fails at the second step
            (line 25's nat_output keeps its graph and line 46's backward frees it); GAIRAT.py
            calls only "Madry"
    39-51   CE 'mean' (the sign as above), KL summed; the step and both clips: the same.
            Their "cw" (cwloss, lines 5-17, confidence 50) is not minidyn's "cw"

TRADES, yaodongyu/TRADES, commit 6e8e11b, trades.py `trades_loss`, lines 27-41 and 75, is
pgd(start="normal", loss="kl"); MART, YisenWang/MART, commit 2d83e17, mart.py `mart_loss`,
lines 20-29 and 34, is pgd(start="normal", loss="ce"):

    31 / 20  x + 0.001 n, n ~ N(0, 1), not clipped before the first gradient: start="normal"
    36-37    KL(p(x_0) || p(x^k)) summed over the batch, with model(x_natural) computed again at
             every step (K clean forwards, equal in eval mode): minidyn computes the clean
             logits once (`forwards` = B). MART line 25: CE 'mean' (the sign as above)
    39-41 / 27-29  the step, the ball, the box: the same
    75 / 34  the final clamp into [0, 1]: a no-op after a step (pgd takes K >= 1)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minidyn.active import ActiveSet
from minidyn.backend import Array, Backend, Model, backend_for
from minidyn.errors import ConfigError
from minidyn.fosc import fosc
from minidyn.methods import FOSC_REFERENCES
from minidyn.projection import feasible_box, is_eps

STARTS = ("uniform", "uniform-unprojected", "normal", "normal-clamped")  # pgd's random starts (`start_and_reference`)
NORMAL_START_STD = 0.001  # trades.py line 31, mart.py line 20, earlystop.py line 31, GA_PGD line 24


@dataclass
class Trace:
    """FOSC and loss of every example at every point x^0 .. x^K, numpy (K+1, B); NaN once stopped."""

    fosc: np.ndarray
    loss: np.ndarray


@dataclass
class AttackResult:
    """What an attack returns. Arrays are on the attack's backend unless stated otherwise.

    x_adv:      (B, ...) adversarial batch.
    fosc:       (B,) FOSC at x_adv (the point where each example stopped), or None when
                final_stats=False.
    loss:       (B,) per-example loss at x_adv, or None when final_stats=False.
    steps:      (B,) int, the PGD steps each example took (K unless it stopped early).
    grad_evals: int, per-example gradient evaluations spent (a batch of 128 costs 128).
    trace:      per-step FOSC and loss when trace=True, else None.
    kappa:      (B,) int with kappa=True (GAIRAT's geometry value): how many of the iterates
                x^0 .. x^{K-1} that the example visited the model classifies correctly; else None.
    forwards:   int, per-example forward-only passes spent besides the gradient evaluations
                (loss="kl": the clean logits, one per example); 0 otherwise.
    """

    x_adv: Array
    fosc: Array | None
    loss: Array | None
    steps: Array
    grad_evals: int
    trace: Trace | None = None
    kappa: Array | None = None
    forwards: int = 0


def check_eps(eps: float, *, zero: bool = False) -> None:
    """ConfigError unless eps is an L_inf budget on pixels in [0, 1]: in (0, 1], or [0, 1] with
    `zero` (an attack accepts eps 0, see check_settings). The one check of eps's range."""
    if not is_eps(eps, zero=zero):
        raise ConfigError(f"eps must be in {'[' if zero else '('}0, 1], got {eps}")


def check_settings(eps: float, step_size: float, steps: int) -> None:
    """ConfigError unless eps is in [0, 1], the step size > 0 (or 0 with eps 0) and steps >= 1."""
    # eps 0 is allowed (with step size 0): every attack must then return x itself, which is
    # what the eps-0 sanity check of minidyn.evaluation.evaluate verifies
    check_eps(eps, zero=True)
    if not (step_size > 0 or step_size == eps == 0):
        raise ConfigError(f"step size must be > 0, got {step_size}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")


def start_point(x: Array, eps: float, lower: Array, upper: Array, random_start: bool, rng,
                backend: Backend) -> Array:
    """x^0 = P(x_0 + u), u ~ U(-eps, eps)^d: uniform in the eps-ball, then projected into the
    feasible box [lower, upper] (each of x's shape (B, ...)); u = 0 without random_start.

    rng: the backend generator the noise is drawn from (default: a fixed seed 0).
    """
    return backend.clip(uniform_start(x, eps, random_start, rng, backend), lower, upper)


def uniform_start(x: Array, eps: float, random_start: bool, rng, backend: Backend) -> Array:
    """x_0 + u, u ~ U(-eps, eps)^d, before any projection (x itself without random_start); the
    draw `start_point` projects and the authors' code starts from (module docstring)."""
    if not random_start:
        return x
    rng = rng if rng is not None else backend.rng(0)
    return x + backend.uniform(rng, tuple(x.shape), -eps, eps)


def normal_start(x: Array, random_start: bool, rng, backend: Backend) -> Array:
    """x_0 + 0.001 n, n ~ N(0, 1)^d, unprojected (x itself without random_start): the start of
    TRADES, MART, GAIRAT's "trades" GA_PGD and FAT's normal_distribution_randominit."""
    if not random_start:
        return x
    rng = rng if rng is not None else backend.rng(0)
    return x + backend.normal(rng, tuple(x.shape), NORMAL_START_STD)


def start_and_reference(x: Array, eps: float, lower: Array, upper: Array, random_start: bool,
                        rng, fosc_reference: str, backend: Backend, start: str = "uniform",
                        bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[Array, Array]:
    """(x^0, FOSC's reference point) for x (B, ...), lower/upper the feasible box.

    start "uniform": the paper's x^0 = P(x_0 + u); "uniform-unprojected": x_0 + u itself
    (FGSM-RS on MNIST: locuslab/fast_adversarial 54f7287, MNIST/train_mnist.py lines 74-76 take
    the gradient there); "normal": x_0 + 0.001 n, not projected (TRADES, MART); "normal-clamped": x_0 + 0.001 n clamped into the pixel box `bounds` only
    (FAT's earlystop). FOSC is measured from x_0; with fosc_reference="start" x^0 is the draw
    itself, never projected, and FOSC is measured from it (module docstring). The same draw
    either way."""
    if fosc_reference not in FOSC_REFERENCES:
        raise ConfigError(f"fosc_reference must be one of {', '.join(FOSC_REFERENCES)}, got {fosc_reference!r}")
    if start not in STARTS:
        raise ConfigError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    if start.startswith("uniform"):
        x_start = uniform_start(x, eps, random_start, rng, backend)
    else:
        x_start = normal_start(x, random_start, rng, backend)
    if fosc_reference == "start":
        return x_start, x_start
    if start in ("normal", "uniform-unprojected"):
        return x_start, x
    if start == "normal-clamped":
        return backend.clip(x_start, float(bounds[0]), float(bounds[1])), x
    return backend.clip(x_start, lower, upper), x


def pgd(model: Model, x: Array, y: Array, *, eps: float, step_size: float, steps: int,
        random_start: bool = True, loss: str = "ce", stop_fosc: float | None = None,
        final_stats: bool = False, trace: bool = False, bounds: tuple[float, float] = (0.0, 1.0),
        rng=None, fosc_reference: str = "natural", backend: Backend | None = None,
        start: str = "uniform", stop_tau: int | None = None, kappa: bool = False,
        omega: float = 0.0) -> AttackResult:
    """Projected gradient ascent on `loss` within the eps-ball of x (B, ...) and the pixel box.

    x: (B, ...) natural examples x_0 in `bounds`; y: (B,) integer labels; eps, step_size: in
    the units of x (pixels in [0, 1]); steps: K. bounds: the pixel box (lo, hi).
    loss:      "ce", "cw", ... (the backend's), or "kl": KL(p(x_0) || p(x^k)) to the clean
               prediction (TRADES' inner problem); its clean logits are one forward pass of x,
               counted in `forwards`.
    stop_fosc: None runs every example for K steps (Madry's PGD); a number c_t stops each
               example after the first step at which FOSC <= c_t (Algorithm 1).
    stop_tau:  None, or FAT's tau: an example stops at the iterate x^k (k = 0 .. K-1) at which
               the model misclassifies it for the (tau + 1)-th time (module docstring, "Dynamic's
               family"). Combinable with stop_fosc: an example stops where either rule says so.
    kappa:     also return GAIRAT's kappa (AttackResult.kappa).
    start:     "uniform" (default), "uniform-unprojected", "normal" or "normal-clamped"
               (`start_and_reference`).
    omega:     FAT's exploration noise: omega N(0, 1) added to every step before the projection
               (earlystop.py line 95; 0, the default, adds nothing and draws nothing).
    final_stats: also return FOSC and loss at x_adv (one more gradient evaluation for the
               examples that never stopped; plain PGD spends exactly B * K).
    trace:     also return `Trace`, FOSC and loss at every point x^0 .. x^K (NaN after an
               example stopped); costs the same extra evaluation as final_stats.
    rng:       the backend generator for the random start and omega (default: a fixed seed 0).
    fosc_reference: "natural" (the paper) measures FOSC from x_0; "start" follows the authors'
               code: x^0 = the random draw unprojected, FOSC measured from it (module docstring).
    FOSC (stop rule, final_stats, trace) is Eq. 4 over the eps-ball alone (module docstring).
    """
    check_settings(eps, step_size, steps)
    _check_family(stop_tau, omega)
    backend = backend or backend_for(x)
    if rng is None and omega:  # the start and omega's noise draw from one generator
        rng = backend.rng(0)
    lower, upper = feasible_box(x, eps, bounds, backend)  # the ball around x_0, in the pixel box
    x_k, x_0 = start_and_reference(x, eps, lower, upper, random_start, rng, fosc_reference,
                                   backend, start, bounds)
    labels, n, stats = y, int(x.shape[0]), final_stats or trace
    active = ActiveSet(backend, n)
    out = AttackResult(x_adv=None, fosc=None, loss=None, steps=None, grad_evals=0,  # active.write
                       trace=_empty_trace(steps, n) if trace else None)            # fills these
    rows = _row_state(backend, model, x, loss, stop_tau, kappa, out)  # per-row state beside x^k
    for k in range(steps + 1):
        if k == steps and not stats:  # plain PGD needs no gradient at x^K
            break
        losses, g, z = _gradient(backend, model, x_k, labels, loss, rows)
        out.grad_evals += len(active)
        stopping = k < steps and (stop_fosc is not None and k > 0 or stop_tau is not None)
        c = None
        if stopping and (stop_fosc is not None or stats) or trace or k == steps:
            c = fosc(x_k, x_0, g, eps, backend=backend)
            _record(out.trace, k, active, c, losses)
        if k == steps:
            active.write(out, fosc=c, loss=losses)
            break
        _count_kappa(backend, rows, z, labels)
        if stopping:
            go_on = _go_on(backend, k, c, stop_fosc, rows, z, labels)
            if int(go_on.shape[0]) < len(active):  # some stop at x^k
                stats_k = {} if c is None else {"fosc": c, "loss": losses}
                x_out = x_k if k else backend.clip(x_k, lower, upper)  # x^0 may be unprojected
                active.write(out, x_adv=x_out, steps=k, **stats_k, **_kappa(rows))
                x_k, x_0, labels, lower, upper, g, *rest = active.keep(
                    go_on, x_k, x_0, labels, lower, upper, g, *rows.values())
                rows = dict(zip(rows, rest))
                if len(active) == 0:
                    break
        x_k = _step(backend, x_k, g, step_size, omega, rng, lower, upper)  # x^{k+1}
    active.write(out, x_adv=x_k, steps=steps, **_kappa(rows))  # the rows that never stopped
    if not stats:
        out.fosc = out.loss = None
    return out


def _check_family(stop_tau: int | None, omega: float) -> None:
    """ConfigError unless FAT's tau is None or an integer >= 0 and omega >= 0."""
    integer = isinstance(stop_tau, (int, np.integer)) and not isinstance(stop_tau, bool)
    if stop_tau is not None and not (integer and stop_tau >= 0):
        raise ConfigError(f"stop_tau must be an integer >= 0, got {stop_tau!r}")
    if not (isinstance(omega, (int, float, np.floating)) and omega >= 0):
        raise ConfigError(f"omega must be a number >= 0, got {omega!r}")


def _row_state(backend: Backend, model: Model, x: Array, loss: str, stop_tau: int | None,
               kappa: bool, out: AttackResult) -> dict:
    """The per-row arrays the family's options keep beside x^k, narrowed with it: "target"
    (B, C) KL's clean logits (one forward pass, counted in out.forwards), "control" (B,) FAT's
    remaining tau allowance (earlystop.py line 26), "kappa" (B,) GAIRAT's count (GA_PGD line 22)."""
    rows, n = {}, int(x.shape[0])
    if loss == "kl":
        rows["target"] = backend.logits(model, x)
        out.forwards += n
    if stop_tau is not None:
        rows["control"] = backend.full((n,), int(stop_tau), dtype="int")
    if kappa:
        rows["kappa"] = backend.zeros((n,), dtype="int")
    return rows


def _gradient(backend: Backend, model: Model, x: Array, y: Array, loss: str,
              rows: dict) -> tuple[Array, Array, Array | None]:
    """(losses (B,), grad_x, logits (B, C) of the same forward or None): the plain call unless
    KL needs its target or FAT/GAIRAT read the iterate's prediction."""
    options = {}
    if "target" in rows:
        options["target"] = rows["target"]
    if "control" in rows or "kappa" in rows:
        return backend.loss_and_grad(model, x, y, loss, return_logits=True, **options)
    return (*backend.loss_and_grad(model, x, y, loss, **options), None)


def _count_kappa(backend: Backend, rows: dict, z: Array | None, y: Array) -> None:
    """GAIRAT: kappa += 1 where x^k is classified correctly (GA_PGD lines 32-36); a new array."""
    if "kappa" in rows:
        correct = backend.argmax(z) == backend.asarray(y)
        rows["kappa"] = backend.where(correct, rows["kappa"] + 1, rows["kappa"])


def _kappa(rows: dict) -> dict:
    return {"kappa": rows["kappa"]} if "kappa" in rows else {}


def _go_on(backend: Backend, k: int, c: Array | None, stop_fosc: float | None, rows: dict,
           z: Array | None, y: Array) -> Array:
    """Positions (into the active rows) of the examples that go on from x^k; updates FAT's control.

    FOSC (Algorithm 1, k >= 1): go on while c(x^k) > c_t (the paper's V = 0 where FOSC <= c_t).
    tau (earlystop.py lines 50-59): an example misclassified at x^k stops if its control is 0,
    else its control drops by one and it goes on; a correct one goes on, control unchanged.
    """
    go = c > stop_fosc if stop_fosc is not None and k > 0 else None
    if "control" in rows:
        control = rows["control"]
        wrong = backend.argmax(z) != backend.asarray(y)
        stop = wrong & (control == 0)
        rows["control"] = backend.where(wrong & ~stop, control - 1, control)
        go = ~stop if go is None else go & ~stop
    return backend.nonzero(go)


def _step(backend: Backend, x: Array, g: Array, step_size: float, omega: float, rng,
          lower: Array, upper: Array) -> Array:
    """x^{k+1} = P(x^k + alpha sign(g) [+ omega n, n ~ N(0, 1)^d]), P the feasible box."""
    x = x + step_size * backend.sign(g)
    if omega:
        x = x + backend.normal(rng, tuple(x.shape), omega)
    return backend.clip(x, lower, upper)


def _empty_trace(steps: int, n: int) -> Trace:
    return Trace(np.full((steps + 1, n), np.nan), np.full((steps + 1, n), np.nan))


def _record(trace: Trace | None, k: int, active: ActiveSet, c: Array, losses: Array) -> None:
    """Row k of the trace, at the active examples (the others keep NaN)."""
    if trace is not None:
        rows, backend = active.host_index(), active.backend
        trace.fosc[k, rows], trace.loss[k, rows] = backend.to_numpy(c), backend.to_numpy(losses)


def fgsm(model: Model, x: Array, y: Array, *, eps: float, loss: str = "ce",
         final_stats: bool = False, backend: Backend | None = None) -> AttackResult:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size eps from x."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, loss=loss,
               final_stats=final_stats, backend=backend)


def cw_inf(model: Model, x: Array, y: Array, *, eps: float, steps: int = 30,
           step_size: float | None = None, rng=None, final_stats: bool = False,
           backend: Backend | None = None) -> AttackResult:
    """CW_inf as in the paper: PGD for 30 steps (step eps/4, random start) on the
    Carlini-Wagner margin loss max_{j != y} z_j - z_y."""
    return pgd(model, x, y, eps=eps, step_size=step_size or eps / 4, steps=steps, loss="cw",
               rng=rng, final_stats=final_stats, backend=backend)
