"""Batch, layer and instance normalisation, compiled.

Batch norm of (N, D) takes two streaming passes over x: one for the statistics (sums of
x - x[0] and of its square, in double: the shifted-data variance, exact when the shift is
a sample), one to normalise.  Rows are split over threads; each thread sums its rows into
private (D,) buffers that are combined afterwards in thread order.  Spatial batch norm
keeps the NCHW layout: every (n, c) plane is contiguous, planes are reduced in parallel
into per-plane partial sums, and the partials are combined per channel in sample order.
Layer and instance norm normalise rows/planes independently, with their gamma/beta
gradients summed the same two ways.  So results do not depend on the scheduling.

The backward passes use dx = p * dxhat + q * xhat + r per feature, the reference's
gamma*inv_std/N * (N*dout - sum(dout) - xhat*sum(dout*xhat)) with its coefficients
computed once per feature in double.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport sqrt
from libc.float cimport DBL_MAX
from libc.string cimport memcpy, memset

cimport numpy as cnp

from zerodl._config import get_num_threads
from zerodl._kernels import _checks as chk
from zerodl._kernels._buffers import empty as _empty
from zerodl._kernels._blas cimport gemm_rm_pair, gemm_rm_parallel
from zerodl._kernels._ndarray cimport (contiguous, data_of, is_array_of, is_float_array,
                                      new_matrix, same_shape)
from zerodl._kernels._util cimport (
    part_start, relu_into, work_threads, zd_colaffine_f32, zd_colaffine_f64, zd_colcombine_f32,
    zd_colcombine_f64, zd_colnorm_f32, zd_colnorm_f64, zd_colsums_dot_f32,
    zd_colsums_dot_f64, zd_colsums_shifted_f32, zd_colsums_shifted_f64, zd_shifted_sums_f32,
    zd_shifted_sums_f64, zd_sqdev_f32, zd_sqdev_f64, zd_sum_dot_f32, zd_sum_dot_f64,
    zd_sum_f32, zd_sum_f64, zd_wsum_dot_f32, zd_wsum_dot_f64)

cnp.import_array()

# Elements per thread below which one thread does the whole call.
cdef Py_ssize_t MIN_WORK = 1 << 15


cdef class _Scratch:
    """Work memory of one call (per-thread sums, per-feature coefficients), in doubles:
    cheaper than a handful of small NumPy arrays when the call itself is small."""
    cdef double* ptr

    def __cinit__(self, Py_ssize_t count):
        self.ptr = <double*>PyMem_Malloc(max(count, 1) * sizeof(double))
        if self.ptr == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.ptr)


cdef inline object _c(a):
    return np.ascontiguousarray(a)


# ---------------------------------------------------------------- argument plumbing
# The 2-D batch norms and the fused block take their buffers' addresses straight from the
# arrays, like the elementwise kernels: a typed memoryview costs about a microsecond to
# set up, and these calls take a handful of them on 100x100 data.  Well-formed arguments
# (native float arrays of one dtype and the expected shapes, writable running statistics,
# Python floats in range) are recognised in C; anything else goes through the shared
# checks, which raise the reference's errors or accept the argument as it is.

cdef inline bint _vector(a, int typenum, Py_ssize_t n):
    """a is a 1-D native array of this type number and length (any stride)."""
    return (is_array_of(a, typenum) and cnp.PyArray_NDIM(<cnp.ndarray>a) == 1
            and cnp.PyArray_DIM(<cnp.ndarray>a, 0) == n)


cdef inline bint _matrix(a, int typenum):
    return is_array_of(a, typenum) and cnp.PyArray_NDIM(<cnp.ndarray>a) == 2


cdef inline bint _in_range(v, double low, bint low_open, double high):
    """v is a Python float within [low, high] (or (low, high]) that chk.real accepts as
    it is; other numbers take the checks' path."""
    if type(v) is not float:
        return False
    cdef double f = <double>v
    return (f > low if low_open else f >= low) and f <= high


cdef inline bint _eps_ok(eps):
    return _in_range(eps, 0.0, True, DBL_MAX)


cdef inline bint _bn_hyper_ok(momentum, eps):
    return _in_range(momentum, 0.0, False, 1.0) and _eps_ok(eps)


cdef inline bint _params_ok(int tn, Py_ssize_t d, gamma, beta, running_mean, running_var,
                            bint updated):
    """gamma, beta and the running statistics are d-vectors of type tn; the statistics
    are writable when they are updated in place (training)."""
    return (_vector(gamma, tn, d) and _vector(beta, tn, d)
            and _vector(running_mean, tn, d) and _vector(running_var, tn, d)
            and (not updated or (cnp.PyArray_ISWRITEABLE(<cnp.ndarray>running_mean)
                                 and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>running_var))))


cdef inline cnp.ndarray _vector_out(Py_ssize_t d, int typenum):
    cdef cnp.npy_intp dims[1]
    dims[0] = d
    return cnp.PyArray_EMPTY(1, dims, typenum, 0)


# ---------------------------------------------------------------- shared per-feature math

cdef void _finish_stats(double s1, double s2, double count, double shift, double eps,
                        double* mean, double* var, double* inv) noexcept nogil:
    """Mean, biased variance and 1/sqrt(var + eps) from the shifted sums."""
    cdef double m = s1 / count
    cdef double v = s2 / count - m * m
    if v < 0:
        v = 0.0
    mean[0] = shift + m
    var[0] = v
    inv[0] = 1.0 / sqrt(v + eps)


cdef inline floating* _at(floating* base, Py_ssize_t byte_stride, Py_ssize_t j) noexcept nogil:
    return <floating*>(<char*>base + j * byte_stride)


cdef void _update_running(floating* running_mean, Py_ssize_t mean_stride,
                          floating* running_var, Py_ssize_t var_stride, Py_ssize_t d,
                          const double* mean, const double* var,
                          double momentum) noexcept nogil:
    # r = momentum * r + (1 - momentum) * batch, rounded like the reference's
    # `r *= momentum; r += ((1 - momentum) * batch).astype(dtype)`.  The running
    # statistics are updated where they are, so they are walked by their byte strides.
    cdef Py_ssize_t j
    cdef floating mom = <floating>momentum
    cdef floating* r
    for j in range(d):
        r = _at(running_mean, mean_stride, j)
        r[0] = r[0] * mom + <floating>((1 - momentum) * mean[j])
        r = _at(running_var, var_stride, j)
        r[0] = r[0] * mom + <floating>((1 - momentum) * var[j])


cdef void _update_running_arrays(cnp.ndarray running_mean, cnp.ndarray running_var,
                                 const double* mean, const double* var, double momentum):
    """_update_running on the (checked) running-statistics arrays, in their dtype."""
    cdef Py_ssize_t d = cnp.PyArray_DIM(running_mean, 0)
    cdef Py_ssize_t sm = cnp.PyArray_STRIDE(running_mean, 0)
    cdef Py_ssize_t sv = cnp.PyArray_STRIDE(running_var, 0)
    if cnp.PyArray_TYPE(running_mean) == cnp.NPY_FLOAT:
        _update_running[float](<float*>data_of(running_mean), sm, <float*>data_of(running_var),
                               sv, d, mean, var, momentum)
    else:
        _update_running[double](<double*>data_of(running_mean), sm, <double*>data_of(running_var),
                                sv, d, mean, var, momentum)


