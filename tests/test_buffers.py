"""The compiled kernels' cache of large arrays (zerodl/_kernels/_buffers.py): an array is
handed out again only once nobody else holds it, and a recycled array's old contents
never leak into a result."""
from __future__ import annotations


import numpy as np
import pytest

from zerodl._kernels import _buffers, _reference, table
from zerodl._kernels._buffers import MIN_BYTES

from conftest import run_python, subprocess_env

pytestmark = pytest.mark.skipif(not _buffers._refcounts_exact(),
                                reason="the cache is off without exact reference counts")

SHAPE = (MIN_BYTES // 4 // 256 + 1, 256)       # just over MIN_BYTES in float32


@pytest.fixture(autouse=True)
def fresh_cache():
    previous = _buffers.set_limit(64 * MIN_BYTES)
    _buffers.clear()
    yield
    _buffers.set_limit(previous)
    _buffers.clear()


def test_reused_only_when_nobody_holds_it():
    a = _buffers.empty(SHAPE, np.float32)
    address = a.ctypes.data
    b = _buffers.empty(SHAPE, np.float32)
    assert b.ctypes.data != address           # a is still held
    view = a[::2]
    del a
    c = _buffers.empty(SHAPE, np.float32)
    assert c.ctypes.data not in (address, b.ctypes.data)   # a view keeps a alive
    del view
    d = _buffers.empty(SHAPE, np.float32)
    assert d.ctypes.data == address
    assert _buffers.stats()["arrays"] == 3


def test_changes_to_an_output_stay_with_it():
    """Flags, shape and dtype set on a handed-out array, or a weak reference to it, do not
    reach the next caller: each caller gets its own view of the cached base."""
    import weakref
    a = _buffers.empty(SHAPE, np.float32)
    address = a.ctypes.data
    a.flags.writeable = False
    a.shape = SHAPE[::-1]
    a.dtype = np.int32
    ref = weakref.ref(a)
    del a
    assert ref() is None
    b = _buffers.empty(SHAPE, np.float32)
    assert b.ctypes.data == address
    assert b.shape == SHAPE and b.dtype == np.float32 and b.flags.writeable
    b.fill(2.0)


def test_a_base_changed_through_base_is_not_reused():
    a = _buffers.empty(SHAPE, np.float32)
    address = a.ctypes.data
    base = a.base
    del a
    assert _buffers.empty(SHAPE, np.float32).ctypes.data != address   # base still held
    base.flags.writeable = False
    del base
    c = _buffers.empty(SHAPE, np.float32)
    assert c.ctypes.data != address and c.flags.writeable


def test_held_results_never_change():
    a = _buffers.empty(SHAPE, np.float32)
    a.fill(1.0)
    for _ in range(5):
        _buffers.empty(SHAPE, np.float32).fill(np.nan)
    assert (a == 1.0).all()


def test_small_other_shape_and_dtype_are_separate():
    small = _buffers.empty((4, 4), np.float32)
    assert _buffers.stats()["arrays"] == 0 and small.shape == (4, 4)
    a = _buffers.empty(SHAPE, np.float32)
    address = a.ctypes.data
    del a
    assert _buffers.empty(SHAPE, np.float64).ctypes.data != address
    assert _buffers.empty(SHAPE[::-1], np.float32).ctypes.data != address
    e = _buffers.empty(SHAPE, np.float32)
    assert e.ctypes.data == address and e.dtype == np.float32 and e.shape == SHAPE


def test_limit_lets_the_oldest_go_and_zero_turns_it_off():
    _buffers.set_limit(3 * MIN_BYTES)
    held = [_buffers.empty(SHAPE, np.float32) for _ in range(4)]
    stats = _buffers.stats()
    assert stats["held_bytes"] <= 3 * MIN_BYTES and stats["arrays"] == 2
    _buffers.set_limit(0)
    assert _buffers.stats()["arrays"] == 0
    first = _buffers.empty(SHAPE, np.float32)
    address = first.ctypes.data
    del first
    assert _buffers.stats()["arrays"] == 0
    del held


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8"])
def test_set_limit_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="limit"):
        _buffers.set_limit(bad)


