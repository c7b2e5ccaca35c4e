"""PGD, FGSM and CW_inf on the backend protocol, and Algorithm 1's stopping rule."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minidyn import cw_inf, fgsm, fosc, pgd


def setup(B, n=12, seed=0, shape=(1, 4, 4), classes=3):
    rng = np.random.default_rng(seed)
    model = B.make_model("mlp", shape, classes, seed)
    x = rng.random((n,) + shape)
    y = rng.integers(0, classes, n)
    return model, B.asarray(x), B.asarray(y)


def c_t_between(B, model, x, y, eps, step, steps):
    """A FOSC target that some examples reach within `steps` and some do not."""
    tr = pgd(model, x, y, eps=eps, step_size=step, steps=steps, random_start=False,
             trace=True, backend=B).trace.fosc
    return float(np.median(tr[1:].min(axis=0)))


def masked_pgd(B, model, x, y, eps, step, steps, c_t):
    """The paper's literal update x <- clip(x + V * alpha * sign(g)) on the full batch, with
    V = 0 once FOSC <= c_t (checked after each step): the reference for compaction."""
    x0 = B.to_numpy(x)
    xk, V, taken = x0.copy(), np.ones(len(x0), bool), np.zeros(len(x0), int)
    evals = 0
    for k in range(steps + 1):
        losses, g = B.loss_and_grad(model, B.asarray(xk), y)
        evals += len(x0)
        c = B.to_numpy(fosc(B.asarray(xk), x, g, eps))
        if k > 0:
            V &= ~(c <= c_t)
        if k == steps or not V.any():
            return xk, c, taken, evals
        stepped = np.clip(np.clip(xk + step * np.sign(B.to_numpy(g)), x0 - eps, x0 + eps), 0, 1)
        xk = np.where(V.reshape((-1,) + (1,) * (xk.ndim - 1)), stepped, xk)
        taken += V


def test_compacted_equals_masked_full_batch(backend64):
    """Running only the active sub-batch gives exactly the masked computation, with fewer
    gradient evaluations."""
    B = backend64
    model, x, y = setup(B, n=16)
    eps, step, steps = 0.3, 0.05, 8
    c_t = c_t_between(B, model, x, y, eps, step, steps)
    res = pgd(model, x, y, eps=eps, step_size=step, steps=steps, random_start=False,
              stop_fosc=c_t, final_stats=True, backend=B)
    ref_x, ref_c, ref_steps, ref_evals = masked_pgd(B, model, x, y, eps, step, steps, c_t)
    np.testing.assert_array_equal(B.to_numpy(res.steps), ref_steps)
    np.testing.assert_allclose(B.to_numpy(res.x_adv), ref_x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(res.fosc), ref_c, rtol=1e-9, atol=1e-9)
    assert 0 < ref_steps.min() and ref_steps.min() < steps  # some stopped early
    assert res.grad_evals < ref_evals


def test_stopped_examples_never_move(backend64):
    """An example stopped after s steps sits exactly where s plain PGD steps put it."""
    B = backend64
    model, x, y = setup(B, n=16, seed=1)
    eps, step, steps = 0.3, 0.05, 8
    c_t = c_t_between(B, model, x, y, eps, step, steps)
    res = pgd(model, x, y, eps=eps, step_size=step, steps=steps, random_start=False,
              stop_fosc=c_t, final_stats=True, backend=B)
    taken, x_adv = B.to_numpy(res.steps), B.to_numpy(res.x_adv)
    for s in sorted(set(taken.tolist())):
        plain = pgd(model, x, y, eps=eps, step_size=step, steps=s, random_start=False,
                    final_stats=False, backend=B)
        rows = taken == s
        np.testing.assert_array_equal(x_adv[rows], B.to_numpy(plain.x_adv)[rows])
    assert np.all(B.to_numpy(res.fosc)[taken < steps] <= c_t)


def test_an_example_does_not_depend_on_its_batch(backend64):
    """Attacking a batch or each example alone gives the same adversarial examples."""
    B = backend64
    model, x, y = setup(B, n=6, seed=2)
    kw = dict(eps=0.3, step_size=0.05, steps=6, random_start=False, backend=B)
    c_t = c_t_between(B, model, x, y, 0.3, 0.05, 6)
    batch = pgd(model, x, y, stop_fosc=c_t, **kw)
    idx = B.to_numpy(B.arange(6))
    for i in idx:
        one = pgd(model, x[i:i + 1], y[i:i + 1], stop_fosc=c_t, **kw)
        np.testing.assert_allclose(B.to_numpy(one.x_adv)[0], B.to_numpy(batch.x_adv)[i], atol=1e-12)
        assert B.to_numpy(one.steps)[0] == B.to_numpy(batch.steps)[i]


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.01, 1.0), frac=st.floats(0.05, 2.0), steps=st.integers(1, 6),
       seed=st.integers(0, 2**31), loss=st.sampled_from(["ce", "cw"]))
def test_pgd_never_leaves_the_ball_or_the_pixel_box(backend, eps, frac, steps, seed, loss):
    B = backend
    model, x, y = setup(B, n=8, seed=seed % 1000)
    res = pgd(model, x, y, eps=eps, step_size=frac * eps, steps=steps, loss=loss,
              rng=B.rng(seed), backend=B)
    xa, x0 = B.to_numpy(res.x_adv), B.to_numpy(x)
    assert np.all(np.abs(xa - x0) <= eps + 1e-6)
    assert np.all((xa >= 0) & (xa <= 1))


def test_plain_pgd_costs_exactly_k_gradient_evaluations(backend):
    B = backend
    model, x, y = setup(B, n=10)
    plain = pgd(model, x, y, eps=0.3, step_size=0.075, steps=7, backend=B)  # nothing more asked for
    assert plain.grad_evals == 10 * 7 and plain.fosc is None and plain.loss is None
    stats = pgd(model, x, y, eps=0.3, step_size=0.075, steps=7, final_stats=True, backend=B)
    assert stats.grad_evals == 10 * 8  # plus the one at the final point, for FOSC and loss
    np.testing.assert_array_equal(B.to_numpy(stats.steps), 7)


def test_fgsm_is_one_signed_step_of_size_eps(backend):
    B = backend
    model, x, y = setup(B, n=5)
    _, g = B.loss_and_grad(model, x, y)
    expected = np.clip(B.to_numpy(x) + 0.2 * np.sign(B.to_numpy(g)), 0, 1)
    np.testing.assert_allclose(B.to_numpy(fgsm(model, x, y, eps=0.2, backend=B).x_adv), expected, atol=1e-6)


def test_pgd_increases_the_loss(backend):
    B = backend
    model, x, y = setup(B, n=32)
    clean, _ = B.loss_and_grad(model, x, y)
    res = pgd(model, x, y, eps=0.3, step_size=0.075, steps=10, rng=B.rng(0), final_stats=True, backend=B)
    assert B.to_numpy(res.loss).mean() > B.to_numpy(clean).mean()


def test_trace_records_every_point_and_stops_with_the_example(backend64):
    B = backend64
    model, x, y = setup(B, n=8, seed=3)
    c_t = c_t_between(B, model, x, y, 0.3, 0.05, 6)
    res = pgd(model, x, y, eps=0.3, step_size=0.05, steps=6, random_start=False, stop_fosc=c_t,
              trace=True, backend=B)
    taken = B.to_numpy(res.steps)
    for i, s in enumerate(taken):
        assert np.all(np.isfinite(res.trace.fosc[: s + 1, i]))
        assert np.all(np.isnan(res.trace.fosc[s + 1:, i]))
        assert res.trace.fosc[s, i] == pytest.approx(B.to_numpy(res.fosc)[i])


@pytest.mark.parametrize("bad", [dict(eps=-0.1), dict(eps=1.5), dict(step_size=0.0), dict(steps=0)])
def test_bad_attack_settings_are_refused(backend, bad):
    from minidyn.errors import ConfigError
    B = backend
    model, x, y = setup(B, n=2)
    kw = dict(eps=0.3, step_size=0.075, steps=3, backend=B) | bad
    with pytest.raises(ConfigError):
        pgd(model, x, y, **kw)


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "cw", "apgd"])
def test_every_attack_with_eps_0_returns_its_input(backend, attack):
    """The fact minidyn eval's eps-0 check relies on: a zero budget leaves x unchanged."""
    from minidyn.apgd import apgd
    B = backend
    model, x, y = setup(B, n=6)
    if attack == "pgd":
        out = pgd(model, x, y, eps=0.0, step_size=0.0, steps=5, rng=B.rng(1), backend=B).x_adv
    elif attack == "fgsm":
        out = fgsm(model, x, y, eps=0.0, backend=B).x_adv
    elif attack == "cw":
        out = cw_inf(model, x, y, eps=0.0, steps=5, rng=B.rng(1), backend=B).x_adv
    else:
        out = apgd(model, x, y, eps=0.0, steps=5, rng=B.rng(1), backend=B).x_best
    np.testing.assert_array_equal(B.to_numpy(out), B.to_numpy(x))