# ---------------------------------------------------------------- batch norm (N, D)
# Rows are split over threads: x streams through in memory order (column blocks would
# jump a whole row per cache line and defeat the prefetchers); each thread sums its rows
# into its own (D,) double buffers, which are combined afterwards in thread order.
# The batch's mean and variance are left in the work memory (at _train_mean: d means, then
# d variances) for the caller's running-statistics update.

cdef inline double* _train_mean(double* work, Py_ssize_t d, int nt) noexcept nogil:
    return work + 2 * nt * d


cdef void _bn_train(const floating* xp, Py_ssize_t n, Py_ssize_t d, const floating* gamma,
                    const floating* beta, floating* out, floating* xhat, floating* inv_std,
                    double eps, double* work, int nt) noexcept nogil:
    # work: (2*nt + 4) * d doubles; n >= 1
    cdef Py_ssize_t lo, hi, j
    cdef int t
    cdef double s1, s2, inv
    if d == 0:
        return
    cdef double* acc1 = work                # per-thread sums, nt rows of d
    cdef double* acc2 = work + nt * d
    cdef double* mean = _train_mean(work, d, nt)
    cdef double* var = mean + d
    cdef floating* mhi = <floating*>(var + d)
    cdef floating* mlo = <floating*>(var + 2 * d)
    memset(work, 0, 2 * nt * d * sizeof(double))
    # shifted sums over rows 1..n-1 (row 0 is the shift and adds nothing)
    if nt <= 1:
        _colsums_rows(xp, d, 1, n, acc1, acc2)
    else:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            lo = 1 + part_start(n - 1, nt, t)
            hi = 1 + part_start(n - 1, nt, t + 1)
            _colsums_rows(xp, d, lo, hi, acc1 + t * d, acc2 + t * d)
    for j in range(d):
        s1 = 0.0
        s2 = 0.0
        for t in range(nt):
            s1 = s1 + acc1[t * d + j]
            s2 = s2 + acc2[t * d + j]
        _finish_stats(s1, s2, <double>n, <double>xp[j], eps, &mean[j], &var[j], &inv)
        inv_std[j] = <floating>inv
        mhi[j] = <floating>mean[j]
        mlo[j] = <floating>(mean[j] - <double>mhi[j])
    if nt <= 1:
        _colnorm_rows(xp, d, 0, n, mhi, mlo, inv_std, gamma, beta, xhat, out)
    else:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            lo = part_start(n, nt, t)
            hi = part_start(n, nt, t + 1)
            _colnorm_rows(xp, d, lo, hi, mhi, mlo, inv_std, gamma, beta, xhat, out)


cdef inline void _colsums_rows(const floating* x, Py_ssize_t d, Py_ssize_t lo, Py_ssize_t hi,
                               double* s1, double* s2) noexcept nogil:
    """s1 += x[i] - x[0], s2 += (x[i] - x[0])^2 over rows lo..hi of x (rows of length d)."""
    if hi <= lo:
        return
    if floating is float:
        zd_colsums_shifted_f32(x + lo * d, d, hi - lo, d, x, s1, s2)
    else:
        zd_colsums_shifted_f64(x + lo * d, d, hi - lo, d, x, s1, s2)


cdef inline void _colnorm_rows(const floating* x, Py_ssize_t d, Py_ssize_t lo, Py_ssize_t hi,
                               const floating* mhi, const floating* mlo, const floating* s,
                               const floating* g, const floating* b, floating* xhat,
                               floating* out) noexcept nogil:
    if hi <= lo:
        return
    if floating is float:
        zd_colnorm_f32(x + lo * d, d, hi - lo, d, mhi, mlo, s, g, b, xhat + lo * d,
                       out + lo * d)
    else:
        zd_colnorm_f64(x + lo * d, d, hi - lo, d, mhi, mlo, s, g, b, xhat + lo * d,
                       out + lo * d)


cdef class _TrainOutputs:
    """out and xhat (n, d) and inv_std (d,) of a training-mode batch norm of n rows, its
    thread count and its work memory."""
    cdef cnp.ndarray out, xhat, inv_std
    cdef int nt
    cdef _Scratch work

    def __cinit__(self, Py_ssize_t n, Py_ssize_t d, int typenum):
        self.nt = work_threads(n * d, MIN_WORK)
        if self.nt > n:
            self.nt = <int>n
        self.out = new_matrix(n, d, typenum)
        self.xhat = new_matrix(n, d, typenum)
        self.inv_std = _vector_out(d, typenum)
        self.work = _Scratch((2 * self.nt + 4) * d)

    cdef void run(self, cnp.ndarray x, cnp.ndarray gamma, cnp.ndarray beta, double eps):
        """_bn_train of x (n, d) and contiguous gamma, beta into these outputs."""
        cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0), d = cnp.PyArray_DIM(x, 1)
        if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT:
            _bn_train[float](<float*>data_of(x), n, d, <float*>data_of(gamma),
                             <float*>data_of(beta), <float*>data_of(self.out),
                             <float*>data_of(self.xhat), <float*>data_of(self.inv_std), eps,
                             self.work.ptr, self.nt)
        else:
            _bn_train[double](<double*>data_of(x), n, d, <double*>data_of(gamma),
                              <double*>data_of(beta), <double*>data_of(self.out),
                              <double*>data_of(self.xhat), <double*>data_of(self.inv_std), eps,
                              self.work.ptr, self.nt)

    cdef tuple finish(self, running_mean, running_var, double momentum):
        """Update the running statistics with the batch's; returns (out, xhat, inv_std)."""
        cdef Py_ssize_t d = cnp.PyArray_DIM(self.inv_std, 0)
        cdef double* mean = _train_mean(self.work.ptr, d, self.nt)
        if d > 0:
            _update_running_arrays(running_mean, running_var, mean, mean + d, momentum)
        return self.out, self.xhat, self.inv_std


cdef inline bint _bn_train_ok(x, gamma, beta, running_mean, running_var, momentum, eps):
    """The arguments of batchnorm_forward_train are well formed (see above)."""
    if not (is_float_array(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2
            and cnp.PyArray_DIM(<cnp.ndarray>x, 0) >= 1):
        return False
    return (_params_ok(cnp.PyArray_TYPE(<cnp.ndarray>x), cnp.PyArray_DIM(<cnp.ndarray>x, 1),
                       gamma, beta, running_mean, running_var, True)
            and _bn_hyper_ok(momentum, eps))


def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum=0.9, eps=1e-6):
    """Training-mode batch norm of x (N, D) per column; returns (out, xhat, inv_std).

    running_mean/var (D,) are updated in place: r = momentum*r + (1-momentum)*batch,
    with the biased batch variance (the book's convention).
    """
    if not _bn_train_ok(x, gamma, beta, running_mean, running_var, momentum, eps):
        chk.float_array("x", x, 2)
        momentum, eps = chk.bn_train_args(x, gamma, beta, running_mean, running_var,
                                          momentum, eps)
    cdef cnp.ndarray xc = contiguous(x)
    cdef _TrainOutputs res = _TrainOutputs(cnp.PyArray_DIM(xc, 0), cnp.PyArray_DIM(xc, 1),
                                           cnp.PyArray_TYPE(xc))
    res.run(xc, contiguous(gamma), contiguous(beta), eps)
    return res.finish(running_mean, running_var, momentum)


