"""Dropout with a given boolean mask, compiled: out = x * mask * scale in one pass."""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange

from zerodl._kernels import _checks as chk
from zerodl._kernels._util cimport part_start, work_threads, zd_mask_scale_f32, zd_mask_scale_f64

# Elements per thread below which the loop stays on one thread (memory-bound loop).
cdef Py_ssize_t MIN_WORK = 1 << 16



cdef void _masked_scale(const floating* x, const unsigned char* mask, floating scale,
                        floating* out, Py_ssize_t n) noexcept nogil:
    # mask ? x * scale : 0.  x * 1 == x exactly, so scale == 1 needs no separate loop.
    if floating is float:
        zd_mask_scale_f32(x, mask, scale, out, n)
    else:
        zd_mask_scale_f64(x, mask, scale, out, n)


cdef void _run(const floating[::1] x, const unsigned char[::1] mask, double scale,
               floating[::1] out, int nt) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], lo, hi
    cdef int t
    if n == 0:
        return
    cdef const floating* xp = &x[0]
    cdef const unsigned char* mp = &mask[0]
    cdef floating* op = &out[0]
    if nt <= 1:
        _masked_scale(xp, mp, <floating>scale, op, n)
        return
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = part_start(n, nt, t)
        hi = part_start(n, nt, t + 1)
        _masked_scale(xp + lo, mp + lo, <floating>scale, op + lo, hi - lo)


cdef object _apply(str name, x, mask, scale):
    chk.float_array(name, x)
    chk.mask("mask", mask, x.shape)
    scale = chk.real("scale", scale)
    shape = x.shape
    x = np.ascontiguousarray(x)
    # numpy bools are bytes holding 0 or 1.
    m = np.ascontiguousarray(mask).view(np.uint8)
    out = np.empty(shape, dtype=x.dtype)
    cdef int nt = work_threads(x.size, MIN_WORK)
    if x.dtype == np.float32:
        _run[float](x.reshape(-1), m.reshape(-1), scale, out.reshape(-1), nt)
    else:
        _run[double](x.reshape(-1), m.reshape(-1), scale, out.reshape(-1), nt)
    return out


def dropout_forward(x, mask, scale=1.0):
    """out = x * mask * scale (mask: bool, same shape)."""
    return _apply("x", x, mask, scale)


def dropout_backward(dout, mask, scale=1.0):
    """dx = dout * mask * scale."""
    return _apply("dout", dout, mask, scale)
