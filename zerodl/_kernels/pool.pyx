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
from cython cimport floating
from cython.parallel cimport prange

import numpy as np

from zerodl._kernels import _checks as chk
from zerodl._kernels._buffers import empty as _empty
from zerodl._kernels._conv_helpers cimport task_threads
from zerodl._kernels._pool_helpers cimport (max_back_plane, max_plane, window_hi,
                                           window_lo)
# The reference's own argument checks, so that both backends fail alike.
from zerodl._kernels._reference import _pool_back_setup, _pool_setup


cdef inline double _window_sum(const floating[:, ::1] x, Py_ssize_t y0, Py_ssize_t x0,
                               Py_ssize_t fy_lo, Py_ssize_t fy_hi, Py_ssize_t fx_lo,
                               Py_ssize_t fx_hi) noexcept nogil:
    """Sum of the window inside the plane, in float64 (padding adds zeros)."""
    cdef Py_ssize_t fy, fx
    cdef double acc = 0
    for fy in range(fy_lo, fy_hi):
        for fx in range(fx_lo, fx_hi):
            acc = acc + x[y0 + fy, x0 + fx]
    return acc


cdef inline void _window_add(floating[:, ::1] dx, Py_ssize_t y0, Py_ssize_t x0,
                             Py_ssize_t fy_lo, Py_ssize_t fy_hi, Py_ssize_t fx_lo,
                             Py_ssize_t fx_hi, floating g) noexcept nogil:
    """dx += g over the window inside the plane."""
    cdef Py_ssize_t fy, fx
    for fy in range(fy_lo, fy_hi):
        for fx in range(fx_lo, fx_hi):
            dx[y0 + fy, x0 + fx] = dx[y0 + fy, x0 + fx] + g


# ---------------------------------------------------------------- one plane