cdef void _bn_infer_scale(const floating* gamma, const floating* beta,
                          floating* running_mean, Py_ssize_t mean_stride,
                          floating* running_var, Py_ssize_t var_stride, Py_ssize_t d,
                          double eps, floating* scale, floating* shift) noexcept nogil:
    # scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale, in the
    # dtype like the reference (sqrt of a float32 through double is correctly rounded).
    cdef Py_ssize_t j
    cdef floating t
    for j in range(d):
        t = _at(running_var, var_stride, j)[0] + <floating>eps
        scale[j] = gamma[j] / <floating>sqrt(<double>t)
        shift[j] = beta[j] - _at(running_mean, mean_stride, j)[0] * scale[j]


cdef _Scratch _infer_scale(cnp.ndarray gamma, cnp.ndarray beta, cnp.ndarray running_mean,
                           cnp.ndarray running_var, double eps):
    """scale and shift of inference-mode batch norm, d values each, in the dtype, from
    checked parameters (gamma, beta contiguous): work memory holding scale then shift."""
    cdef Py_ssize_t d = cnp.PyArray_DIM(gamma, 0)
    cdef Py_ssize_t sm = cnp.PyArray_STRIDE(running_mean, 0)
    cdef Py_ssize_t sv = cnp.PyArray_STRIDE(running_var, 0)
    cdef _Scratch work = _Scratch(2 * d)
    if cnp.PyArray_TYPE(gamma) == cnp.NPY_FLOAT:
        _bn_infer_scale[float](<float*>data_of(gamma), <float*>data_of(beta),
                               <float*>data_of(running_mean), sm, <float*>data_of(running_var),
                               sv, d, eps, <float*>work.ptr, <float*>(work.ptr + d))
    else:
        _bn_infer_scale[double](<double*>data_of(gamma), <double*>data_of(beta),
                                <double*>data_of(running_mean), sm, <double*>data_of(running_var),
                                sv, d, eps, work.ptr, work.ptr + d)
    return work


cdef void _bn_infer(const floating* x, Py_ssize_t n, Py_ssize_t d, const floating* mean,
                    const floating* scale, const floating* beta, floating* out,
                    int nt) noexcept nogil:
    # out = (x - running_mean) * scale + beta, in the reference's order; rows split over
    # threads
    cdef Py_ssize_t lo, hi
    cdef int t
    if n == 0 or d == 0:
        return
    if nt > n:
        nt = <int>n
    if nt <= 1:
        _colaffine_rows(x, d, 0, n, mean, scale, beta, out)
        return
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = part_start(n, nt, t)
        hi = part_start(n, nt, t + 1)
        _colaffine_rows(x, d, lo, hi, mean, scale, beta, out)


cdef inline void _colaffine_rows(const floating* x, Py_ssize_t d, Py_ssize_t lo, Py_ssize_t hi,
                                 const floating* mean, const floating* scale,
                                 const floating* beta, floating* out) noexcept nogil:
    if floating is float:
        zd_colaffine_f32(x + lo * d, d, hi - lo, d, mean, scale, beta, out + lo * d)
    else:
        zd_colaffine_f64(x + lo * d, d, hi - lo, d, mean, scale, beta, out + lo * d)


cdef inline bint _bn_infer_ok(x, gamma, beta, running_mean, running_var, eps):
    """The arguments of batchnorm_forward_infer are well formed (see above)."""
    if not (is_float_array(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2):
        return False
    return (_params_ok(cnp.PyArray_TYPE(<cnp.ndarray>x), cnp.PyArray_DIM(<cnp.ndarray>x, 1),
                       gamma, beta, running_mean, running_var, False)
            and _eps_ok(eps))


def batchnorm_forward_infer(x, gamma, beta, running_mean, running_var, eps=1e-6):
    """Inference-mode batch norm with the running statistics."""
    if not _bn_infer_ok(x, gamma, beta, running_mean, running_var, eps):
        chk.float_array("x", x, 2)
        chk.norm_params(x, gamma, beta, x.shape[1])
        chk.running_stats(x, running_mean, running_var, x.shape[1])
        eps = chk.real("eps", eps, 0.0, low_open=True)
    cdef cnp.ndarray xc = contiguous(x)
    cdef cnp.ndarray bc = contiguous(beta)
    cdef cnp.ndarray mc = contiguous(running_mean)
    cdef Py_ssize_t n = cnp.PyArray_DIM(xc, 0), d = cnp.PyArray_DIM(xc, 1)
    cdef cnp.ndarray out = new_matrix(n, d, cnp.PyArray_TYPE(xc))
    cdef _Scratch ss = _infer_scale(contiguous(gamma), bc, running_mean, running_var, eps)
    cdef int nt = work_threads(n * d, MIN_WORK)
    if cnp.PyArray_TYPE(xc) == cnp.NPY_FLOAT:
        _bn_infer[float](<float*>data_of(xc), n, d, <float*>data_of(mc), <float*>ss.ptr,
                         <float*>data_of(bc), <float*>data_of(out), nt)
    else:
        _bn_infer[double](<double*>data_of(xc), n, d, <double*>data_of(mc), ss.ptr,
                          <double*>data_of(bc), <double*>data_of(out), nt)
    return out


cdef void _bn_backward(const floating* dp, const floating* hp, Py_ssize_t n, Py_ssize_t d,
                       const floating* gamma, const floating* inv_std, floating* dx,
                       floating* dgamma, floating* dbeta, double* work, int nt) noexcept nogil:
    # work: (2*nt + 3) * d doubles.  With no rows the loops over rows run zero times (and
    # never index dp, hp or dx).
    cdef Py_ssize_t lo, hi, j
    cdef int t
    cdef double s1, s2, k
    if d == 0:
        return
    cdef double* acc1 = work                # per-thread sums, nt rows of d
    cdef double* acc2 = work + nt * d
    cdef floating* p = <floating*>(work + 2 * nt * d)
    cdef floating* q = <floating*>(work + (2 * nt + 1) * d)
    cdef floating* r = <floating*>(work + (2 * nt + 2) * d)
    memset(work, 0, 2 * nt * d * sizeof(double))
    # per-thread column sums of dout and dout * xhat
    if n > 0:
        if nt <= 1:
            _colsums_dot_rows(dp, hp, d, 0, n, acc1, acc2)
        else:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                lo = part_start(n, nt, t)
                hi = part_start(n, nt, t + 1)
                _colsums_dot_rows(dp, hp, d, lo, hi, acc1 + t * d, acc2 + t * d)
    # dx = k * (N*dout - dbeta - xhat*dgamma), k = gamma*inv_std/N
    for j in range(d):
        s1 = 0.0
        s2 = 0.0
        for t in range(nt):
            s1 = s1 + acc1[t * d + j]
            s2 = s2 + acc2[t * d + j]
        dbeta[j] = <floating>s1
        dgamma[j] = <floating>s2
        if n > 0:
            k = <double>gamma[j] * <double>inv_std[j] / <double>n
            p[j] = <floating>(k * n)
            q[j] = <floating>(-k * s2)
            r[j] = <floating>(-k * s1)
    if n == 0:
        return
    if nt <= 1:
        _colcombine_rows(dp, hp, d, 0, n, p, q, r, dx)
    else:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            lo = part_start(n, nt, t)
            hi = part_start(n, nt, t + 1)
            _colcombine_rows(dp, hp, d, lo, hi, p, q, r, dx)


cdef inline void _colsums_dot_rows(const floating* a, const floating* b, Py_ssize_t d,
                                   Py_ssize_t lo, Py_ssize_t hi, double* s1,
                                   double* s2) noexcept nogil:
    if hi <= lo:
        return
    if floating is float:
        zd_colsums_dot_f32(a + lo * d, b + lo * d, d, hi - lo, d, s1, s2)
    else:
        zd_colsums_dot_f64(a + lo * d, b + lo * d, d, hi - lo, d, s1, s2)


cdef inline void _colcombine_rows(const floating* a, const floating* c, Py_ssize_t d,
                                  Py_ssize_t lo, Py_ssize_t hi, const floating* p,
                                  const floating* q, const floating* r,
                                  floating* out) noexcept nogil:
    if hi <= lo:
        return
    if floating is float:
        zd_colcombine_f32(a + lo * d, c + lo * d, d, hi - lo, d, p, q, r, out + lo * d)
    else:
        zd_colcombine_f64(a + lo * d, c + lo * d, d, hi - lo, d, p, q, r, out + lo * d)


cdef inline int _backward_threads(Py_ssize_t n, Py_ssize_t d) except -1:
    cdef int nt = work_threads(n * d, MIN_WORK)
    return <int>max(n, 1) if nt > n else nt


cdef inline bint _bn_backward_ok(dout, xhat, gamma, inv_std):
    """The arguments of batchnorm_backward are well formed: native float arrays of one
    dtype, dout (N, D), xhat like dout, gamma and inv_std (D,)."""
    if not (is_float_array(dout) and cnp.PyArray_NDIM(<cnp.ndarray>dout) == 2):
        return False
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray>dout)
    cdef Py_ssize_t d = cnp.PyArray_DIM(<cnp.ndarray>dout, 1)
    return (_matrix(xhat, tn) and same_shape(dout, xhat) and _vector(gamma, tn, d)
            and _vector(inv_std, tn, d))


