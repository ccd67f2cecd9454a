# Row-major GEMM on top of scipy's BLAS (nogil, float32/float64).
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm_rm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                         const floating* a, int lda, const floating* b, int ldb,
                         floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C (m, n) = alpha * op(A) @ op(B) + beta * C; lda/ldb/ldc are row lengths.

    BLAS is column-major, where a row-major matrix reads as its transpose; so compute
    C^T = op(B)^T @ op(A)^T by swapping the operands (as scikit-learn's _cython_blas).
    Callers skip m, n or k == 0 (BLAS rejects leading dimensions of 0).
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda, &beta,
              c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda, &beta,
              c, &ldc)
