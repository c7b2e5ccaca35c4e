"""CIFAR augmentation: each output image is a crop of the zero-padded input, maybe flipped."""
import numpy as np
from hypothesis import given, settings, strategies as st


def crops(img, pad):
    """Every image the augmentation may produce from img (C, H, W)."""
    c, h, w = img.shape
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            yield crop
            yield crop[:, :, ::-1]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), pad=st.integers(1, 4), n=st.integers(1, 6))
def test_each_output_is_a_padded_crop_or_its_mirror(backend, seed, pad, n):
    B = backend
    x = np.random.default_rng(seed).random((n, 2, 6, 7)).astype(np.float32)
    out = B.to_numpy(B.crop_flip(B.asarray(x), B.rng(seed), pad=pad))
    assert out.shape == x.shape
    for img, aug in zip(x, out):
        assert any(np.array_equal(aug, c) for c in crops(img, pad))


def test_offsets_and_flips_vary_across_examples(backend):
    B = backend
    x = np.tile(np.arange(32 * 32, dtype=np.float32).reshape(1, 1, 32, 32), (256, 1, 1, 1))
    out = B.to_numpy(B.crop_flip(B.asarray(x), B.rng(0)))
    distinct = {o.tobytes() for o in out}
    assert len(distinct) > 50  # 81 offsets x 2 flips possible