def batchnorm_backward(dout, xhat, gamma, inv_std):
    """Gradients of batch norm over the rows of (N, D): (dx, dgamma, dbeta)."""
    if not _bn_backward_ok(dout, xhat, gamma, inv_std):
        chk.float_array("dout", dout, 2)
        chk.bn_backward_args(dout, xhat, gamma, inv_std, (dout.shape[1],))
    cdef cnp.ndarray dc = contiguous(dout), hc = contiguous(xhat)
    cdef cnp.ndarray gc = contiguous(gamma), ic = contiguous(inv_std)
    cdef Py_ssize_t n = cnp.PyArray_DIM(dc, 0), d = cnp.PyArray_DIM(dc, 1)
    cdef int tn = cnp.PyArray_TYPE(dc)
    cdef cnp.ndarray dx = new_matrix(n, d, tn)
    cdef cnp.ndarray dgamma = _vector_out(d, tn), dbeta = _vector_out(d, tn)
    cdef int nt = _backward_threads(n, d)
    cdef _Scratch work = _Scratch((2 * nt + 3) * d)
    if tn == cnp.NPY_FLOAT:
        _bn_backward[float](<float*>data_of(dc), <float*>data_of(hc), n, d, <float*>data_of(gc),
                            <float*>data_of(ic), <float*>data_of(dx), <float*>data_of(dgamma),
                            <float*>data_of(dbeta), work.ptr, nt)
    else:
        _bn_backward[double](<double*>data_of(dc), <double*>data_of(hc), n, d,
                             <double*>data_of(gc), <double*>data_of(ic), <double*>data_of(dx),
                             <double*>data_of(dgamma), <double*>data_of(dbeta), work.ptr, nt)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------- fused affine + batch norm + ReLU
# The hidden block of the book's MultiLayerNetExtend in one call each way: the GEMM
# output, its normalisation and the ReLU stay in cache between the steps.

cdef void _affine_into(const floating* x, const floating* W, const floating* b, Py_ssize_t n,
                       Py_ssize_t d, Py_ssize_t m, floating* a, int gemm_nt) noexcept nogil:
    """a (n, m) = x (n, d) @ W (d, m) + b."""
    cdef Py_ssize_t i
    if m == 0:
        return
    for i in range(n):
        memcpy(a + i * m, b, m * sizeof(floating))
    if d > 0:
        gemm_rm_parallel(False, False, n, m, d, x, d, W, m, 1, a, m, gemm_nt)


cdef inline bint _abr_forward_ok(x, W, b, gamma, beta, running_mean, running_var, momentum,
                                 eps):
    if not (is_float_array(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2
            and cnp.PyArray_DIM(<cnp.ndarray>x, 0) >= 1):
        return False
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if not (_matrix(W, tn)
            and cnp.PyArray_DIM(<cnp.ndarray>W, 0) == cnp.PyArray_DIM(<cnp.ndarray>x, 1)):
        return False
    cdef Py_ssize_t m = cnp.PyArray_DIM(<cnp.ndarray>W, 1)
    return (_vector(b, tn, m)
            and _params_ok(tn, m, gamma, beta, running_mean, running_var, True)
            and _bn_hyper_ok(momentum, eps))


def affine_bn_relu_forward(x, W, b, gamma, beta, running_mean, running_var, momentum=0.9,
                           eps=1e-6):
    """relu(batchnorm(x @ W + b)) in training mode for x (N, D), W (D, M): returns
    (out, xhat, inv_std) and updates running_mean/var (M,) in place."""
    if not _abr_forward_ok(x, W, b, gamma, beta, running_mean, running_var, momentum, eps):
        momentum, eps = chk.affine_bn_relu_args(x, W, b, gamma, beta, running_mean,
                                                running_var, momentum, eps)
    cdef cnp.ndarray xc = contiguous(x), Wc = contiguous(W), bc = contiguous(b)
    cdef Py_ssize_t n = cnp.PyArray_DIM(xc, 0), d = cnp.PyArray_DIM(xc, 1)
    cdef Py_ssize_t m = cnp.PyArray_DIM(Wc, 1)
    cdef int tn = cnp.PyArray_TYPE(xc)
    cdef cnp.ndarray a = new_matrix(n, m, tn)
    cdef int gemm_nt = get_num_threads()
    if tn == cnp.NPY_FLOAT:
        _affine_into[float](<float*>data_of(xc), <float*>data_of(Wc), <float*>data_of(bc), n, d, m,
                            <float*>data_of(a), gemm_nt)
    else:
        _affine_into[double](<double*>data_of(xc), <double*>data_of(Wc), <double*>data_of(bc),
                             n, d, m, <double*>data_of(a), gemm_nt)
    cdef _TrainOutputs res = _TrainOutputs(n, m, tn)
    res.run(a, contiguous(gamma), contiguous(beta), eps)
    if tn == cnp.NPY_FLOAT:
        relu_into(<float*>data_of(res.out), <float*>data_of(res.out), n * m)
    else:
        relu_into(<double*>data_of(res.out), <double*>data_of(res.out), n * m)
    return res.finish(running_mean, running_var, momentum)


cdef void _abr_backward(const floating* dout, const floating* out, const floating* xhat,
                        const floating* gamma, const floating* inv_std, const floating* x,
                        const floating* W, Py_ssize_t n, Py_ssize_t m, Py_ssize_t d,
                        floating* dx, bint need_dx, floating* dW, floating* db,
                        floating* dgamma, floating* dbeta, floating* scratch, double* work,
                        int nt, int gemm_nt) noexcept nogil:
    # scratch: dr then da, n*m values each; work: (2*nt + 3) * m doubles, the batch
    # norm's, whose first m then take db's sums
    cdef Py_ssize_t k, j
    cdef floating zero = 0, g
    cdef floating* dr = scratch
    cdef floating* da = scratch + n * m
    cdef double* acc = work
    if m == 0:
        if need_dx:
            memset(dx, 0, n * d * sizeof(floating))
        return
    # the ReLU's gradient: dout where out > 0 (NaN compares false, as relu_backward)
    for k in range(n * m):
        g = dout[k]         # loaded unconditionally, so the select vectorises
        dr[k] = g if out[k] > zero else zero
    _bn_backward(dr, xhat, n, m, gamma, inv_std, da, dgamma, dbeta, work, nt)
    # db = column sums of da, in double (work is free again)
    memset(acc, 0, m * sizeof(double))
    for k in range(n):
        for j in range(m):
            acc[j] = acc[j] + da[k * m + j]
    for j in range(m):
        db[j] = <floating>acc[j]
    if d == 0:
        return
    if n == 0:
        memset(dW, 0, d * m * sizeof(floating))
        return
    if need_dx:     # dW = x.T @ da and dx = da @ W.T side by side
        gemm_rm_pair(True, False, d, m, n, x, d, da, m, dW, m,
                     False, True, n, d, m, da, m, W, m, dx, d, gemm_nt)
    else:
        gemm_rm_parallel(True, False, d, m, n, x, d, da, m, 0, dW, m, gemm_nt)


cdef inline bint _abr_backward_ok(dout, out, xhat, gamma, inv_std, x, W):
    if not _bn_backward_ok(dout, xhat, gamma, inv_std):
        return False
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray>dout)
    return (_matrix(out, tn) and same_shape(dout, out) and _matrix(x, tn) and _matrix(W, tn)
            and cnp.PyArray_DIM(<cnp.ndarray>x, 0) == cnp.PyArray_DIM(<cnp.ndarray>dout, 0)
            and cnp.PyArray_DIM(<cnp.ndarray>W, 0) == cnp.PyArray_DIM(<cnp.ndarray>x, 1)
            and cnp.PyArray_DIM(<cnp.ndarray>W, 1) == cnp.PyArray_DIM(<cnp.ndarray>dout, 1))


