"""FOSC (Eq. 4) against its definition (Eq. 3) and its stated properties."""
import itertools

import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from minidyn import fosc

finite = st.floats(-10, 10, allow_nan=False, width=64)
unit = st.floats(0, 1, allow_nan=False, width=64)
eps_st = st.floats(0.01, 1.0)


@st.composite
def problem(draw, max_d=8, max_b=3):
    """(x_k, x_0, g, eps) with x_k in the eps-ball around x_0 (inside [0, 1]^d)."""
    b, d = draw(st.integers(1, max_b)), draw(st.integers(1, max_d))
    eps = draw(eps_st)
    x0 = draw(arrays(np.float64, (b, d), elements=unit))
    u = draw(arrays(np.float64, (b, d), elements=st.floats(-1, 1)))
    g = draw(arrays(np.float64, (b, d), elements=finite))
    return x0 + eps * u, x0, g, eps


def brute_force(xk, x0, g, eps, lo=-np.inf, hi=np.inf):
    """max over every vertex of the (clipped) box of <x - x_k, g>: the definition, Eq. 3."""
    b, d = xk.shape
    best = np.full(b, -np.inf)
    for signs in itertools.product((-1.0, 1.0), repeat=d):
        v = np.clip(x0 + eps * np.array(signs), lo, hi)
        best = np.maximum(best, ((v - xk) * g).sum(axis=1))
    return best


@settings(max_examples=60, deadline=None)
@given(problem())
def test_closed_form_is_the_max_over_all_vertices(backend64, p):
    """A linear function on a box is maximised at one of its 2^d vertices; Eq. 4 is that max."""
    xk, x0, g, eps = p
    B = backend64
    c = B.to_numpy(fosc(B.asarray(xk), B.asarray(x0), B.asarray(g), eps))
    np.testing.assert_allclose(c, brute_force(xk, x0, g, eps), rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(problem())
def test_clipped_variant_is_the_max_over_the_clipped_box(backend64, p):
    """With bounds=(0, 1) FOSC is the max over the ball intersected with [0, 1]^d, so it is
    the brute-force max over that box's vertices and never exceeds the paper's value."""
    xk, x0, g, eps = p
    xk = np.clip(xk, 0, 1)
    B = backend64
    args = (B.asarray(xk), B.asarray(x0), B.asarray(g), eps)
    clipped = B.to_numpy(fosc(*args, bounds=(0.0, 1.0)))
    np.testing.assert_allclose(clipped, brute_force(xk, x0, g, eps, 0.0, 1.0), rtol=1e-9, atol=1e-9)
    assert np.all(clipped <= B.to_numpy(fosc(*args)) + 1e-9)


@settings(max_examples=100, deadline=None)
@given(problem(max_d=64, max_b=4))
def test_fosc_is_non_negative_inside_the_ball(backend64, p):
    """x_k itself is feasible, so the max over the ball of <x - x_k, g> is at least 0."""
    xk, x0, g, eps = p
    B = backend64
    c = B.to_numpy(fosc(B.asarray(xk), B.asarray(x0), B.asarray(g), eps))
    assert np.all(c >= -1e-9 * (1 + np.abs(g).sum(axis=1)))


@settings(max_examples=60, deadline=None)
@given(problem(max_d=64, max_b=4))
def test_fosc_is_zero_at_the_maximising_vertex(backend64, p):
    """At x_k = x_0 + eps * sign(g) no feasible direction increases the linearised loss."""
    _, x0, g, eps = p
    B = backend64
    xk = x0 + eps * np.sign(g)
    c = B.to_numpy(fosc(B.asarray(xk), B.asarray(x0), B.asarray(g), eps))
    np.testing.assert_allclose(c, 0.0, atol=1e-9 * (1 + np.abs(g).sum()))


@settings(max_examples=60, deadline=None)
@given(problem(max_d=32), st.floats(1e-3, 1e3), st.integers(1, 512))
def test_fosc_scales_linearly_with_the_gradient(backend64, p, a, batch):
    """c is linear in g: scaling g by a > 0 scales c by a, and the gradient of a batch-mean
    loss (each row divided by the batch size B) gives exactly 1/B of the per-example FOSC."""
    xk, x0, g, eps = p
    B = backend64
    c = B.to_numpy(fosc(B.asarray(xk), B.asarray(x0), B.asarray(g), eps))
    scaled = B.to_numpy(fosc(B.asarray(xk), B.asarray(x0), B.asarray(a * g), eps))
    mean = B.to_numpy(fosc(B.asarray(xk), B.asarray(x0), B.asarray(g / batch), eps))
    tol = 1e-9 * (1 + np.abs(g).sum(axis=1))
    np.testing.assert_allclose(scaled, a * c, rtol=1e-9, atol=a * tol.max())
    np.testing.assert_allclose(mean, c / batch, rtol=1e-9, atol=tol.max())


def test_fosc_of_image_batches_reduces_over_all_pixel_axes(backend):
    """(B, C, H, W) inputs give one value per example, equal to the flattened computation."""
    rng = np.random.default_rng(0)
    x0 = rng.random((3, 1, 4, 4)).astype(np.float32)
    xk = np.clip(x0 + rng.uniform(-0.1, 0.1, x0.shape), 0, 1).astype(np.float32)
    g = rng.normal(size=x0.shape).astype(np.float32)
    B = backend
    c = B.to_numpy(fosc(B.asarray(xk), B.asarray(x0), B.asarray(g), 0.1))
    flat = 0.1 * np.abs(g).reshape(3, -1).sum(1) - ((xk - x0) * g).reshape(3, -1).sum(1)
    assert c.shape == (3,)
    np.testing.assert_allclose(c, flat, rtol=1e-5, atol=1e-5)
