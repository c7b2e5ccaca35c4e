"""pgd's options for Dynamic's family (issue 21): FAT's tau stop, GAIRAT's kappa, the KL inner
problem and the 0.001 N(0, 1) start of TRADES and MART, FAT's omega, and their combination with
Algorithm 1's FOSC stop, each against a transcription of the authors' function written here in
torch (the authors' code, minus .cuda(), with the random draws passed in so that both sides
use the same numbers):

    earlystop     zjfheart/Friendly-Adversarial-Training 80a0640, earlystop.py lines 5-113
    ga_pgd        zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training 16813b5,
                  attack_generator.py lines 20-53
    trades_inner  yaodongyu/TRADES 6e8e11b, trades.py lines 27-41 and 75
    mart_inner    YisenWang/MART 2d83e17, mart.py lines 20-29 and 34

The model is a fixed float64 MLP (or softmax regression): the torch backend's, and on the numpy
backend the numpy model with the same weights, so the numpy backend's hand-written gradients
meet torch's autograd.
"""
import numpy as np
import pytest

from minidyn import get_backend, pgd
from minidyn.attacks import start_and_reference
from minidyn.errors import ConfigError
from minidyn.fosc import fosc
from minidyn.projection import feasible_box

torch = pytest.importorskip("torch", reason="the transcriptions are written in torch")
nn, F = torch.nn, torch.nn.functional

SHAPE, CLASSES, N = (1, 4, 4), 3, 16
EPS, ALPHA, K = 0.3, 0.04, 10


def _backend(name):
    return get_backend(name, **({"device": "cpu"} if name == "torch" else {}), dtype="float64")


def _setup(name, seed=0, arch="mlp"):
    """(backend, backend model, torch model with the same weights, x, y): y is the model's own
    clean prediction for 12 examples and another class for 4, so examples turn misclassified
    at many different iterates."""
    T = _backend("torch")
    tmodel = T.make_model(arch, SHAPE, CLASSES, seed)
    B = _backend(name)
    model = tmodel if name == "torch" else B.make_model(arch, SHAPE, CLASSES, seed)
    if name != "torch":
        B.set_params(model, T.get_params(tmodel))
    rng = np.random.default_rng(seed)
    x = rng.random((N,) + SHAPE)
    x[[0, 1, 2, 12, 13, 14, 15], 0, 0] = 0.0  # on the box's face: the normal start leaves the box there
    with torch.no_grad():
        y = tmodel(torch.from_numpy(x)).argmax(1).numpy()
    y[12:] = (y[12:] + 1) % CLASSES
    return B, model, tmodel, x, y


def _np(B, a):
    return np.asarray(B.to_numpy(a))


def _t(a):
    return torch.as_tensor(np.asarray(a))


# --- the transcriptions ---------------------------------------------------------------------------
def earlystop(model, data, target, step_size, epsilon, perturb_steps, tau, loss_fn, x_start,
              randn=None, omega=0):
    """earlystop.py lines 5-113 with the random start (lines 29-37) replaced by the given
    x_start and torch.randn (line 95) by `randn`. Added bookkeeping (`index`, `taken`) maps
    their reordered output back to batch order: returns (adv (B, ...) in batch order, steps (B,),
    count)."""
    model.eval()
    K = perturb_steps
    count = 0
    output_target, output_adv, output_natural, output_index_all, output_taken = [], [], [], [], []
    control = (torch.ones(len(target)) * tau)
    iter_adv = x_start.detach()
    iter_clean_data = data.detach()
    iter_target = target.detach()
    output_iter_clean_data = model(data)
    index = torch.arange(len(target))  # bookkeeping
    while K > 0:
        iter_adv.requires_grad_()
        output = model(iter_adv)
        pred = output.max(1, keepdim=True)[1]
        output_index, iter_index = [], []
        for idx in range(len(pred)):
            if pred[idx] != iter_target[idx]:
                if control[idx] == 0:
                    output_index.append(idx)
                else:
                    control[idx] -= 1
                    iter_index.append(idx)
            else:
                iter_index.append(idx)
        if len(output_index) != 0:
            output_adv.append(iter_adv[output_index].detach())
            output_natural.append(iter_clean_data[output_index])
            output_target.append(iter_target[output_index])
            output_index_all.append(index[output_index])
            output_taken += [perturb_steps - K] * len(output_index)
        model.zero_grad()
        with torch.enable_grad():
            if loss_fn == "cent":
                loss_adv = nn.CrossEntropyLoss(reduction='mean')(output, iter_target)
            if loss_fn == "kl":
                criterion_kl = nn.KLDivLoss(reduction="sum")  # their size_average=False
                loss_adv = criterion_kl(F.log_softmax(output, dim=1), F.softmax(output_iter_clean_data, dim=1))
        loss_adv.backward(retain_graph=True)
        grad = iter_adv.grad
        if len(iter_index) != 0:
            control = control[iter_index]
            iter_adv = iter_adv[iter_index]
            iter_clean_data = iter_clean_data[iter_index]
            iter_target = iter_target[iter_index]
            output_iter_clean_data = output_iter_clean_data[iter_index]
            index = index[iter_index]
            grad = grad[iter_index]
            eta = step_size * grad.sign()
            noise = omega * randn(iter_adv.shape) if omega else 0  # their omega * torch.randn(...)
            iter_adv = iter_adv.detach() + eta + noise
            iter_adv = torch.min(torch.max(iter_adv, iter_clean_data - epsilon), iter_clean_data + epsilon)
            iter_adv = torch.clamp(iter_adv, 0, 1)
            count += len(iter_target)
        else:
            return _batch_order(output_adv, output_index_all, output_taken, len(target), count)
        K = K - 1
    output_adv.append(iter_adv.detach())
    output_index_all.append(index)
    output_taken += [perturb_steps] * len(index)
    return _batch_order(output_adv, output_index_all, output_taken, len(target), count)


