"""Softmax with cross-entropy loss, compiled.

One pass per row: its max, exp(x - max) written to the output and summed in double,
then the normalisation and the row's loss log(sum) - (x[t] - max) (the log-sum-exp form,
free of log(0)).  Short rows (fewer than SHORT_ROW classes) first write x - max for a
whole block of rows and take the exponentials in one vector loop over it.  Rows are independent, so large batches split over threads; each row's
loss lands in its own slot and the slots are summed in order afterwards, so the result
does not depend on the thread count.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport log

cimport numpy as cnp

from zerodl._kernels import _checks as chk
from zerodl._kernels._ndarray cimport empty_like, is_array_of
from zerodl._kernels._util cimport (part_start, work_threads, zd_exp_inplace_f32,
                                   zd_exp_inplace_f64, zd_exp_shift_sum_f32,
                                   zd_exp_shift_sum_f64, zd_max_f32, zd_max_f64)

cnp.import_array()

# Elements per thread below which one thread does the whole batch.
cdef Py_ssize_t MIN_WORK = 1 << 14
# Rows shorter than this (MNIST's 10 classes) take their exponentials over the whole
# block of rows at once: a vector loop over one such row is nearly all remainder, which
# runs scalar (78 ns per row of 10 against 48 for a row of 16, measured).
cdef Py_ssize_t SHORT_ROW = 64



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


cdef inline double _row_loss(const floating* x, Py_ssize_t i, Py_ssize_t c, floating m,
                             double log_total, const Py_ssize_t* labels,
                             const floating* onehot) noexcept nogil:
    # log(sum(exp(x - max))) - (x[t] - max), i.e. -log softmax(x)[t]; with targets,
    # sum_j t_j * (log(sum) - (x_j - max)).  x - max in x's dtype, like the reference's
    # `shifted`.
    cdef Py_ssize_t j
    cdef double acc
    if labels != NULL:
        return log_total - <double>(x[i * c + labels[i]] - m)
    acc = 0.0
    for j in range(c):
        acc = acc + onehot[i * c + j] * (log_total - <double>(x[i * c + j] - m))
    return acc


cdef inline floating _row_max(const floating* x, Py_ssize_t c) noexcept nogil:
    if floating is float:
        return zd_max_f32(x, c)
    else:
        return zd_max_f64(x, c)


cdef double _forward_rows(const floating* x, floating* y, const Py_ssize_t* labels,
                          const floating* onehot, double* row_loss, Py_ssize_t lo,
                          Py_ssize_t hi, Py_ssize_t c) noexcept nogil:
    # Softmax and loss of rows lo..hi.  Returns the rows' losses summed in order and
    # stores each in row_loss when it is given.
    cdef Py_ssize_t i, j
    cdef double log_total, acc, s, total = 0.0
    cdef floating m, inv
    if c < SHORT_ROW and hi > lo:
        # y = x - max per row, then one exponential pass over the block
        for i in range(lo, hi):
            m = _row_max(x + i * c, c)
            for j in range(c):
                y[i * c + j] = x[i * c + j] - m
        if floating is float:
            zd_exp_inplace_f32(y + lo * c, (hi - lo) * c)
        else:
            zd_exp_inplace_f64(y + lo * c, (hi - lo) * c)
    for i in range(lo, hi):
        if c < SHORT_ROW:
            m = _row_max(x + i * c, c)
            s = 0.0
            for j in range(c):
                s += y[i * c + j]
            inv = <floating>(1.0 / s)
            for j in range(c):
                y[i * c + j] = y[i * c + j] * inv
            log_total = log(s)
        else:
            log_total = _softmax_row(x + i * c, y + i * c, c, &m)
        acc = _row_loss(x, i, c, m, log_total, labels, onehot)
        if row_loss != NULL:
            row_loss[i] = acc
        total += acc
    return total


cdef double _forward(const floating* xp, const Py_ssize_t* lp, const floating* hp,
                     floating* yp, double* rp, Py_ssize_t n, Py_ssize_t c,
                     int nt) noexcept nogil:
    # One thread sums the row losses as it goes; threads store them in rp (n slots),
    # summed in order afterwards: the same additions in the same order either way.
    cdef Py_ssize_t i, lo, hi
    cdef int t
    cdef double total = 0.0
    if n == 0:
        return 0.0
    if nt <= 1:
        return _forward_rows(xp, yp, lp, hp, NULL, 0, n, c)
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


cdef void _backward(const floating* yp, const Py_ssize_t* lp, const floating* hp,
                    double scale, floating* dp, Py_ssize_t n, Py_ssize_t c,
                    int nt) noexcept nogil:
    cdef Py_ssize_t lo, hi
    cdef int t
    if n == 0 or c == 0:
        return
    if nt <= 1:
        _backward_rows(yp, lp, hp, <floating>scale, dp, 0, n, c)
        return
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = part_start(n, nt, t)
        hi = part_start(n, nt, t + 1)
        _backward_rows(yp, lp, hp, <floating>scale, dp, lo, hi, c)


cdef bint _index_labels_ok(t, Py_ssize_t n, Py_ssize_t c):
    """t is a C-contiguous intp array of n labels, all in [0, c): checked in C."""
    if not is_array_of(t, cnp.NPY_INTP):
        return False
    cdef cnp.ndarray a = t
    if (cnp.PyArray_NDIM(a) != 1 or cnp.PyArray_DIM(a, 0) != n
            or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
        return False
    cdef const Py_ssize_t* p = <const Py_ssize_t*>cnp.PyArray_DATA(a)
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] < 0 or p[i] >= c:
            return False
    return True


cdef tuple _targets(t, Py_ssize_t n, Py_ssize_t c, dtype):
    """(labels, onehot) for t as C-contiguous arrays, None for the form not in use.  Index
    labels that are already intp and in range skip the Python checks, which raise the
    reference's errors for anything wrong."""
    if _index_labels_ok(t, n, c):
        return t, None
    t, is_index = chk.labels(t, n, c, dtype)
    if is_index:
        return np.ascontiguousarray(t), None
    return None, np.ascontiguousarray(t)


