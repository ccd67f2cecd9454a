"""Softmax with cross-entropy loss, compiled.

One pass per row: its max, exp(x - max) written to the output and summed in double,
then the normalisation and the row's loss log(sum) - (x[t] - max) (the log-sum-exp form,
free of log(0)).  Rows are independent, so large batches split over threads; each row's
loss lands in its own slot and the slots are summed in order afterwards, so the result
does not depend on the thread count.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport log

from zerodl._kernels import _checks as chk
from zerodl._kernels._util cimport (part_start, work_threads, zd_exp_shift_sum_f32,
                                   zd_exp_shift_sum_f64, zd_max_f32, zd_max_f64)

# Elements per thread below which one thread does the whole batch.
cdef Py_ssize_t MIN_WORK = 1 << 14



cdef double _softmax_row(const floating* x, floating* y, Py_ssize_t c,
                         floating* row_max) noexcept nogil:
    """y = softmax(x) over c >= 1 entries; returns log(sum(exp(x - max)))."""
    cdef floating m, inv
    cdef double total
    cdef Py_ssize_t j
    if floating is float:
        m = zd_max_f32(x, c)
        total = zd_exp_shift_sum_f32(x, y, c, m)
    else:
        m = zd_max_f64(x, c)
        total = zd_exp_shift_sum_f64(x, y, c, m)
    inv = <floating>(1.0 / total)
    for j in range(c):
        y[j] = y[j] * inv
    row_max[0] = m
    return log(total)


cdef void _forward_rows(const floating* x, floating* y, const Py_ssize_t* labels,
                        const floating* onehot, double* row_loss, Py_ssize_t lo,
                        Py_ssize_t hi, Py_ssize_t c) noexcept nogil:
    # Row loss: log(sum(exp(x - max))) - (x[t] - max), i.e. -log softmax(x)[t]; with
    # targets, sum_j t_j * (log(sum) - (x_j - max)).  x - max in x's dtype, like the
    # reference's `shifted`.
    cdef Py_ssize_t i, j
    cdef double log_total, acc
    cdef floating m
    for i in range(lo, hi):
        log_total = _softmax_row(x + i * c, y + i * c, c, &m)
        if labels != NULL:
            row_loss[i] = log_total - <double>(x[i * c + labels[i]] - m)
        else:
            acc = 0.0
            for j in range(c):
                acc = acc + onehot[i * c + j] * (log_total - <double>(x[i * c + j] - m))
            row_loss[i] = acc


cdef double _forward(const floating[:, ::1] x, const Py_ssize_t[::1] labels,
                     const floating[:, ::1] onehot, floating[:, ::1] y, double[::1] row_loss,
                     int nt) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], i, lo, hi
    cdef int t
    cdef double total = 0.0
    if n == 0:
        return 0.0
    cdef const Py_ssize_t* lp = &labels[0] if labels.shape[0] > 0 else NULL
    cdef const floating* hp = &onehot[0, 0] if onehot.shape[0] > 0 else NULL
    cdef const floating* xp = &x[0, 0]
    cdef floating* yp = &y[0, 0]
    cdef double* rp = &row_loss[0]
    if nt <= 1:
        _forward_rows(xp, yp, lp, hp, rp, 0, n, c)
    else:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            lo = part_start(n, nt, t)
            hi = part_start(n, nt, t + 1)
            _forward_rows(xp, yp, lp, hp, rp, lo, hi, c)
    for i in range(n):
        total += rp[i]
    return total


cdef void _backward_rows(const floating* y, const Py_ssize_t* labels, const floating* onehot,
                         floating scale, floating* dx, Py_ssize_t lo, Py_ssize_t hi,
                         Py_ssize_t c) noexcept nogil:
    # dx = (y - onehot(t)) * scale, in y's dtype like the reference.
    cdef Py_ssize_t i, j
    cdef floating one = 1
    for i in range(lo, hi):
        if labels != NULL:
            for j in range(c):
                dx[i * c + j] = y[i * c + j] * scale
            j = labels[i]
            dx[i * c + j] = (y[i * c + j] - one) * scale
        else:
            for j in range(c):
                dx[i * c + j] = (y[i * c + j] - onehot[i * c + j]) * scale


cdef void _backward(const floating[:, ::1] y, const Py_ssize_t[::1] labels,
                    const floating[:, ::1] onehot, double scale, floating[:, ::1] dx,
                    int nt) noexcept nogil:
    cdef Py_ssize_t n = y.shape[0], c = y.shape[1], lo, hi
    cdef int t
    if n == 0 or c == 0:
        return
    cdef const Py_ssize_t* lp = &labels[0] if labels.shape[0] > 0 else NULL
    cdef const floating* hp = &onehot[0, 0] if onehot.shape[0] > 0 else NULL
    cdef const floating* yp = &y[0, 0]
    cdef floating* dp = &dx[0, 0]
    if nt <= 1:
        _backward_rows(yp, lp, hp, <floating>scale, dp, 0, n, c)
        return
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = part_start(n, nt, t)
        hi = part_start(n, nt, t + 1)
        _backward_rows(yp, lp, hp, <floating>scale, dp, lo, hi, c)


cdef tuple _label_views(t, bint is_index, Py_ssize_t c, dtype):
    """(labels, onehot): the form in use made contiguous, the other an empty stand-in."""
    if is_index:
        return np.ascontiguousarray(t), np.empty((0, c), dtype=dtype)
    return np.empty(0, dtype=np.intp), np.ascontiguousarray(t)


def softmax_cross_entropy_forward(x, t):
    """Mean cross-entropy of softmax(x) against labels t; returns (loss, softmax(x)).

    t is integer labels (N,) or one-hot/soft targets (N, C).  An empty batch has loss 0.
    """
    chk.float_array("x", x, 2)
    n, c = x.shape
    if c < 1:
        raise ValueError("x must have at least one class column")
    t, is_index = chk.labels(t, n, c, x.dtype)
    labels, onehot = _label_views(t, is_index, c, x.dtype)
    x = np.ascontiguousarray(x)
    y = np.empty((n, c), dtype=x.dtype)
    row_loss = np.empty(n, dtype=np.float64)
    cdef int nt = work_threads(n * c, MIN_WORK)
    cdef double total
    if x.dtype == np.float32:
        total = _forward[float](x, labels, onehot, y, row_loss, nt)
    else:
        total = _forward[double](x, labels, onehot, y, row_loss, nt)
    return total / max(n, 1), y


def softmax_cross_entropy_backward(y, t, dout=1.0):
    """dx = dout * (y - onehot(t)) / N."""
    chk.float_array("y", y, 2)
    n, c = y.shape
    t, is_index = chk.labels(t, n, c, y.dtype)
    scale = chk.real("dout", dout) / max(n, 1)
    labels, onehot = _label_views(t, is_index, c, y.dtype)
    y = np.ascontiguousarray(y)
    dx = np.empty((n, c), dtype=y.dtype)
    cdef int nt = work_threads(n * c, MIN_WORK)
    if y.dtype == np.float32:
        _backward[float](y, labels, onehot, scale, dx, nt)
    else:
        _backward[double](y, labels, onehot, scale, dx, nt)
    return dx