def _batch_order(adv, index, taken, n, count):
    adv, index = torch.cat(adv).detach(), torch.cat(index)
    out = torch.empty_like(adv)
    out[index] = adv
    steps = np.empty(n, int)
    steps[index.numpy()] = taken
    return out, steps, count


def ga_pgd(model, data, target, epsilon, step_size, num_steps, loss_fn, category, x_start):
    """attack_generator.py lines 20-53, the random start (lines 23-28) replaced by x_start
    (already clamped for "Madry", as line 28 does). One change: nat_output (line 25) is
    detached. As written it keeps the graph through the parameters, and the second step's
    backward (line 46, no retain_graph) raises; GAIRAT.py only calls category="Madry"."""
    model.eval()
    Kappa = torch.zeros(len(data))
    x_adv = x_start.detach()
    if category == "trades":
        nat_output = model(data).detach()
    for k in range(num_steps):
        x_adv.requires_grad_()
        output = model(x_adv)
        predict = output.max(1, keepdim=True)[1]
        for p in range(len(x_adv)):
            if predict[p] == target[p]:
                Kappa[p] += 1
        model.zero_grad()
        with torch.enable_grad():
            if loss_fn == "cent":
                loss_adv = nn.CrossEntropyLoss(reduction="mean")(output, target)
            if loss_fn == "kl":
                criterion_kl = nn.KLDivLoss(reduction="sum")
                loss_adv = criterion_kl(F.log_softmax(output, dim=1), F.softmax(nat_output, dim=1))
        loss_adv.backward()
        eta = step_size * x_adv.grad.sign()
        x_adv = x_adv.detach() + eta
        x_adv = torch.min(torch.max(x_adv, data - epsilon), data + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv.detach(), Kappa


def trades_inner(model, x_natural, step_size, epsilon, perturb_steps, noise):
    """trades.py lines 27-41 ('l_inf') and 75, with torch.randn (line 31) replaced by `noise`."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x_natural.detach() + 0.001 * noise
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return torch.clamp(x_adv, 0.0, 1.0).detach()


def mart_inner(model, x_natural, y, step_size, epsilon, perturb_steps, noise):
    """mart.py lines 20-29 ('l_inf') and 34, with torch.randn (line 20) replaced by `noise`."""
    model.eval()
    x_adv = x_natural.detach() + 0.001 * noise
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_ce = F.cross_entropy(model(x_adv), y)
        grad = torch.autograd.grad(loss_ce, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return torch.clamp(x_adv, 0.0, 1.0).detach()


# --- FAT ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,arch", [("numpy", "mlp"), ("numpy", "softmax"), ("torch", "mlp")])
@pytest.mark.parametrize("tau", [0, 1, 3])
@pytest.mark.parametrize("loss_fn", ["cent", "kl"])
def test_fat_stop_matches_earlystop(name, arch, tau, loss_fn):
    """The same points and the same steps per example as earlystop (omega = 0, the default of
    FAT_for_TRADES.py and FAT_for_MART.py line 27; FAT.py's 0.001 is tested below). "cent" with
    FAT.py's uniform start (lines 33-35), "kl" with FAT_for_TRADES.py's clamped normal start
    (lines 31-32). Their `count` leaves out the gradient at the iterate where an example stops;
    grad_evals includes it: one more per example that stopped early."""
    B, model, tmodel, x, y = _setup(name, arch=arch)
    start = "uniform" if loss_fn == "cent" else "normal-clamped"
    loss = "ce" if loss_fn == "cent" else "kl"
    out = pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA, steps=K, loss=loss,
              start=start, stop_tau=tau, rng=B.rng(5), backend=B)
    if start == "uniform":
        x_start = np.clip(x + _np(B, B.uniform(B.rng(5), x.shape, -EPS, EPS)), 0, 1)
    else:
        x_start = np.clip(x + _np(B, B.normal(B.rng(5), x.shape, 0.001)), 0, 1)
    adv, steps, count = earlystop(tmodel, _t(x), _t(y), ALPHA, EPS, K, tau, loss_fn, _t(x_start))
    np.testing.assert_array_equal(_np(B, out.steps), steps)
    np.testing.assert_allclose(_np(B, out.x_adv), adv.numpy(), rtol=0, atol=1e-12)
    assert len(set(steps.tolist())) >= 3  # stops at several iterates: the test can tell rules apart
    assert out.grad_evals == count + int((steps < K).sum())


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_fat_omega_noise_matches_earlystop(name):
    """FAT.py's default omega = 0.001 (line 27): omega N(0, 1) added to each step (earlystop.py
    line 95), drawn here from the generator after the start, for the rows still iterated."""
    B, model, tmodel, x, y = _setup(name, seed=1)
    omega, tau = 0.02, 1
    out = pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA, steps=K, stop_tau=tau,
              omega=omega, rng=B.rng(7), backend=B)
    gen = B.rng(7)
    x_start = np.clip(x + _np(B, B.uniform(gen, x.shape, -EPS, EPS)), 0, 1)
    adv, steps, _ = earlystop(tmodel, _t(x), _t(y), ALPHA, EPS, K, tau, "cent", _t(x_start),
                              randn=lambda shape: _t(_np(B, B.normal(gen, tuple(shape), 1.0))), omega=omega)
    np.testing.assert_array_equal(_np(B, out.steps), steps)
    np.testing.assert_allclose(_np(B, out.x_adv), adv.numpy(), rtol=0, atol=1e-12)
    without = pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA, steps=K, stop_tau=tau,
                  rng=B.rng(7), backend=B)
    assert not np.allclose(_np(B, without.x_adv), _np(B, out.x_adv))


def test_tau_k_never_stops_an_example_that_is_misclassified_at_most_k_times():
    """tau = K: control never reaches 0 before x^K (at most K misclassified iterates x^0 ..
    x^{K-1} spend K units), so FAT is plain PGD (their README: FAT with tau = num_steps is AT)."""
    B, model, _, x, y = _setup("numpy")
    plain = pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA, steps=K, rng=B.rng(2), backend=B)
    fat = pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA, steps=K, stop_tau=K,
              rng=B.rng(2), backend=B)
    np.testing.assert_array_equal(fat.x_adv, plain.x_adv)
    assert (fat.steps == K).all() and fat.grad_evals == plain.grad_evals


# --- GAIRAT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,arch", [("numpy", "mlp"), ("numpy", "softmax"), ("torch", "mlp")])
@pytest.mark.parametrize("category", ["Madry", "trades"])
def test_gairat_kappa_matches_ga_pgd(name, arch, category):
    """kappa and the points of GA_PGD: "Madry" (GAIRAT.py line 132: CE, uniform start clamped)
    and "trades" (KL to the clean prediction from the unclamped 0.001 N(0, 1) start)."""
    B, model, tmodel, x, y = _setup(name, seed=2, arch=arch)
    if category == "Madry":
        options, loss_fn = dict(loss="ce"), "cent"
        x_start = np.clip(x + _np(B, B.uniform(B.rng(9), x.shape, -EPS, EPS)), 0, 1)
    else:
        options, loss_fn = dict(loss="kl", start="normal"), "kl"
        x_start = x + _np(B, B.normal(B.rng(9), x.shape, 0.001))
    out = pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA, steps=K, kappa=True,
              rng=B.rng(9), backend=B, **options)
    adv, Kappa = ga_pgd(tmodel, _t(x), _t(y), EPS, ALPHA, K, loss_fn, category, _t(x_start))
    np.testing.assert_array_equal(_np(B, out.kappa), Kappa.numpy().astype(int))
    np.testing.assert_allclose(_np(B, out.x_adv), adv.numpy(), rtol=0, atol=1e-12)
    assert len(set(Kappa.tolist())) >= 2
    assert out.kappa is not None and pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA,
                                         steps=K, backend=B, **options).kappa is None


# --- TRADES' and MART's inner loops ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["trades", "mart"])
def test_inner_loop_matches_the_authors(name, method):
    """TRADES: KL to the clean prediction; MART: CE; both from x_0 + 0.001 n, the first gradient
    at that unclamped point; the same noise n on both sides. TRADES recomputes the clean logits
    at every step (line 37); pgd computes them once (counted in `forwards`): equal in eval mode."""
    B, model, tmodel, x, y = _setup(name, seed=3)
    noise = _np(B, B.normal(B.rng(4), x.shape, 1.0))
    loss = "kl" if method == "trades" else "ce"
    out = pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA, steps=K, loss=loss,
              start="normal", rng=B.rng(4), backend=B)
    if method == "trades":
        expected = trades_inner(tmodel, _t(x), ALPHA, EPS, K, _t(noise))
    else:
        expected = mart_inner(tmodel, _t(x), _t(y), ALPHA, EPS, K, _t(noise))
    np.testing.assert_allclose(_np(B, out.x_adv), expected.numpy(), rtol=0, atol=1e-12)
    assert out.grad_evals == N * K and out.forwards == (N if method == "trades" else 0)


def test_normal_starts_leave_the_box_only_unclamped():
    """x^0 = x_0 + 0.001 n for "normal" (below 0 where x_0 = 0), clamped into the box for
    "normal-clamped", and the same draw for both; without random_start x^0 = x_0."""
    B, _, _, x, _ = _setup("numpy")
    lower, upper = feasible_box(x, EPS, (0.0, 1.0), B)
    draw = x + B.normal(B.rng(1), x.shape, 0.001)
    normal, ref = start_and_reference(x, EPS, lower, upper, True, B.rng(1), "natural", B, "normal")
    clamped, _ = start_and_reference(x, EPS, lower, upper, True, B.rng(1), "natural", B, "normal-clamped")
    np.testing.assert_array_equal(normal, draw)
    np.testing.assert_array_equal(clamped, np.clip(draw, 0, 1))
    np.testing.assert_array_equal(ref, x)
    assert (normal < 0).any() and not (clamped < 0).any()
    itself, start_ref = start_and_reference(x, EPS, lower, upper, True, B.rng(1), "start", B, "normal-clamped")
    np.testing.assert_array_equal(itself, draw)
    np.testing.assert_array_equal(start_ref, draw)
    np.testing.assert_array_equal(start_and_reference(x, EPS, lower, upper, False, None, "natural", B,
                                                      "normal")[0], x)


# --- the rules combined: the compacted loop against a masked full-batch one -----------------------
def masked(B, model, x, y, x_start, c_t, tau, loss, steps):
    """Every rule on the full batch with a mask V (the paper's x + V alpha sign(g)): FOSC from
    x_0 after a step, FAT's control at x^0 .. x^{K-1}, kappa over the iterates visited.
    Returns (x_adv, steps, kappa, fosc at x_adv, loss at x_adv)."""
    target = B.logits(model, B.asarray(x)) if loss == "kl" else None
    lower, upper = np.maximum(x - EPS, 0), np.minimum(x + EPS, 1)
    xk, V = x_start.copy(), np.ones(len(x), bool)
    taken, kappa, control = np.zeros(len(x), int), np.zeros(len(x), int), np.full(len(x), tau)
    c_at, l_at = np.zeros(len(x)), np.zeros(len(x))
    for k in range(steps + 1):
        losses, g, z = B.loss_and_grad(model, B.asarray(xk), B.asarray(y), loss, target=target,
                                       return_logits=True)
        g, c = _np(B, g), _np(B, fosc(B.asarray(xk), B.asarray(x), B.asarray(g), EPS))
        c_at, l_at = np.where(V, c, c_at), np.where(V, _np(B, losses), l_at)
        if k == steps:
            break
        wrong = _np(B, z).argmax(1) != y
        kappa += V & ~wrong
        stop = V & wrong & (control == 0)
        control -= V & wrong & ~stop
        if k > 0:
            stop |= V & (c <= c_t)
        xk = np.where(stop[:, None, None, None] & (k == 0), np.clip(xk, lower, upper), xk)
        V &= ~stop
        stepped = np.clip(xk + ALPHA * np.sign(g), lower, upper)
        xk = np.where(V[:, None, None, None], stepped, xk)
        taken += V
    return xk, taken, kappa, c_at, l_at


@pytest.mark.parametrize("name", ["numpy", "torch"])
@pytest.mark.parametrize("loss,start,tau", [("kl", "normal", 1), ("kl", "normal", 0), ("ce", "uniform", 1)])
def test_fosc_tau_and_kappa_together_equal_the_masked_loop(name, loss, start, tau):
    """FOSC-stopped TRADES (stop_fosc with loss="kl"), here also with FAT's tau and GAIRAT's
    kappa: the active-set loop (the clean logits, control and kappa narrowed with the batch)
    gives the masked computation's points, steps, kappa, FOSC and loss. Examples stopped at x^0
    return their start projected into the feasible box (x^0 of "normal" may lie outside)."""
    B, model, _, x, y = _setup(name, seed=4)
    probe = pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA, steps=K, loss=loss,
                start=start, rng=B.rng(6), trace=True, backend=B)
    c_t = float(np.median(np.nanmin(probe.trace.fosc[1:], axis=0)))
    out = pgd(model, B.asarray(x), B.asarray(y), eps=EPS, step_size=ALPHA, steps=K, loss=loss,
              start=start, stop_fosc=c_t, stop_tau=tau, kappa=True, final_stats=True,
              rng=B.rng(6), backend=B)
    lower, upper = feasible_box(x, EPS, (0.0, 1.0), get_backend("numpy", dtype="float64"))
    x_start, _ = start_and_reference(B.asarray(x), EPS, B.asarray(lower), B.asarray(upper), True,
                                     B.rng(6), "natural", B, start)
    xk, taken, kappa, c_at, l_at = masked(B, model, x, y, _np(B, x_start), c_t, tau, loss, K)
    np.testing.assert_array_equal(_np(B, out.steps), taken)
    np.testing.assert_allclose(_np(B, out.x_adv), xk, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(_np(B, out.kappa), kappa)
    np.testing.assert_allclose(_np(B, out.fosc), c_at, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_np(B, out.loss), l_at, rtol=1e-9, atol=1e-12)
    assert len(set(taken.tolist())) >= 3 and (taken < K).any() and (taken > 0).any()
    if tau == 0 and start == "normal":  # some stop at an x^0 outside the box
        assert ((taken == 0) & (_np(B, x_start) < 0).any(axis=(1, 2, 3))).any()
    assert out.grad_evals == int((taken + 1).sum())  # x^0 .. x^k, and x^K for final_stats
    assert out.forwards == (N if loss == "kl" else 0)
    assert ((_np(B, out.x_adv) >= lower - 1e-15) & (_np(B, out.x_adv) <= upper + 1e-15)).all()


# --- settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [dict(start="gaussian"), dict(stop_tau=-1), dict(stop_tau=1.5),
                                 dict(stop_tau=True), dict(stop_tau="2"), dict(omega=-0.1),
                                 dict(omega="0.1"), dict(omega=float("nan"))])
def test_bad_family_settings_are_refused(bad):
    B, model, _, x, y = _setup("numpy")
    with pytest.raises(ConfigError):
        pgd(model, x, y, eps=EPS, step_size=ALPHA, steps=2, backend=B, **bad)


class _OldProtocol:
    """A backend whose loss_and_grad takes only (model, x, y, loss), the protocol before issue 21."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss_and_grad(self, model, x, y, loss="ce"):
        return self.inner.loss_and_grad(model, x, y, loss)


@pytest.mark.parametrize("options", [dict(), dict(stop_fosc=0.5, final_stats=True), dict(trace=True),
                                     dict(fosc_reference="start", loss="cw")])
def test_the_old_calls_pass_the_backend_nothing_new(options):
    """Without the family's options pgd calls loss_and_grad(model, x, y, loss) exactly as before,
    so a backend written against the old protocol still runs it, with the same numbers."""
    B, model, _, x, y = _setup("numpy", seed=5)
    kw = dict(eps=EPS, step_size=ALPHA, steps=K, rng=B.rng(3), **options)
    old = pgd(model, x, y, backend=_OldProtocol(B), **kw)
    new = pgd(model, x, y, backend=B, **dict(kw, rng=B.rng(3)))
    np.testing.assert_array_equal(old.x_adv, new.x_adv)
    np.testing.assert_array_equal(old.steps, new.steps)
    assert old.kappa is None and old.forwards == 0
