"""Dropout with a given boolean mask, compiled: out = x * mask * scale in one pass."""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange

cimport numpy as cnp

from zerodl._kernels import _checks as chk
from zerodl._kernels._ndarray cimport (contiguous, empty_like, is_array_of, is_float_array,
                                      same_shape)
from zerodl._kernels._util cimport part_start, work_threads, zd_mask_scale_f32, zd_mask_scale_f64

cnp.import_array()

# Elements per thread below which the loop stays on one thread (memory-bound loop).
cdef Py_ssize_t MIN_WORK = 1 << 16



cdef void _masked_scale(const floating* x, const unsigned char* mask, floating scale,
                        floating* out, Py_ssize_t n) noexcept nogil:
    # mask ? x * scale : 0.  x * 1 == x exactly, so scale == 1 needs no separate loop.
    if floating is float:
        zd_mask_scale_f32(x, mask, scale, out, n)
    else:
        zd_mask_scale_f64(x, mask, scale, out, n)


cdef void _run(const floating* xp, const unsigned char* mp, double scale, floating* op,
               Py_ssize_t n, int nt) noexcept nogil:
    cdef Py_ssize_t lo, hi
    cdef int t
    if n == 0:
        return
    if nt <= 1:
        _masked_scale(xp, mp, <floating>scale, op, n)
        return
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = part_start(n, nt, t)
        hi = part_start(n, nt, t + 1)
        _masked_scale(xp + lo, mp + lo, <floating>scale, op + lo, hi - lo)


cdef object _apply(str name, x, mask, scale):
    # The common case (a native float array, a bool mask of its shape) is recognised in
    # C; anything else goes through the checks, which raise the reference's errors.
    if not (is_float_array(x) and is_array_of(mask, cnp.NPY_BOOL) and same_shape(x, mask)):
        chk.float_array(name, x)
        chk.mask("mask", mask, x.shape)
    scale = chk.real("scale", scale)
    cdef cnp.ndarray xc = contiguous(x)
    # numpy bools are bytes holding 0 or 1.
    cdef cnp.ndarray mc = contiguous(mask)
    cdef cnp.ndarray out = empty_like(xc)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(xc)
    cdef int nt = work_threads(n, MIN_WORK)
    cdef const unsigned char* mp = <const unsigned char*>cnp.PyArray_DATA(mc)
    if cnp.PyArray_TYPE(xc) == cnp.NPY_FLOAT:
        _run[float](<float*>cnp.PyArray_DATA(xc), mp, scale, <float*>cnp.PyArray_DATA(out),
                    n, nt)
    else:
        _run[double](<double*>cnp.PyArray_DATA(xc), mp, scale,
                     <double*>cnp.PyArray_DATA(out), n, nt)
    return out


def dropout_forward(x, mask, scale=1.0):
    """out = x * mask * scale (mask: bool, same shape)."""
    return _apply("x", x, mask, scale)


def dropout_backward(dout, mask, scale=1.0):
    """dx = dout * mask * scale."""
    return _apply("dout", dout, mask, scale)