@pytest.mark.parametrize("value,ok", [("0", True), ("16.5", True), ("-2", False),
                                      ("lots", False), ("nan", False)])
def test_environment_variable(value, ok):
    code = ("from zerodl._kernels import _buffers; import json; "
            "print(json.dumps(_buffers.stats()['limit']))")
    proc = run_python(["-c", code], env=subprocess_env(ZERODL_BUFFER_CACHE_MB=value))
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert int(proc.stdout.strip().splitlines()[-1]) == int(float(value) * (1 << 20))
    else:
        assert proc.returncode != 0 and "ZERODL_BUFFER_CACHE_MB" in proc.stderr


def _poison_free_arrays():
    """Fill every cached array that nobody holds with NaN, so that a kernel that left
    part of a recycled output unwritten shows it."""
    poisoned = 0
    for bucket in _buffers._buckets.values():
        for entry in bucket:
            if _buffers._refcount(entry) == _buffers._ALONE:
                base = entry[0]
                base.fill(np.nan if base.dtype.kind == "f" else -1)
                poisoned += 1
    return poisoned


def _big_calls(rng):
    f = np.float32
    x2 = rng.standard_normal((600, 512)).astype(f)
    g, b = np.ones(512, f), np.zeros(512, f)
    img = rng.standard_normal((20, 8, 48, 48)).astype(f)
    W = (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(f)
    Wa = (rng.standard_normal((512, 600)) * 0.05).astype(f)
    cb = np.zeros(16, f)
    return [
        ("relu_forward", (x2,)),
        ("sigmoid_backward", (x2, x2)),
        ("batchnorm_forward_train", (x2, g, b, np.zeros(512, f), np.ones(512, f))),
        ("batchnorm_forward_infer", (x2, g, b, np.zeros(512, f), np.ones(512, f))),
        ("batchnorm_backward", (x2, x2, g, g)),
        ("affine_forward", (x2, Wa, np.zeros(600, f))),
        ("affine_backward", (rng.standard_normal((600, 600)).astype(f), x2, Wa)),
        ("affine_bn_relu_forward", (x2, Wa, np.zeros(600, f), np.ones(600, f),
                                    np.zeros(600, f), np.zeros(600, f), np.ones(600, f))),
        ("im2col", (img, 3, 3, 1, 1)),
        ("conv_forward", (img, W, cb, 1, 1)),
        ("conv_relu_pool_forward", (img, W, cb, 1, 1)),
        ("maxpool_forward", (rng.standard_normal((20, 16, 64, 64)).astype(f), 2, 2, 2, 0)),
    ] + _big_backward_calls(rng, x2, Wa, img, W, cb)


def _big_backward_calls(rng, x2, Wa, img, W, cb):
    """Backward kernels at sizes whose outputs or scratch come from the cache, with
    inputs made by the reference's forwards."""
    f = np.float32
    R = _reference
    ones, zeros = np.ones(600, f), np.zeros(600, f)
    out, xhat, inv_std = R.affine_bn_relu_forward(x2, Wa, zeros, ones, zeros, zeros.copy(),
                                                  ones.copy())
    conv_out, col = R.conv_forward(img, W, cb, 1, 1)
    pooled, col_p, argmax = R.conv_relu_pool_forward(img, W, cb, 1, 1)
    big = rng.standard_normal((20, 16, 64, 64)).astype(f)
    mp, mp_arg = R.maxpool_forward(big, 2, 2, 2, 0)
    mask = rng.random(x2.shape) > 0.5
    labels = rng.integers(0, x2.shape[1], x2.shape[0])
    return [
        ("affine_bn_relu_backward", (rng.standard_normal(out.shape).astype(f), out, xhat,
                                     ones, inv_std, x2, Wa)),
        ("conv_backward", (rng.standard_normal(conv_out.shape).astype(f), col, img.shape, W,
                           1, 1)),
        ("conv_relu_pool_backward", (rng.standard_normal(pooled.shape).astype(f), pooled,
                                     argmax, col_p, img.shape, W, 1, 1)),
        ("col2im", (rng.standard_normal(col.shape).astype(f), img.shape, 3, 3, 1, 1)),
        # unpadded: the sums go straight into the (cached) output planes
        ("col2im", (R.im2col(img, 3, 3, 1, 0), img.shape, 3, 3, 1, 0)),
        ("maxpool_backward", (rng.standard_normal(mp.shape).astype(f), mp_arg, big.shape,
                              2, 2, 2, 0)),
        ("avgpool_forward", (big, 2, 2, 2, 0)),
        ("avgpool_backward", (rng.standard_normal(mp.shape).astype(f), big.shape, 2, 2, 2, 0)),
        ("dropout_forward", (x2, mask, 2.0)),
        ("spatial_batchnorm_forward_train", (img, np.ones(8, f), np.zeros(8, f),
                                             np.zeros(8, f), np.ones(8, f))),
        ("spatial_batchnorm_forward_infer", (img, np.ones(8, f), np.zeros(8, f),
                                             np.zeros(8, f), np.ones(8, f))),
        ("spatial_batchnorm_backward", (img, img, np.ones(8, f), np.ones(8, f))),
        ("layernorm_forward", (x2, np.ones(512, f), np.zeros(512, f))),
        ("layernorm_backward", (x2, x2, np.ones(512, f), np.ones(600, f))),
        ("instancenorm_forward", (img, np.ones(8, f), np.zeros(8, f))),
        ("instancenorm_backward", (img, img, np.ones(8, f), np.ones((20, 8), f))),
        ("softmax_cross_entropy_forward", (x2, labels)),
        ("softmax_cross_entropy_backward", (R.softmax_cross_entropy_forward(x2, labels)[1],
                                            labels, 1.0)),
    ]


@pytest.mark.parametrize("index", range(30))
def test_recycled_outputs_are_fully_rewritten(index):
    """Run a kernel, drop its results, poison the cached arrays it gave back, run it
    again: the result is the reference's (stale contents would show as NaN)."""
    rng = np.random.default_rng(index)
    name, args = _big_calls(rng)[index]
    cy = table("cython")[name]
    ref = getattr(_reference, name)

    def fresh():   # running statistics are updated in place: new ones every call
        return [a.copy() if isinstance(a, np.ndarray) else a for a in args]

    cy(*fresh())
    assert _poison_free_arrays() >= 1, f"{name} took nothing from the cache"
    got = cy(*fresh())
    want = ref(*fresh())
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape
        if g.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-4)
        else:
            np.testing.assert_array_equal(g, w)


def test_public_limit_setter():
    import zerodl
    assert zerodl.set_buffer_cache_limit(0) == 64
    assert _buffers.stats()["limit"] == 0
    assert zerodl.set_buffer_cache_limit(2.5) == 0
    assert _buffers.stats()["limit"] == int(2.5 * (1 << 20))
    for bad in (-1, float("nan"), "3", None, True):
        with pytest.raises(ValueError, match="megabytes"):
            zerodl.set_buffer_cache_limit(bad)


def test_shapes_not_asked_for_lately_are_let_go():
    a = _buffers.empty(SHAPE, np.float32)
    del a
    assert _buffers.stats()["arrays"] == 1
    other = (SHAPE[0] + 1, SHAPE[1])
    for _ in range(_buffers.STALE_AFTER + 64):
        _buffers.empty(other, np.float32)
    stats = _buffers.stats()
    assert stats["arrays"] == 1 and stats["held_bytes"] == 4 * other[0] * other[1]
    assert set(_buffers._last_use) == set(_buffers._buckets)


def test_compiled_threshold_matches_the_cache():
    """_ndarray.pxd's new_array compares against 1 << 20 without calling Python: the
    cache's MIN_BYTES must be that number."""
    assert MIN_BYTES == 1 << 20