class CountingBackend:
    """A backend that counts the gathers (take) and scatters (put) made through it."""

    def __init__(self, inner):
        self.inner, self.takes, self.puts = inner, 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def take(self, a, idx):
        self.takes += 1
        return self.inner.take(a, idx)

    def put(self, a, idx, values):
        self.puts += 1
        return self.inner.put(a, idx, values)


@pytest.mark.parametrize("options", [dict(), dict(final_stats=True), dict(trace=True),
                                     dict(stop_fosc=-1.0, final_stats=True)])
def test_no_gather_or_scatter_while_every_example_is_active(backend, options):
    """The performance property of the active set: compaction costs nothing until a row stops
    (stop_fosc=-1 checks FOSC after every step, and no example reaches it)."""
    counting = CountingBackend(backend)
    model, x, y = setup(backend, n=8)
    res = pgd(model, x, y, eps=0.3, step_size=0.075, steps=5, backend=counting, **options)
    assert (counting.takes, counting.puts) == (0, 0)
    np.testing.assert_array_equal(backend.to_numpy(res.steps), 5)
    c_t = c_t_between(backend, model, x, y, 0.3, 0.075, 5)  # now some stop: the rows are gathered
    pgd(model, x, y, eps=0.3, step_size=0.075, steps=5, random_start=False, stop_fosc=c_t,
        backend=counting)
    assert counting.takes > 0 and counting.puts > 0


