"""Compiled max and average pooling: the same functions as ``_reference``.

Each ``def`` checks its arguments with :mod:`._checks` in the reference's order, makes its
inputs C-contiguous once, allocates the outputs in the input's dtype and then runs one
``nogil`` loop over the (n, c) planes, split over OpenMP threads for large calls; each
thread writes only planes it owns, so the backward scatters need no atomics.

Conventions (the reference's): windows start at oy*stride - pad; for max pooling the
padding counts as -inf and argmax is the index fy*pool_w + fx of the first maximum
inside the window (a NaN counts as the maximum, as in numpy.argmax); average pooling
divides by pool_h*pool_w, the padded zeros included.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

import numpy as np

from zerodl._kernels import _checks as chk
from zerodl._kernels._buffers import empty as _empty
from zerodl._kernels._conv_helpers cimport task_threads
from zerodl._kernels._ndarray cimport data_of
from zerodl._kernels._pool_helpers cimport (max_back_plane, max_plane, window_hi,
                                           window_inside, window_lo, zd_dcheck)
# The reference's own argument checks, so that both backends fail alike.
from zerodl._kernels._reference import _pool_back_setup, _pool_setup

cnp.import_array()


cdef inline double _window_sum(const floating* x, Py_ssize_t w, Py_ssize_t y0,
                               Py_ssize_t x0, Py_ssize_t fy_lo, Py_ssize_t fy_hi,
                               Py_ssize_t fx_lo, Py_ssize_t fx_hi) noexcept nogil:
    """Sum of the window inside the plane (rows of w), in float64 (padding adds zeros)."""
    cdef Py_ssize_t fy, fx
    cdef double acc = 0
    for fy in range(fy_lo, fy_hi):
        for fx in range(fx_lo, fx_hi):
            acc = acc + x[(y0 + fy) * w + x0 + fx]
    return acc


cdef inline void _window_add(floating* dx, Py_ssize_t w, Py_ssize_t y0, Py_ssize_t x0,
                             Py_ssize_t fy_lo, Py_ssize_t fy_hi, Py_ssize_t fx_lo,
                             Py_ssize_t fx_hi, floating g) noexcept nogil:
    """dx += g over the window inside the plane (rows of w)."""
    cdef Py_ssize_t fy, fx
    for fy in range(fy_lo, fy_hi):
        for fx in range(fx_lo, fx_hi):
            dx[(y0 + fy) * w + x0 + fx] = dx[(y0 + fy) * w + x0 + fx] + g


# ---------------------------------------------------------------- one plane
# Planes are passed as pointers with their sizes: a typed-memoryview slice per plane
# (a struct copy and an atomic reference count each) cost more than a small plane's work.

cdef inline void _avg_plane(const floating* x, Py_ssize_t h, Py_ssize_t w, floating* out,
                            Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ph, Py_ssize_t pw,
                            Py_ssize_t s, Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t oy, ox, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi
    cdef double acc, count = <double> (ph * pw)
    for oy in range(oh):
        y0 = oy * s - p
        fy_lo = window_lo(y0)
        fy_hi = window_hi(y0, h, ph)
        for ox in range(ow):
            x0 = ox * s - p
            fx_lo = window_lo(x0)
            fx_hi = window_hi(x0, w, pw)
            zd_dcheck(window_inside(y0, x0, fy_lo, fy_hi, fx_lo, fx_hi, h, w))
            if fy_lo == 0 and fy_hi == ph and fx_lo == 0 and fx_hi == pw:
                acc = _window_sum(x, w, y0, x0, 0, ph, 0, pw)
            else:
                acc = _window_sum(x, w, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi)
            out[oy * ow + ox] = <floating> (acc / count)


cdef inline void _avg_back_plane(const floating* dout, Py_ssize_t oh, Py_ssize_t ow,
                                 floating* dx, Py_ssize_t h, Py_ssize_t w, Py_ssize_t ph,
                                 Py_ssize_t pw, Py_ssize_t s, Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t oy, ox, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi
    cdef floating g, count = <floating> (ph * pw)
    memset(dx, 0, h * w * sizeof(floating))
    for oy in range(oh):
        y0 = oy * s - p
        fy_lo = window_lo(y0)
        fy_hi = window_hi(y0, h, ph)
        for ox in range(ow):
            x0 = ox * s - p
            fx_lo = window_lo(x0)
            fx_hi = window_hi(x0, w, pw)
            zd_dcheck(window_inside(y0, x0, fy_lo, fy_hi, fx_lo, fx_hi, h, w))
            # The reference divides in the array's dtype before scattering.
            g = dout[oy * ow + ox] / count
            if fy_lo == 0 and fy_hi == ph and fx_lo == 0 and fx_hi == pw:
                _window_add(dx, w, y0, x0, 0, ph, 0, pw, g)
            else:
                _window_add(dx, w, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi, g)


# ---------------------------------------------------------------- parallel loops over planes
# One task per (n, c) plane.  2x2 and 3x3 windows get calls with constant sizes, for the
# compiler to unroll.

cdef void _max_run(const floating* x, floating* out, Py_ssize_t* arg, Py_ssize_t planes,
                   Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ph,
                   Py_ssize_t pw, Py_ssize_t s, Py_ssize_t p, int nt) noexcept nogil:
    cdef Py_ssize_t t, oa = oh * ow, ia = h * w
    for t in prange(planes, num_threads=nt, schedule="guided"):
        if ph == 2 and pw == 2:
            max_plane(x + t * ia, h, w, out + t * oa, arg + t * oa, oh, ow, 2, 2, s, p)
        elif ph == 3 and pw == 3:
            max_plane(x + t * ia, h, w, out + t * oa, arg + t * oa, oh, ow, 3, 3, s, p)
        else:
            max_plane(x + t * ia, h, w, out + t * oa, arg + t * oa, oh, ow, ph, pw, s, p)


cdef void _max_back_run(const floating* dout, const Py_ssize_t* arg, floating* dx,
                        Py_ssize_t planes, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t h,
                        Py_ssize_t w, Py_ssize_t pw, Py_ssize_t s, Py_ssize_t p,
                        int nt) noexcept nogil:
    cdef Py_ssize_t t, oa = oh * ow, ia = h * w
    for t in prange(planes, num_threads=nt, schedule="guided"):
        # constant window widths: idx // pw and idx % pw without a division
        if pw == 2:
            max_back_plane(dout + t * oa, arg + t * oa, dx + t * ia, oh, ow, h, w, 2, s, p)
        elif pw == 3:
            max_back_plane(dout + t * oa, arg + t * oa, dx + t * ia, oh, ow, h, w, 3, s, p)
        else:
            max_back_plane(dout + t * oa, arg + t * oa, dx + t * ia, oh, ow, h, w, pw, s, p)


cdef inline void _avg_plane_either(const floating* src, floating* dst, Py_ssize_t h,
                                   Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ph,
                                   Py_ssize_t pw, Py_ssize_t s, Py_ssize_t p,
                                   bint backward) noexcept nogil:
    if backward:
        _avg_back_plane(src, oh, ow, dst, h, w, ph, pw, s, p)
    else:
        _avg_plane(src, h, w, dst, oh, ow, ph, pw, s, p)


cdef void _avg_run(const floating* src, floating* dst, Py_ssize_t planes, Py_ssize_t h,
                   Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ph, Py_ssize_t pw,
                   Py_ssize_t s, Py_ssize_t p, bint backward, int nt) noexcept nogil:
    """Average pooling of (h, w) planes src into (oh, ow) planes dst; with backward, its
    gradient: (oh, ow) planes of dout (src) spread over (h, w) planes of dx (dst)."""
    cdef Py_ssize_t t, oa = oh * ow, ia = h * w
    cdef Py_ssize_t sa = oa if backward else ia, da = ia if backward else oa
    for t in prange(planes, num_threads=nt, schedule="guided"):
        if ph == 2 and pw == 2:
            _avg_plane_either(src + t * sa, dst + t * da, h, w, oh, ow, 2, 2, s, p, backward)
        elif ph == 3 and pw == 3:
            _avg_plane_either(src + t * sa, dst + t * da, h, w, oh, ow, 3, 3, s, p, backward)
        else:
            _avg_plane_either(src + t * sa, dst + t * da, h, w, oh, ow, ph, pw, s, p,
                              backward)


# ---------------------------------------------------------------- kernels

def maxpool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Max pooling; padding counts as -inf.  Returns (out, argmax) with argmax the
    position of the maximum inside its window (fy*pool_w + fx, first one on ties)."""
    cdef Py_ssize_t n, c, h, w, ph, pw, s, p, oh, ow
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_setup(x, pool_h, pool_w, stride, pad)
    x = np.ascontiguousarray(x)
    out = _empty((n, c, oh, ow), x.dtype)
    argmax = _empty((n, c, oh, ow), np.intp)
    cdef void* xp = data_of(x)
    cdef void* op = data_of(out)
    cdef Py_ssize_t* ap = <Py_ssize_t*> data_of(argmax)
    cdef bint f32 = x.dtype == np.float32
    cdef int nt
    if out.size:
        nt = task_threads(x.size + out.size, n * c)
        with nogil:
            if f32:
                _max_run[float](<float*> xp, <float*> op, ap, n * c, h, w, oh, ow, ph, pw, s,
                                p, nt)
            else:
                _max_run[double](<double*> xp, <double*> op, ap, n * c, h, w, oh, ow, ph, pw,
                                 s, p, nt)
    return out, argmax


