"""Affine layer, compiled: BLAS GEMM (scipy's sgemm/dgemm) in row-major form.

The forward writes the bias into every row of the output and lets GEMM accumulate onto it
(beta = 1), so the bias add costs no separate pass.  C- and Fortran-ordered operands go to
BLAS as they are (a Fortran array is the transpose of a C one: only the trans flag
changes); other layouts are copied once.  The bias gradient sums the rows of dout in
double.  Operands reach BLAS as raw pointers: GEMM takes nothing else, and at the
book's small shapes a typed memoryview per operand would cost a visible share of the
call.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.string cimport memcpy, memset

from zerodl._kernels import _checks as chk
from zerodl._config import get_num_threads
from zerodl._kernels._blas cimport blas_controllable, gemm_rm_pair, gemm_rm_parallel
from zerodl._kernels._ndarray cimport new_matrix
from zerodl._kernels._util cimport zd_sum_f32, zd_sum_f64

cnp.import_array()


cdef struct Operand:
    void* data        # first element of a C-contiguous 2-D array
    Py_ssize_t rows   # of that array
    Py_ssize_t cols
    bint trans        # the logical operand is the transpose of that array


cdef object _operand(cnp.ndarray a, Operand* op):
    """Describe `a` as a C-contiguous array or the transpose of one (copying only other
    layouts); returns the array that owns the memory, to keep it alive."""
    op.trans = False
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        if cnp.PyArray_IS_F_CONTIGUOUS(a):
            a = a.T
            op.trans = True
        else:
            a = np.ascontiguousarray(a)
    op.data = cnp.PyArray_DATA(a)
    op.rows = a.shape[0]
    op.cols = a.shape[1]
    return a


cdef inline int _ld(const Operand* op) noexcept nogil:
    return <int>(op.cols if op.cols > 1 else 1)


cdef inline void _gemm(const Operand* a, bint ta, const Operand* b, bint tb, Py_ssize_t m,
                       Py_ssize_t n, Py_ssize_t k, floating* c, floating beta,
                       int max_threads) noexcept nogil:
    # C (m, n) = op(A) @ op(B) + beta * C, op(X) = X or X.T as the operand and flag say,
    # on up to max_threads OpenMP threads
    gemm_rm_parallel(a.trans != ta, b.trans != tb, m, n, k, <const floating*>a.data, _ld(a),
                     <const floating*>b.data, _ld(b), beta, c, n, max_threads)


cdef void _forward(const Operand* x, const Operand* W, const floating* b, floating* out,
                   Py_ssize_t n, Py_ssize_t d, Py_ssize_t m, int nt) noexcept nogil:
    # out (N, M) = x (N, D) @ W (D, M) + b
    cdef Py_ssize_t i
    if n == 0 or m == 0:
        return
    for i in range(n):
        memcpy(out + i * m, b, m * sizeof(floating))
    if d > 0:
        _gemm(x, False, W, False, n, m, d, out, 1, nt)


cdef void _column_sums(const Operand* a, floating* out, double* acc,
                       Py_ssize_t m) noexcept nogil:
    """out[j] = sum_i A[i, j] in double, for the logical (N, M) operand A."""
    cdef Py_ssize_t i, j, r = a.rows, c = a.cols
    cdef const floating* p = <const floating*>a.data
    if a.trans:
        # rows of the array are the columns of A: one contiguous reduction each
        for i in range(r):
            if floating is float:
                out[i] = <floating>zd_sum_f32(p + i * c, c)
            else:
                out[i] = <floating>zd_sum_f64(p + i * c, c)
        return
    memset(acc, 0, m * sizeof(double))
    for i in range(r):
        for j in range(c):
            acc[j] += p[i * c + j]
    for j in range(m):
        out[j] = <floating>acc[j]


cdef void _backward(const Operand* dout, const Operand* x, const Operand* W, floating* dx,
                    floating* dW, floating* db, double* acc, Py_ssize_t n, Py_ssize_t d,
                    Py_ssize_t m, int nt) noexcept nogil:
    # dx NULL: the input gradient is not wanted
    if m > 0:
        if n > 0:
            _column_sums(dout, db, acc, m)
        else:
            memset(db, 0, m * sizeof(floating))
    if n > 0 and d > 0 and m > 0 and dx != NULL:
        # dx = dout @ W.T and dW = x.T @ dout side by side
        gemm_rm_pair(dout.trans, not W.trans, n, d, m, <const floating*>dout.data,
                     _ld(dout), <const floating*>W.data, _ld(W), dx, d,
                     not x.trans, dout.trans, d, m, n, <const floating*>x.data, _ld(x),
                     <const floating*>dout.data, _ld(dout), dW, m, nt)
        return
    if n > 0 and d > 0 and dx != NULL:
        if m > 0:
            _gemm(dout, False, W, True, n, d, m, dx, 0, nt)     # dx = dout @ W.T
        else:
            memset(dx, 0, n * d * sizeof(floating))
    if d > 0 and m > 0:
        if n > 0:
            _gemm(x, True, dout, False, d, m, n, dW, 0, nt)     # dW = x.T @ dout
        else:
            memset(dW, 0, d * m * sizeof(floating))


def affine_forward(x, W, b):
    """out = x @ W + b for x (N, D), W (D, M), b (M,)."""
    chk.affine_forward_args(x, W, b)
    cdef Operand xo, Wo
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], m = W.shape[1]
    cdef cnp.ndarray out = new_matrix(n, m, cnp.PyArray_TYPE(<cnp.ndarray>x))
    keep = (_operand(x, &xo), _operand(W, &Wo))
    cdef cnp.ndarray bc = np.ascontiguousarray(b)
    cdef int nt = get_num_threads()
    with nogil:
        if cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT:
            _forward[float](&xo, &Wo, <float*>cnp.PyArray_DATA(bc),
                            <float*>cnp.PyArray_DATA(out), n, d, m, nt)
        else:
            _forward[double](&xo, &Wo, <double*>cnp.PyArray_DATA(bc),
                             <double*>cnp.PyArray_DATA(out), n, d, m, nt)
    return out


def affine_backward(dout, x, W, need_dx=True):
    """Gradients of affine_forward: (dx, dW, db); dx is None when need_dx is false."""
    chk.affine_backward_args(dout, x, W)
    cdef Operand do, xo, Wo
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], m = W.shape[1]
    dtype = x.dtype
    cdef bint want_dx = bool(need_dx)
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray>x)
    cdef cnp.ndarray dx = new_matrix(n if want_dx else 0, d, tn)
    cdef void* dx_data = cnp.PyArray_DATA(dx) if want_dx else NULL
    cdef cnp.ndarray dW = new_matrix(d, m, tn)
    cdef cnp.ndarray db = np.empty(m, dtype=dtype)
    cdef cnp.ndarray acc = np.empty(m, dtype=np.float64)
    keep = (_operand(dout, &do), _operand(x, &xo), _operand(W, &Wo))
    cdef int nt = get_num_threads()
    with nogil:
        if cnp.PyArray_TYPE(dx) == cnp.NPY_FLOAT:
            _backward[float](&do, &xo, &Wo, <float*>dx_data,
                             <float*>cnp.PyArray_DATA(dW), <float*>cnp.PyArray_DATA(db),
                             <double*>cnp.PyArray_DATA(acc), n, d, m, nt)
        else:
            _backward[double](&do, &xo, &Wo, <double*>dx_data,
                              <double*>cnp.PyArray_DATA(dW), <double*>cnp.PyArray_DATA(db),
                              <double*>cnp.PyArray_DATA(acc), n, d, m, nt)
    return (dx if want_dx else None), dW, db


def blas_threads_controlled():
    """Whether the kernels can hold scipy's BLAS to one thread while they call it (found
    by the address of sgemm; False for a BLAS without a known thread setter, and then
    the GEMMs are not split across threads)."""
    return blas_controllable()