class FoscCountingBackend(CountingBackend):
    """A backend that counts the per-example sums made through it (FOSC's Eq. 4 takes two)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.sums = 0

    def sum_per_example(self, a):
        self.sums += 1
        return self.inner.sum_per_example(a)


@pytest.mark.parametrize("options", [dict(final_stats=True), dict(trace=True), dict(stop_fosc=-1.0)])
def test_pgd_measures_fosc_on_the_backend_it_is_given(backend, options):
    """FOSC inside the attack runs on the attack's backend, not on a default one looked up from
    the array's type (which may be configured differently: dtype, device, attack mode)."""
    counting = FoscCountingBackend(backend)
    model, x, y = setup(backend, n=8)
    pgd(model, x, y, eps=0.3, step_size=0.075, steps=3, backend=counting, **options)
    assert counting.sums > 0


def test_active_set_writes_every_active_row_and_keeps_the_rows_that_go_on(backend):
    from dataclasses import dataclass

    from minidyn.active import ActiveSet

    @dataclass
    class Out:
        v: object = None
        steps: object = None

    @dataclass
    class Rows:
        a: object
        b: object

    B = backend
    active, out = ActiveSet(B, 5), Out()
    values = B.asarray(np.arange(5.0))
    active.write(out, v=values, steps=0)
    assert out.v is values and len(active) == 5 and active.host_index() == slice(None)
    rows = Rows(B.asarray(np.arange(5.0) * 10), B.asarray(np.arange(5)))
    kept, rows = active.keep(B.asarray(np.array([1, 3, 4])), values, rows)
    np.testing.assert_array_equal(B.to_numpy(kept), [1, 3, 4])
    np.testing.assert_array_equal(B.to_numpy(rows.a), [10, 30, 40])
    active.write(out, v=kept * -1, steps=2)
    np.testing.assert_array_equal(B.to_numpy(out.v), [0, -1, 2, -3, -4])
    (rows,) = active.keep(B.asarray(np.array([2])), rows)  # positions in the active set
    np.testing.assert_array_equal(active.host_index(), [4])
    np.testing.assert_array_equal(B.to_numpy(rows.b), [4])
    active.write(out, steps=7)
    np.testing.assert_array_equal(B.to_numpy(out.steps), [0, 2, 0, 2, 7])
    active.keep(B.asarray(np.array([], dtype=np.int64)))
    active.write(out, v=B.asarray(np.zeros(0)), steps=9)  # nothing left: nothing written
    assert len(active) == 0
    np.testing.assert_array_equal(B.to_numpy(out.steps), [0, 2, 0, 2, 7])


def test_the_random_start_is_uniform_in_the_ball_then_projected(backend):
    from minidyn.attacks import start_point
    from minidyn.projection import feasible_box
    B = backend
    _, x, _ = setup(B, n=6)
    lower, upper = feasible_box(x, 0.3, (0.0, 1.0), B)
    start = start_point(x, 0.3, lower, upper, True, None, B)  # the default generator: seed 0
    noise = B.uniform(B.rng(0), tuple(x.shape), -0.3, 0.3)
    np.testing.assert_array_equal(B.to_numpy(start), B.to_numpy(B.clip(x + noise, lower, upper)))
    np.testing.assert_array_equal(B.to_numpy(start_point(x, 0.3, lower, upper, False, None, B)),
                                  B.to_numpy(x))