def affine_bn_relu_backward(dout, out, xhat, gamma, inv_std, x, W, need_dx=True):
    """Gradients of affine_bn_relu_forward: (dx, dW, db, dgamma, dbeta); dx is None when
    need_dx is false."""
    if not _abr_backward_ok(dout, out, xhat, gamma, inv_std, x, W):
        chk.affine_bn_relu_backward_args(dout, out, xhat, gamma, inv_std, x, W)
    cdef cnp.ndarray dc = contiguous(dout), oc = contiguous(out), hc = contiguous(xhat)
    cdef cnp.ndarray gc = contiguous(gamma), ic = contiguous(inv_std)
    cdef cnp.ndarray xc = contiguous(x), Wc = contiguous(W)
    cdef Py_ssize_t n = cnp.PyArray_DIM(dc, 0), m = cnp.PyArray_DIM(dc, 1)
    cdef Py_ssize_t d = cnp.PyArray_DIM(xc, 1)
    cdef int tn = cnp.PyArray_TYPE(dc)
    cdef bint want_dx = bool(need_dx)
    cdef cnp.ndarray dx = new_matrix(n if want_dx else 0, d, tn)
    cdef cnp.ndarray dW = new_matrix(d, m, tn)
    cdef cnp.ndarray db = _vector_out(m, tn), dgamma = _vector_out(m, tn)
    cdef cnp.ndarray dbeta = _vector_out(m, tn)
    cdef int nt = _backward_threads(n, m)
    cdef _Scratch work = _Scratch((2 * nt + 3) * m)
    # the ReLU's and the batch norm's input gradients, dr and da: (2n, m) of scratch
    cdef cnp.ndarray grads = new_matrix(2 * n, m, tn)
    if tn == cnp.NPY_FLOAT:
        _abr_backward[float](<float*>data_of(dc), <float*>data_of(oc), <float*>data_of(hc),
                             <float*>data_of(gc), <float*>data_of(ic), <float*>data_of(xc),
                             <float*>data_of(Wc), n, m, d, <float*>data_of(dx), want_dx,
                             <float*>data_of(dW), <float*>data_of(db), <float*>data_of(dgamma),
                             <float*>data_of(dbeta), <float*>data_of(grads), work.ptr, nt,
                             get_num_threads())
    else:
        _abr_backward[double](<double*>data_of(dc), <double*>data_of(oc), <double*>data_of(hc),
                              <double*>data_of(gc), <double*>data_of(ic), <double*>data_of(xc),
                              <double*>data_of(Wc), n, m, d, <double*>data_of(dx), want_dx,
                              <double*>data_of(dW), <double*>data_of(db), <double*>data_of(dgamma),
                              <double*>data_of(dbeta), <double*>data_of(grads), work.ptr, nt,
                              get_num_threads())
    return (dx if want_dx else None), dW, db, dgamma, dbeta


# ---------------------------------------------------------------- spatial batch norm (N, C, H, W)

cdef void _plane_norm(const floating* x, Py_ssize_t m, floating mhi, floating mlo, floating s,
                      floating g, floating b, floating* xhat, floating* out) noexcept nogil:
    # xhat = (x - mean) * s, out = xhat * g + b, mean = mhi + mlo
    cdef Py_ssize_t i
    cdef floating h
    for i in range(m):
        h = ((x[i] - mhi) - mlo) * s
        xhat[i] = h
        out[i] = h * g + b