cdef inline void* _data(a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


def softmax_cross_entropy_forward(x, t):
    """Mean cross-entropy of softmax(x) against labels t; returns (loss, softmax(x)).

    t is integer labels (N,) or one-hot/soft targets (N, C).  An empty batch has loss 0.
    """
    chk.float_array("x", x, 2)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1]
    if c < 1:
        raise ValueError("x must have at least one class column")
    labels, onehot = _targets(t, n, c, x.dtype)
    cdef cnp.ndarray xc = np.ascontiguousarray(x)
    cdef cnp.ndarray y = empty_like(xc)
    cdef int nt = work_threads(n * c, MIN_WORK)
    cdef cnp.ndarray row_loss = np.empty(n if nt > 1 else 0, dtype=np.float64)
    cdef double* rp = <double*>cnp.PyArray_DATA(row_loss)
    cdef const Py_ssize_t* lp = <const Py_ssize_t*>_data(labels)
    cdef double total
    if cnp.PyArray_TYPE(xc) == cnp.NPY_FLOAT:
        total = _forward[float](<float*>cnp.PyArray_DATA(xc), lp, <float*>_data(onehot),
                                <float*>cnp.PyArray_DATA(y), rp, n, c, nt)
    else:
        total = _forward[double](<double*>cnp.PyArray_DATA(xc), lp, <double*>_data(onehot),
                                 <double*>cnp.PyArray_DATA(y), rp, n, c, nt)
    return total / max(n, 1), y


def softmax_cross_entropy_backward(y, t, dout=1.0):
    """dx = dout * (y - onehot(t)) / N."""
    chk.float_array("y", y, 2)
    cdef Py_ssize_t n = y.shape[0], c = y.shape[1]
    labels, onehot = _targets(t, n, c, y.dtype)
    scale = chk.real("dout", dout) / max(n, 1)
    cdef cnp.ndarray yc = np.ascontiguousarray(y)
    cdef cnp.ndarray dx = empty_like(yc)
    cdef int nt = work_threads(n * c, MIN_WORK)
    cdef const Py_ssize_t* lp = <const Py_ssize_t*>_data(labels)
    if cnp.PyArray_TYPE(yc) == cnp.NPY_FLOAT:
        _backward[float](<float*>cnp.PyArray_DATA(yc), lp, <float*>_data(onehot), scale,
                         <float*>cnp.PyArray_DATA(dx), n, c, nt)
    else:
        _backward[double](<double*>cnp.PyArray_DATA(yc), lp, <double*>_data(onehot), scale,
                          <double*>cnp.PyArray_DATA(dx), n, c, nt)
    return dx