def maxpool_backward(dout, argmax, input_shape, pool_h, pool_w, stride=2, pad=0):
    cdef Py_ssize_t n, c, h, w, ph, pw, s, p, oh, ow
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_back_setup(dout, input_shape, pool_h, pool_w,
                                                         stride, pad)
    chk.pool_argmax("argmax", argmax, dout.shape, ph * pw)
    dout = np.ascontiguousarray(dout)
    # In range now, so any integer dtype converts to intp exactly.
    argmax = np.ascontiguousarray(argmax, dtype=np.intp)
    dx = _empty((n, c, h, w), dout.dtype)
    cdef void* dp = data_of(dout)
    cdef Py_ssize_t* ap = <Py_ssize_t*> data_of(argmax)
    cdef void* xp = data_of(dx)
    cdef bint f32 = dout.dtype == np.float32
    cdef int nt
    if dx.size:
        nt = task_threads(dx.size + dout.size, n * c)
        with nogil:
            if f32:
                _max_back_run[float](<float*> dp, ap, <float*> xp, n * c, oh, ow, h, w, pw,
                                     s, p, nt)
            else:
                _max_back_run[double](<double*> dp, ap, <double*> xp, n * c, oh, ow, h, w,
                                      pw, s, p, nt)
    return dx


cdef object _average(src, dst, Py_ssize_t planes, Py_ssize_t h, Py_ssize_t w,
                     Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t s,
                     Py_ssize_t p, bint backward):
    """_avg_run from the contiguous array src into dst, the output the caller allocated
    (x into out, or with backward dout into dx); returns dst."""
    cdef void* sp = data_of(src)
    cdef void* dp = data_of(dst)
    cdef bint f32 = src.dtype == np.float32
    cdef int nt
    if dst.size:
        nt = task_threads(src.size + dst.size, planes)
        with nogil:
            if f32:
                _avg_run[float](<float*> sp, <float*> dp, planes, h, w, oh, ow, ph, pw, s, p,
                                backward, nt)
            else:
                _avg_run[double](<double*> sp, <double*> dp, planes, h, w, oh, ow, ph, pw, s,
                                 p, backward, nt)
    return dst


def avgpool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Average pooling; padded zeros count in the average (a fixed divisor ph*pw)."""
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_setup(x, pool_h, pool_w, stride, pad)
    x = np.ascontiguousarray(x)
    return _average(x, _empty((n, c, oh, ow), x.dtype), n * c, h, w, oh, ow, ph, pw, s, p,
                    False)


def avgpool_backward(dout, input_shape, pool_h, pool_w, stride=2, pad=0):
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_back_setup(dout, input_shape, pool_h, pool_w,
                                                         stride, pad)
    dout = np.ascontiguousarray(dout)
    return _average(dout, _empty((n, c, h, w), dout.dtype), n * c, h, w, oh, ow, ph, pw, s,
                    p, True)
