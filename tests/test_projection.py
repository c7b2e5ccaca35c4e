"""Projection onto the eps-ball around x0 intersected with [0, 1]^d."""
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from minidyn import project
from minidyn.projection import feasible_box


@st.composite
def points(draw):
    b, d = draw(st.integers(1, 4)), draw(st.integers(1, 32))
    x0 = draw(arrays(np.float64, (b, d), elements=st.floats(0, 1)))
    x = draw(arrays(np.float64, (b, d), elements=st.floats(-3, 3)))
    return x, x0, draw(st.floats(1e-3, 1.0))


@settings(max_examples=100, deadline=None)
@given(points())
def test_projection_lands_in_the_ball_and_the_pixel_box(backend64, p):
    x, x0, eps = p
    B = backend64
    z = B.to_numpy(project(B.asarray(x), B.asarray(x0), eps))
    assert np.all(np.abs(z - x0) <= eps + 1e-12)
    assert np.all((z >= 0) & (z <= 1))


@settings(max_examples=100, deadline=None)
@given(points())
def test_projection_is_idempotent(backend64, p):
    """Projecting a projected point leaves it where it is."""
    x, x0, eps = p
    B = backend64
    z = project(B.asarray(x), B.asarray(x0), eps)
    np.testing.assert_array_equal(B.to_numpy(project(z, B.asarray(x0), eps)), B.to_numpy(z))


@settings(max_examples=100, deadline=None)
@given(points(), st.integers(0, 2**32 - 1))
def test_projection_is_the_nearest_feasible_point(backend64, p, seed):
    """The feasible set is the box [max(x0-eps, 0), min(x0+eps, 1)]: the projection is that
    coordinate-wise clip, and no feasible point is closer to x."""
    x, x0, eps = p
    B = backend64
    z = B.to_numpy(project(B.asarray(x), B.asarray(x0), eps))
    lo, hi = np.maximum(x0 - eps, 0), np.minimum(x0 + eps, 1)
    np.testing.assert_allclose(z, np.clip(x, lo, hi), rtol=0, atol=1e-12)
    feasible = np.random.default_rng(seed).uniform(lo, hi, size=(16,) + x.shape)
    dz = np.linalg.norm((z - x).reshape(len(x), -1), axis=1)
    df = np.linalg.norm((feasible - x).reshape(16, len(x), -1), axis=2)
    assert np.all(dz <= df.min(axis=0) + 1e-12)


@settings(max_examples=100, deadline=None)
@given(points())
def test_feasible_box_is_the_ball_cut_by_the_pixel_box(backend64, p):
    """For x0 in [0, 1]^d: lower = max(x0 - eps, 0) <= x0 <= upper = min(x0 + eps, 1), and
    clipping into [lower, upper] is the projection."""
    x, x0, eps = p
    B = backend64
    lower, upper = (B.to_numpy(a) for a in feasible_box(B.asarray(x0), eps, backend=B))
    np.testing.assert_allclose(lower, np.maximum(x0 - eps, 0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(upper, np.minimum(x0 + eps, 1), rtol=0, atol=1e-15)
    assert np.all((lower <= x0) & (x0 <= upper))
    np.testing.assert_array_equal(np.clip(x, lower, upper),
                                  B.to_numpy(project(B.asarray(x), B.asarray(x0), eps)))