cdef inline void _avg_plane(const floating[:, ::1] x, floating[:, ::1] out,
                            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t s,
                            Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t oy, ox, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi
    cdef Py_ssize_t h = x.shape[0], w = x.shape[1]
    cdef double acc, count = <double> (ph * pw)
    for oy in range(out.shape[0]):
        y0 = oy * s - p
        fy_lo = window_lo(y0)
        fy_hi = window_hi(y0, h, ph)
        for ox in range(out.shape[1]):
            x0 = ox * s - p
            fx_lo = window_lo(x0)
            fx_hi = window_hi(x0, w, pw)
            if fy_lo == 0 and fy_hi == ph and fx_lo == 0 and fx_hi == pw:
                acc = _window_sum(x, y0, x0, 0, ph, 0, pw)
            else:
                acc = _window_sum(x, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi)
            out[oy, ox] = <floating> (acc / count)


cdef inline void _avg_back_plane(const floating[:, ::1] dout, floating[:, ::1] dx,
                                 Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t s,
                                 Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t oy, ox, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi, iy, ix
    cdef Py_ssize_t h = dx.shape[0], w = dx.shape[1]
    cdef floating g, count = <floating> (ph * pw)
    for iy in range(h):
        for ix in range(w):
            dx[iy, ix] = 0
    for oy in range(dout.shape[0]):
        y0 = oy * s - p
        fy_lo = window_lo(y0)
        fy_hi = window_hi(y0, h, ph)
        for ox in range(dout.shape[1]):
            x0 = ox * s - p
            fx_lo = window_lo(x0)
            fx_hi = window_hi(x0, w, pw)
            # The reference divides in the array's dtype before scattering.
            g = dout[oy, ox] / count
            if fy_lo == 0 and fy_hi == ph and fx_lo == 0 and fx_hi == pw:
                _window_add(dx, y0, x0, 0, ph, 0, pw, g)
            else:
                _window_add(dx, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi, g)


# ---------------------------------------------------------------- parallel loops over planes
# One task per (n, c) plane.  2x2 and 3x3 windows get calls with constant sizes, for the
# compiler to unroll.

cdef void _max_run(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                   Py_ssize_t[:, :, :, ::1] arg, Py_ssize_t ph, Py_ssize_t pw,
                   Py_ssize_t s, Py_ssize_t p, int nt):
    cdef Py_ssize_t nc = x.shape[1], t, n, c
    with nogil:
        for t in prange(x.shape[0] * nc, num_threads=nt, schedule="guided"):
            n = t // nc
            c = t % nc
            if ph == 2 and pw == 2:
                max_plane(x[n, c], out[n, c], arg[n, c], 2, 2, s, p)
            elif ph == 3 and pw == 3:
                max_plane(x[n, c], out[n, c], arg[n, c], 3, 3, s, p)
            else:
                max_plane(x[n, c], out[n, c], arg[n, c], ph, pw, s, p)


cdef void _max_back_run(const floating[:, :, :, ::1] dout, const Py_ssize_t[:, :, :, ::1] arg,
                        floating[:, :, :, ::1] dx, Py_ssize_t pw, Py_ssize_t s,
                        Py_ssize_t p, int nt):
    cdef Py_ssize_t nc = dx.shape[1], t, n, c
    with nogil:
        for t in prange(dx.shape[0] * nc, num_threads=nt, schedule="guided"):
            n = t // nc
            c = t % nc
            max_back_plane(dout[n, c], arg[n, c], dx[n, c], pw, s, p)


cdef void _avg_run(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                   Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t s, Py_ssize_t p, int nt):
    cdef Py_ssize_t nc = x.shape[1], t, n, c
    with nogil:
        for t in prange(x.shape[0] * nc, num_threads=nt, schedule="guided"):
            n = t // nc
            c = t % nc
            if ph == 2 and pw == 2:
                _avg_plane(x[n, c], out[n, c], 2, 2, s, p)
            elif ph == 3 and pw == 3:
                _avg_plane(x[n, c], out[n, c], 3, 3, s, p)
            else:
                _avg_plane(x[n, c], out[n, c], ph, pw, s, p)


cdef void _avg_back_run(const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] dx,
                        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t s, Py_ssize_t p, int nt):
    cdef Py_ssize_t nc = dx.shape[1], t, n, c
    with nogil:
        for t in prange(dx.shape[0] * nc, num_threads=nt, schedule="guided"):
            n = t // nc
            c = t % nc
            if ph == 2 and pw == 2:
                _avg_back_plane(dout[n, c], dx[n, c], 2, 2, s, p)
            elif ph == 3 and pw == 3:
                _avg_back_plane(dout[n, c], dx[n, c], 3, 3, s, p)
            else:
                _avg_back_plane(dout[n, c], dx[n, c], ph, pw, s, p)


# ---------------------------------------------------------------- kernels

def maxpool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Max pooling; padding counts as -inf.  Returns (out, argmax) with argmax the
    position of the maximum inside its window (fy*pool_w + fx, first one on ties)."""
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_setup(x, pool_h, pool_w, stride, pad)
    x = np.ascontiguousarray(x)
    out = _empty((n, c, oh, ow), x.dtype)
    argmax = _empty((n, c, oh, ow), np.intp)
    if out.size:
        nt = task_threads(x.size + out.size, n * c)
        if x.dtype == np.float32:
            _max_run[float](x, out, argmax, ph, pw, s, p, nt)
        else:
            _max_run[double](x, out, argmax, ph, pw, s, p, nt)
    return out, argmax


def maxpool_backward(dout, argmax, input_shape, pool_h, pool_w, stride=2, pad=0):
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_back_setup(dout, input_shape, pool_h, pool_w,
                                                         stride, pad)
    chk.pool_argmax("argmax", argmax, dout.shape, ph * pw)
    dout = np.ascontiguousarray(dout)
    # In range now, so any integer dtype converts to intp exactly.
    argmax = np.ascontiguousarray(argmax, dtype=np.intp)
    dx = _empty((n, c, h, w), dout.dtype)
    if dx.size:
        nt = task_threads(dx.size + dout.size, n * c)
        if dout.dtype == np.float32:
            _max_back_run[float](dout, argmax, dx, pw, s, p, nt)
        else:
            _max_back_run[double](dout, argmax, dx, pw, s, p, nt)
    return dx


def avgpool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Average pooling; padded zeros count in the average (a fixed divisor ph*pw)."""
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_setup(x, pool_h, pool_w, stride, pad)
    x = np.ascontiguousarray(x)
    out = _empty((n, c, oh, ow), x.dtype)
    if out.size:
        nt = task_threads(x.size + out.size, n * c)
        if x.dtype == np.float32:
            _avg_run[float](x, out, ph, pw, s, p, nt)
        else:
            _avg_run[double](x, out, ph, pw, s, p, nt)
    return out


def avgpool_backward(dout, input_shape, pool_h, pool_w, stride=2, pad=0):
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_back_setup(dout, input_shape, pool_h, pool_w,
                                                         stride, pad)
    dout = np.ascontiguousarray(dout)
    dx = _empty((n, c, h, w), dout.dtype)
    if dx.size:
        nt = task_threads(dx.size + dout.size, n * c)
        if dout.dtype == np.float32:
            _avg_back_run[float](dout, dx, ph, pw, s, p, nt)
        else:
            _avg_back_run[double](dout, dx, ph, pw, s, p, nt)
    return dx
