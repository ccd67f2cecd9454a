"""Activations (ReLU, sigmoid, tanh) and their gradients, compiled.

Each kernel works on any ndim through the flat C-contiguous buffer: the wrapper checks
the arguments exactly like ``_reference``, makes inputs contiguous once, allocates the
output in the input's dtype and runs one fused loop, split over OpenMP threads when the
array is large enough to gain from it.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange

cimport numpy as cnp

from zerodl._kernels import _checks as chk
from zerodl._kernels._ndarray cimport contiguous, empty_like, is_float_array, same_shape
from zerodl._kernels._util cimport (part_start, relu_into, work_threads, zd_sigmoid_f32,
                                   zd_sigmoid_f64, zd_tanh_f32, zd_tanh_f64)

cnp.import_array()

# Elements per thread below which a second thread costs more than it saves: cheap
# elementwise loops (ReLU, the backward products) are memory-bound, transcendental ones
# (exp, tanh) compute-bound and worth splitting sooner.
cdef Py_ssize_t MIN_CHEAP = 1 << 16
cdef Py_ssize_t MIN_TRANSCENDENTAL = 1 << 13


cdef enum Op:
    RELU_FWD
    SIGMOID_FWD
    TANH_FWD
    RELU_BWD
    SIGMOID_BWD
    TANH_BWD


# Literals are typed `floating` on purpose: a bare 1 or 0 becomes a C double and drags
# float32 loops into double arithmetic.

cdef void _unary(Op op, const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    if op == RELU_FWD:
        relu_into(x, out, n)
    elif op == SIGMOID_FWD:
        # 1 / (1 + exp(-x)): the logistic function; exp(-x) = inf gives exactly 0.
        if floating is float:
            zd_sigmoid_f32(x, out, n)
        else:
            zd_sigmoid_f64(x, out, n)
    elif floating is float:
        zd_tanh_f32(x, out, n)
    else:
        zd_tanh_f64(x, out, n)


cdef void _binary(Op op, const floating* dout, const floating* y, floating* dx,
                  Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating d, zero = 0, one = 1
    if op == RELU_BWD:
        for i in range(n):
            d = dout[i]     # loaded unconditionally, so the select vectorises
            dx[i] = d if y[i] > zero else zero
    elif op == SIGMOID_BWD:
        # dout * (1 - y) * y, in the reference's order of operations.
        for i in range(n):
            dx[i] = dout[i] * (one - y[i]) * y[i]
    else:
        for i in range(n):
            dx[i] = dout[i] * (one - y[i] * y[i])


cdef void _run_unary(Op op, const floating* xp, floating* op_, Py_ssize_t n,
                     int nt) noexcept nogil:
    cdef Py_ssize_t lo, hi
    cdef int t
    if n == 0:
        return
    if nt <= 1:
        _unary(op, xp, op_, n)
        return
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = part_start(n, nt, t)
        hi = part_start(n, nt, t + 1)
        _unary(op, xp + lo, op_ + lo, hi - lo)


cdef void _run_binary(Op op, const floating* dp, const floating* yp, floating* xp,
                      Py_ssize_t n, int nt) noexcept nogil:
    cdef Py_ssize_t lo, hi
    cdef int t
    if n == 0:
        return
    if nt <= 1:
        _binary(op, dp, yp, xp, n)
        return
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = part_start(n, nt, t)
        hi = part_start(n, nt, t + 1)
        _binary(op, dp + lo, yp + lo, xp + lo, hi - lo)


cdef bint _same_float_arrays(a, b):
    """a and b are native float32/float64 ndarrays of one dtype and one shape."""
    return (is_float_array(a) and is_float_array(b)
            and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.PyArray_TYPE(<cnp.ndarray>b)
            and same_shape(a, b))


cdef object _forward(Op op, x, Py_ssize_t min_work):
    chk.float_array("x", x)
    cdef cnp.ndarray xc = contiguous(x)
    cdef cnp.ndarray out = empty_like(xc)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(xc)
    cdef int nt = work_threads(n, min_work)
    if cnp.PyArray_TYPE(xc) == cnp.NPY_FLOAT:
        _run_unary[float](op, <float*>cnp.PyArray_DATA(xc), <float*>cnp.PyArray_DATA(out),
                          n, nt)
    else:
        _run_unary[double](op, <double*>cnp.PyArray_DATA(xc), <double*>cnp.PyArray_DATA(out),
                           n, nt)
    # 0-d input: a NumPy scalar, as the reference's ufuncs return
    return out[()] if out.ndim == 0 else out


cdef object _backward(Op op, dout, out):
    # The reference's _pair: dout and out float arrays of one dtype and one shape.  The
    # common case is recognised in C; anything else goes through the checks, which raise
    # the reference's errors.
    if not _same_float_arrays(dout, out):
        chk.float_array("dout", dout)
        chk.float_array("out", out)
        chk.same_dtype(dout=dout, out=out)
        chk.shape_is("dout", dout, out.shape, "the shape of out")
    cdef cnp.ndarray dc = contiguous(dout)
    cdef cnp.ndarray yc = contiguous(out)
    cdef cnp.ndarray dx = empty_like(dc)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(dc)
    cdef int nt = work_threads(n, MIN_CHEAP)
    if cnp.PyArray_TYPE(dc) == cnp.NPY_FLOAT:
        _run_binary[float](op, <float*>cnp.PyArray_DATA(dc), <float*>cnp.PyArray_DATA(yc),
                           <float*>cnp.PyArray_DATA(dx), n, nt)
    else:
        _run_binary[double](op, <double*>cnp.PyArray_DATA(dc), <double*>cnp.PyArray_DATA(yc),
                            <double*>cnp.PyArray_DATA(dx), n, nt)
    # 0-d input: the reference's arithmetic gives a NumPy scalar, its np.where an array
    return dx[()] if dx.ndim == 0 and op != RELU_BWD else dx


def relu_forward(x):
    """max(x, 0), elementwise."""
    return _forward(RELU_FWD, x, MIN_CHEAP)


def relu_backward(dout, out):
    """dx = dout where the forward output was positive (x > 0), else 0."""
    return _backward(RELU_BWD, dout, out)


def sigmoid_forward(x):
    """The logistic function 1 / (1 + exp(-x)), without overflow for large |x|."""
    return _forward(SIGMOID_FWD, x, MIN_TRANSCENDENTAL)


def sigmoid_backward(dout, out):
    """dx = dout * (1 - out) * out."""
    return _backward(SIGMOID_BWD, dout, out)


def tanh_forward(x):
    return _forward(TANH_FWD, x, MIN_TRANSCENDENTAL)


def tanh_backward(dout, out):
    """dx = dout * (1 - out^2)."""
    return _backward(TANH_BWD, dout, out)