cdef void _plane_affine(const floating* x, Py_ssize_t m, floating s, floating b,
                        floating* out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(m):
        out[i] = x[i] * s + b


cdef void _plane_combine(const floating* a, const floating* c, Py_ssize_t m, floating g,
                         floating p, floating q, floating r, floating* out) noexcept nogil:
    # out = p * (a * g) + q * c + r
    cdef Py_ssize_t i
    for i in range(m):
        out[i] = p * (a[i] * g) + q * c[i] + r


cdef inline void _plane_shifted_sums(const floating* x, Py_ssize_t m, double shift,
                                     double* s1, double* s2) noexcept nogil:
    if floating is float:
        zd_shifted_sums_f32(x, m, shift, s1, s2)
    else:
        zd_shifted_sums_f64(x, m, shift, s1, s2)


cdef inline void _plane_sum_dot(const floating* a, const floating* b, Py_ssize_t m, floating g,
                                double* s1, double* s2) noexcept nogil:
    if floating is float:
        zd_sum_dot_f32(a, b, m, g, s1, s2)
    else:
        zd_sum_dot_f64(a, b, m, g, s1, s2)


cdef void _sbn_train(const floating[:, :, ::1] x, const floating[::1] gamma,
                     const floating[::1] beta, floating[:] running_mean,
                     floating[:] running_var, double momentum, double eps,
                     floating[:, :, ::1] out, floating[:, :, ::1] xhat,
                     floating[::1] inv_std, double[::1] ps1, double[::1] ps2,
                     double[::1] mean, double[::1] var, floating[::1] mhi,
                     floating[::1] mlo, int nt) noexcept nogil:
    # x viewed as (N, C, H*W)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], hw = x.shape[2], planes = n * c
    cdef Py_ssize_t pl, ch, i
    cdef double s1, s2, inv
    if c == 0:
        return
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* hp = &xhat[0, 0, 0]
    cdef floating* op = &out[0, 0, 0]
    # per-plane shifted sums (shift: the channel's first value)
    if nt <= 1:
        for pl in range(planes):
            _plane_shifted_sums(xp + pl * hw, hw, <double>xp[(pl % c) * hw], &ps1[pl], &ps2[pl])
    else:
        for pl in prange(planes, num_threads=nt, schedule="static"):
            _plane_shifted_sums(xp + pl * hw, hw, <double>xp[(pl % c) * hw], &ps1[pl], &ps2[pl])
    # combine per channel in sample order
    for ch in range(c):
        s1 = 0.0
        s2 = 0.0
        for i in range(n):
            s1 = s1 + ps1[i * c + ch]
            s2 = s2 + ps2[i * c + ch]
        _finish_stats(s1, s2, <double>(n * hw), <double>xp[ch * hw], eps, &mean[ch],
                      &var[ch], &inv)
        inv_std[ch] = <floating>inv
        mhi[ch] = <floating>mean[ch]
        mlo[ch] = <floating>(mean[ch] - <double>mhi[ch])
    if nt <= 1:
        for pl in range(planes):
            ch = pl % c
            _plane_norm(xp + pl * hw, hw, mhi[ch], mlo[ch], inv_std[ch], gamma[ch], beta[ch],
                        hp + pl * hw, op + pl * hw)
    else:
        for pl in prange(planes, num_threads=nt, schedule="static"):
            _plane_norm(xp + pl * hw, hw, mhi[pl % c], mlo[pl % c], inv_std[pl % c],
                        gamma[pl % c], beta[pl % c], hp + pl * hw, op + pl * hw)
    _update_running(&running_mean[0], running_mean.strides[0], &running_var[0],
                    running_var.strides[0], c, &mean[0], &var[0], momentum)


def spatial_batchnorm_forward_train(x, gamma, beta, running_mean, running_var,
                                    momentum=0.9, eps=1e-6):
    """Batch norm of x (N, C, H, W) per channel over (N, H, W), like BatchNorm2d."""
    momentum, eps = chk.spatial_bn_train_args(x, gamma, beta, running_mean, running_var,
                                              momentum, eps)
    n, c, h, w = x.shape
    x, gamma, beta = _c(x), _c(gamma), _c(beta)
    dtype = x.dtype
    out = _empty((n, c, h, w), dtype)
    xhat = _empty((n, c, h, w), dtype)
    inv_std = np.empty(c, dtype=dtype)
    ps1 = np.empty(n * c, dtype=np.float64)
    ps2 = np.empty(n * c, dtype=np.float64)
    mean = np.empty(c, dtype=np.float64)
    var = np.empty(c, dtype=np.float64)
    mhi = np.empty(c, dtype=dtype)
    mlo = np.empty(c, dtype=dtype)
    shape3 = (n, c, h * w)
    cdef int nt = work_threads(x.size, MIN_WORK)
    if nt > n * c:
        nt = n * c
    if dtype == np.float32:
        _sbn_train[float](x.reshape(shape3), gamma, beta, running_mean, running_var, momentum,
                          eps, out.reshape(shape3), xhat.reshape(shape3), inv_std, ps1, ps2,
                          mean, var, mhi, mlo, nt)
    else:
        _sbn_train[double](x.reshape(shape3), gamma, beta, running_mean, running_var,
                           momentum, eps, out.reshape(shape3), xhat.reshape(shape3), inv_std,
                           ps1, ps2, mean, var, mhi, mlo, nt)
    return out, xhat, inv_std


cdef void _sbn_infer(const floating[:, :, ::1] x, const floating* scale,
                     const floating* shift, floating[:, :, ::1] out, int nt) noexcept nogil:
    cdef Py_ssize_t c = x.shape[1], hw = x.shape[2], planes = x.shape[0] * c, pl
    if planes == 0 or hw == 0:
        return
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* op = &out[0, 0, 0]
    if nt <= 1:
        for pl in range(planes):
            _plane_affine(xp + pl * hw, hw, scale[pl % c], shift[pl % c], op + pl * hw)
    else:
        for pl in prange(planes, num_threads=nt, schedule="static"):
            _plane_affine(xp + pl * hw, hw, scale[pl % c], shift[pl % c], op + pl * hw)


def spatial_batchnorm_forward_infer(x, gamma, beta, running_mean, running_var, eps=1e-6):
    chk.float_array("x", x, 4)
    c = x.shape[1]
    chk.norm_params(x, gamma, beta, c)
    chk.running_stats(x, running_mean, running_var, c)
    eps = chk.real("eps", eps, 0.0, low_open=True)
    x, gamma, beta = _c(x), _c(gamma), _c(beta)
    n, _, h, w = x.shape
    dtype = x.dtype
    out = _empty((n, c, h, w), dtype)
    shape3 = (n, c, h * w)
    cdef int nt = work_threads(x.size, MIN_WORK)
    if nt > n * c:
        nt = max(n * c, 1)
    cdef Py_ssize_t channels = c
    cdef _Scratch work = _infer_scale(gamma, beta, running_mean, running_var, eps)
    if dtype == np.float32:
        _sbn_infer[float](x.reshape(shape3), <float*>work.ptr, <float*>(work.ptr + channels),
                          out.reshape(shape3), nt)
    else:
        _sbn_infer[double](x.reshape(shape3), work.ptr, work.ptr + channels,
                           out.reshape(shape3), nt)
    return out


cdef void _sbn_backward(const floating[:, :, ::1] dout, const floating[:, :, ::1] xhat,
                        const floating[::1] gamma, const floating[::1] inv_std,
                        double[::1] ps1, double[::1] ps2, floating[::1] p, floating[::1] q,
                        floating[::1] r, floating[:, :, ::1] dx, floating[::1] dgamma,
                        floating[::1] dbeta, int nt) noexcept nogil:
    cdef Py_ssize_t n = dout.shape[0], c = dout.shape[1], hw = dout.shape[2]
    cdef Py_ssize_t planes = n * c, pl, ch, i
    cdef double s1, s2, k, m = <double>(n * hw)
    if c == 0:
        return
    if planes == 0 or hw == 0:
        for ch in range(c):
            dgamma[ch] = 0
            dbeta[ch] = 0
        return
    cdef const floating* dp = &dout[0, 0, 0]
    cdef const floating* hp = &xhat[0, 0, 0]
    cdef floating* xp = &dx[0, 0, 0]
    if nt <= 1:
        for pl in range(planes):
            _plane_sum_dot(dp + pl * hw, hp + pl * hw, hw, 1, &ps1[pl], &ps2[pl])
    else:
        for pl in prange(planes, num_threads=nt, schedule="static"):
            _plane_sum_dot(dp + pl * hw, hp + pl * hw, hw, 1, &ps1[pl], &ps2[pl])
    for ch in range(c):
        s1 = 0.0
        s2 = 0.0
        for i in range(n):
            s1 = s1 + ps1[i * c + ch]
            s2 = s2 + ps2[i * c + ch]
        dbeta[ch] = <floating>s1
        dgamma[ch] = <floating>s2
        k = <double>gamma[ch] * <double>inv_std[ch] / m
        p[ch] = <floating>(k * m)
        q[ch] = <floating>(-k * s2)
        r[ch] = <floating>(-k * s1)
    if nt <= 1:
        for pl in range(planes):
            ch = pl % c
            _plane_combine(dp + pl * hw, hp + pl * hw, hw, 1, p[ch], q[ch], r[ch],
                           xp + pl * hw)
    else:
        for pl in prange(planes, num_threads=nt, schedule="static"):
            _plane_combine(dp + pl * hw, hp + pl * hw, hw, 1, p[pl % c], q[pl % c], r[pl % c],
                           xp + pl * hw)


def spatial_batchnorm_backward(dout, xhat, gamma, inv_std):
    chk.float_array("dout", dout, 4)
    chk.bn_backward_args(dout, xhat, gamma, inv_std, (dout.shape[1],))
    dout, xhat, gamma, inv_std = _c(dout), _c(xhat), _c(gamma), _c(inv_std)
    n, c, h, w = dout.shape
    dtype = dout.dtype
    dx = _empty((n, c, h, w), dtype)
    dgamma = np.empty(c, dtype=dtype)
    dbeta = np.empty(c, dtype=dtype)
    ps1 = np.empty(n * c, dtype=np.float64)
    ps2 = np.empty(n * c, dtype=np.float64)
    p = np.empty(c, dtype=dtype)
    q = np.empty(c, dtype=dtype)
    r = np.empty(c, dtype=dtype)
    shape3 = (n, c, h * w)
    cdef int nt = work_threads(dout.size, MIN_WORK)
    if nt > n * c:
        nt = max(n * c, 1)
    if dtype == np.float32:
        _sbn_backward[float](dout.reshape(shape3), xhat.reshape(shape3), gamma, inv_std, ps1,
                             ps2, p, q, r, dx.reshape(shape3), dgamma, dbeta, nt)
    else:
        _sbn_backward[double](dout.reshape(shape3), xhat.reshape(shape3), gamma, inv_std,
                              ps1, ps2, p, q, r, dx.reshape(shape3), dgamma, dbeta, nt)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------- layer / instance norm

cdef void _rownorm_rows(const floating* x, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t m,
                        double eps, const floating* gamma, const floating* beta,
                        Py_ssize_t channels, floating* xhat, floating* out,
                        floating* inv_std) noexcept nogil:
    """Normalise rows lo..hi of length m (two passes over each row, in cache).

    gamma/beta per element of the row (channels == 0, layer norm) or per row, indexed
    by row % channels (instance norm).
    """
    cdef Py_ssize_t i, j
    cdef double mean, var, inv
    cdef floating mhi, mlo, s, h
    cdef const floating* xr
    cdef floating* hr
    cdef floating* orow
    for i in range(lo, hi):
        xr = x + i * m
        hr = xhat + i * m
        orow = out + i * m
        if floating is float:
            mean = zd_sum_f32(xr, m) / m
            var = zd_sqdev_f32(xr, m, mean) / m
        else:
            mean = zd_sum_f64(xr, m) / m
            var = zd_sqdev_f64(xr, m, mean) / m
        inv = 1.0 / sqrt(var + eps)
        inv_std[i] = <floating>inv
        mhi = <floating>mean
        mlo = <floating>(mean - <double>mhi)
        s = <floating>inv
        if channels == 0:
            for j in range(m):
                h = ((xr[j] - mhi) - mlo) * s
                hr[j] = h
                orow[j] = h * gamma[j] + beta[j]
        else:
            _plane_norm(xr, m, mhi, mlo, s, gamma[i % channels], beta[i % channels], hr, orow)


cdef void _rownorm(const floating[:, ::1] x, double eps, const floating[::1] gamma,
                   const floating[::1] beta, Py_ssize_t channels, floating[:, ::1] xhat,
                   floating[:, ::1] out, floating[::1] inv_std, int nt) noexcept nogil:
    cdef Py_ssize_t rows = x.shape[0], m = x.shape[1], lo, hi, i
    cdef int t
    cdef double nan
    if rows == 0:
        return
    if m == 0:
        # mean of nothing: NaN, like the reference (which also warns)
        nan = 0.0
        nan = nan / nan
        for i in range(rows):
            inv_std[i] = <floating>nan
        return
    if nt > rows:
        nt = <int>rows
    if nt <= 1:
        _rownorm_rows(&x[0, 0], 0, rows, m, eps, &gamma[0], &beta[0], channels, &xhat[0, 0],
                      &out[0, 0], &inv_std[0])
        return
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = part_start(rows, nt, t)
        hi = part_start(rows, nt, t + 1)
        _rownorm_rows(&x[0, 0], lo, hi, m, eps, &gamma[0], &beta[0], channels, &xhat[0, 0],
                      &out[0, 0], &inv_std[0])


cdef void _rownorm_backward_rows(const floating* dout, const floating* xhat,
                                 const floating* gamma, const floating* inv_std,
                                 Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t m,
                                 Py_ssize_t channels, double* acc1, double* acc2,
                                 floating* dx) noexcept nogil:
    """dx of rows lo..hi: inv_std/m * (m*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat)),
    dxhat = dout * gamma.  Layer norm (channels == 0): gamma per element, and the
    per-column sums of dout (acc1) and dout*xhat (acc2) accumulate into this thread's
    buffers.  Instance norm: gamma per row (row % channels), and acc1/acc2 take the row's
    own sums (one slot per row)."""
    cdef Py_ssize_t i, j
    cdef double s1, s2, k, a1, a2
    cdef floating g, p, q, r
    cdef const floating* dr
    cdef const floating* hr
    cdef floating* xr
    cdef floating dm = <floating>max(m, 1)
    for i in range(lo, hi):
        dr = dout + i * m
        hr = xhat + i * m
        xr = dx + i * m
        if channels == 0:
            if floating is float:
                zd_wsum_dot_f32(dr, gamma, hr, m, &s1, &s2)
                zd_colsums_dot_f32(dr, hr, m, 1, m, acc1, acc2)
            else:
                zd_wsum_dot_f64(dr, gamma, hr, m, &s1, &s2)
                zd_colsums_dot_f64(dr, hr, m, 1, m, acc1, acc2)
            g = 1
        else:
            g = gamma[i % channels]
            _plane_sum_dot(dr, hr, m, g, &s1, &s2)
            _plane_sum_dot(dr, hr, m, 1, &a1, &a2)
            acc1[i] = a1
            acc2[i] = a2
        # k = inv_std / m in the dtype, like the reference's inv_std[:, None] / max(d, 1)
        k = <double>(inv_std[i] / dm)
        p = <floating>(k * m)
        q = <floating>(-k * s2)
        r = <floating>(-k * s1)
        if channels == 0:
            for j in range(m):
                xr[j] = p * (dr[j] * gamma[j]) + q * hr[j] + r
        else:
            _plane_combine(dr, hr, m, g, p, q, r, xr)


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """Normalise each row of x (N, D) over its D features; gamma, beta (D,)."""
    eps = chk.rownorm_forward_args(x, gamma, beta, eps, 2)
    x, gamma, beta = _c(x), _c(gamma), _c(beta)
    n, d = x.shape
    dtype = x.dtype
    out = _empty((n, d), dtype)
    xhat = _empty((n, d), dtype)
    inv_std = np.empty(n, dtype=dtype)
    cdef int nt = work_threads(x.size, MIN_WORK)
    if dtype == np.float32:
        _rownorm[float](x, eps, gamma, beta, 0, xhat, out, inv_std, nt)
    else:
        _rownorm[double](x, eps, gamma, beta, 0, xhat, out, inv_std, nt)
    return out, xhat, inv_std


cdef void _layernorm_backward(const floating[:, ::1] dout, const floating[:, ::1] xhat,
                              const floating[::1] gamma, const floating[::1] inv_std,
                              double[:, ::1] acc1, double[:, ::1] acc2, floating[:, ::1] dx,
                              floating[::1] dgamma, floating[::1] dbeta,
                              int nt) noexcept nogil:
    cdef Py_ssize_t n = dout.shape[0], d = dout.shape[1], lo, hi, j
    cdef int t
    cdef double s1, s2
    if d == 0:
        return
    if n > 0:
        if nt <= 1:
            _rownorm_backward_rows(&dout[0, 0], &xhat[0, 0], &gamma[0], &inv_std[0], 0, n, d,
                                   0, &acc1[0, 0], &acc2[0, 0], &dx[0, 0])
        else:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                lo = part_start(n, nt, t)
                hi = part_start(n, nt, t + 1)
                _rownorm_backward_rows(&dout[0, 0], &xhat[0, 0], &gamma[0], &inv_std[0], lo,
                                       hi, d, 0, &acc1[t, 0], &acc2[t, 0], &dx[0, 0])
    # combine the per-thread sums in thread order
    for j in range(d):
        s1 = 0.0
        s2 = 0.0
        for t in range(nt):
            s1 = s1 + acc1[t, j]
            s2 = s2 + acc2[t, j]
        dbeta[j] = <floating>s1
        dgamma[j] = <floating>s2


def layernorm_backward(dout, xhat, gamma, inv_std):
    chk.layernorm_backward_args(dout, xhat, gamma, inv_std)
    dout, xhat, gamma, inv_std = _c(dout), _c(xhat), _c(gamma), _c(inv_std)
    n, d = dout.shape
    dtype = dout.dtype
    cdef int nt = work_threads(dout.size, MIN_WORK)
    if nt > n:
        nt = max(n, 1)
    dx = _empty((n, d), dtype)
    dgamma = np.empty(d, dtype=dtype)
    dbeta = np.empty(d, dtype=dtype)
    acc1 = np.zeros((nt, d), dtype=np.float64)
    acc2 = np.zeros((nt, d), dtype=np.float64)
    if dtype == np.float32:
        _layernorm_backward[float](dout, xhat, gamma, inv_std, acc1, acc2, dx, dgamma, dbeta, nt)
    else:
        _layernorm_backward[double](dout, xhat, gamma, inv_std, acc1, acc2, dx, dgamma, dbeta,
                                    nt)
    return dx, dgamma, dbeta


def instancenorm_forward(x, gamma, beta, eps=1e-5):
    """Normalise each (sample, channel) plane of x (N, C, H, W); gamma, beta (C,)."""
    eps = chk.rownorm_forward_args(x, gamma, beta, eps, 4)
    n, c, h, w = x.shape
    x, gamma, beta = _c(x), _c(gamma), _c(beta)
    dtype = x.dtype
    out = _empty((n, c, h, w), dtype)
    xhat = _empty((n, c, h, w), dtype)
    inv_std = np.empty((n, c), dtype=dtype)
    shape2 = (n * c, h * w)
    cdef int nt = work_threads(x.size, MIN_WORK)
    if dtype == np.float32:
        _rownorm[float](x.reshape(shape2), eps, gamma, beta, c, xhat.reshape(shape2),
                        out.reshape(shape2), inv_std.reshape(-1), nt)
    else:
        _rownorm[double](x.reshape(shape2), eps, gamma, beta, c, xhat.reshape(shape2),
                         out.reshape(shape2), inv_std.reshape(-1), nt)
    return out, xhat, inv_std


cdef void _instancenorm_backward(const floating[:, ::1] dout, const floating[:, ::1] xhat,
                                 const floating[::1] gamma, const floating[::1] inv_std,
                                 double[::1] ps1, double[::1] ps2, floating[:, ::1] dx,
                                 floating[::1] dgamma, floating[::1] dbeta,
                                 int nt) noexcept nogil:
    # dout, xhat as (N*C, H*W): one row per plane
    cdef Py_ssize_t planes = dout.shape[0], m = dout.shape[1], c = gamma.shape[0]
    cdef Py_ssize_t lo, hi, ch, pl
    cdef int t
    cdef double s1, s2
    if planes > 0 and m > 0:
        if nt <= 1:
            _rownorm_backward_rows(&dout[0, 0], &xhat[0, 0], &gamma[0], &inv_std[0], 0,
                                   planes, m, c, &ps1[0], &ps2[0], &dx[0, 0])
        else:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                lo = part_start(planes, nt, t)
                hi = part_start(planes, nt, t + 1)
                _rownorm_backward_rows(&dout[0, 0], &xhat[0, 0], &gamma[0], &inv_std[0], lo,
                                       hi, m, c, &ps1[0], &ps2[0], &dx[0, 0])
    else:
        for pl in range(planes):
            ps1[pl] = 0.0
            ps2[pl] = 0.0
    # per-channel sums over the samples, in sample order
    for ch in range(c):
        s1 = 0.0
        s2 = 0.0
        pl = ch
        while pl < planes:
            s1 = s1 + ps1[pl]
            s2 = s2 + ps2[pl]
            pl = pl + c
        dbeta[ch] = <floating>s1
        dgamma[ch] = <floating>s2


def instancenorm_backward(dout, xhat, gamma, inv_std):
    chk.instancenorm_backward_args(dout, xhat, gamma, inv_std)
    n, c, h, w = dout.shape
    dout, xhat, gamma, inv_std = _c(dout), _c(xhat), _c(gamma), _c(inv_std)
    dtype = dout.dtype
    dx = _empty((n, c, h, w), dtype)
    dgamma = np.empty(c, dtype=dtype)
    dbeta = np.empty(c, dtype=dtype)
    ps1 = np.empty(n * c, dtype=np.float64)
    ps2 = np.empty(n * c, dtype=np.float64)
    shape2 = (n * c, h * w)
    cdef int nt = work_threads(dout.size, MIN_WORK)
    if nt > n * c:
        nt = max(n * c, 1)
    if dtype == np.float32:
        _instancenorm_backward[float](dout.reshape(shape2), xhat.reshape(shape2), gamma,
                                      inv_std.reshape(-1), ps1, ps2, dx.reshape(shape2),
                                      dgamma, dbeta, nt)
    else:
        _instancenorm_backward[double](dout.reshape(shape2), xhat.reshape(shape2), gamma,
                                       inv_std.reshape(-1), ps1, ps2, dx.reshape(shape2),
                                       dgamma, dbeta, nt)
    return dx, dgamma, dbeta
