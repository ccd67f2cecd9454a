# Row-major GEMM on top of scipy's BLAS (nogil, float32/float64), and the control of
# that BLAS library's own threads.
#
# zerodl's kernels call BLAS single-threaded and split the work across zerodl's OpenMP
# threads themselves.  Two thread pools on the same cores (libgomp's and OpenBLAS's, both
# spinning while they wait for work) cost an MLP training step 8-10x on a 2-core machine
# (1 ms -> 8-10 ms measured); one pool, owned by zerodl, keeps the second core useful.
# The BLAS library is found from the address of scipy's sgemm (dladdr), so the thread
# setter belongs to exactly the library the kernels call, whatever its symbol prefix.
from cython cimport floating
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef extern from *:
    """
    #include <dlfcn.h>
    typedef int (*zd_blas_get_fn)(void);
    typedef void (*zd_blas_set_fn)(int);
    static zd_blas_get_fn zd_blas_get = NULL;
    static zd_blas_set_fn zd_blas_set = NULL;
    static int zd_blas_probed = 0;

    /* Find the thread getter and setter of the library that holds `symbol`. */
    static void zd_blas_probe(void *symbol) {
        static const char *names[][2] = {
            {"openblas_get_num_threads", "openblas_set_num_threads"},
            {"scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"},
            {"openblas_get_num_threads64_", "openblas_set_num_threads64_"},
            {"bli_thread_get_num_threads", "bli_thread_set_num_threads"},
            {"MKL_Get_Max_Threads", "MKL_Set_Num_Threads"},
        };
        Dl_info info;
        void *lib;
        size_t i;
        zd_blas_probed = 1;
        if (!dladdr(symbol, &info) || info.dli_fname == NULL)
            return;
        lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
        if (lib == NULL)
            return;
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            void *get = dlsym(lib, names[i][0]);
            void *set = dlsym(lib, names[i][1]);
            if (get != NULL && set != NULL) {
                zd_blas_get = (zd_blas_get_fn)get;
                zd_blas_set = (zd_blas_set_fn)set;
                break;
            }
        }
        /* scipy keeps the library loaded; this only drops the reference NOLOAD took */
        dlclose(lib);
    }
    """
    ctypedef int (*zd_blas_get_fn)() noexcept nogil
    ctypedef void (*zd_blas_set_fn)(int) noexcept nogil
    zd_blas_get_fn zd_blas_get
    zd_blas_set_fn zd_blas_set
    int zd_blas_probed
    void zd_blas_probe(void* symbol) noexcept nogil


cdef inline bint blas_controllable() noexcept nogil:
    """Whether the BLAS library's thread count can be set (found on first use)."""
    if not zd_blas_probed:
        zd_blas_probe(<void*> sgemm)
    return zd_blas_set != NULL


cdef inline int blas_hold_single() noexcept nogil:
    """Make BLAS single-threaded; returns the count to give back to blas_release
    (0 when there is nothing to restore, -1 when BLAS's threads cannot be controlled:
    then only one thread may call BLAS)."""
    cdef int prev
    if not blas_controllable():
        return -1
    prev = zd_blas_get()
    if prev <= 1:
        return 0
    zd_blas_set(1)
    return prev


cdef inline void blas_release(int held) noexcept nogil:
    if held > 1:
        zd_blas_set(held)


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


# Multiply-adds per thread below which splitting a GEMM costs more than it saves.
cdef enum:
    GEMM_MIN_WORK = 1 << 18


cdef inline int gemm_threads(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                             int max_threads) noexcept nogil:
    """Threads worth giving a (m, n, k) GEMM: one per GEMM_MIN_WORK multiply-adds."""
    cdef Py_ssize_t work = m * n * k, t
    if max_threads <= 1 or work < 2 * GEMM_MIN_WORK or (m < 2 and n < 2):
        return 1
    t = work // GEMM_MIN_WORK
    return <int>(t if t < max_threads else max_threads)


cdef inline void gemm_rm_piece(bint trans_a, bint trans_b, int m, int n, int k,
                               floating alpha, const floating* a, int lda,
                               const floating* b, int ldb, floating beta, floating* c,
                               int ldc, int parts, int i) noexcept nogil:
    """Piece i of `parts` of gemm_rm: C cut into blocks of rows (or of columns when C has
    fewer rows than columns); parts must not exceed that dimension."""
    cdef int lo, hi
    if m >= n:
        lo = (m // parts) * i + (i if i < m % parts else m % parts)
        hi = lo + m // parts + (1 if i < m % parts else 0)
        # rows lo..hi of op(A): rows of A, or columns of the stored A^T
        gemm_rm(trans_a, trans_b, hi - lo, n, k, alpha,
                a + (lo if trans_a else <Py_ssize_t> lo * lda), lda, b, ldb, beta,
                c + <Py_ssize_t> lo * ldc, ldc)
    else:
        lo = (n // parts) * i + (i if i < n % parts else n % parts)
        hi = lo + n // parts + (1 if i < n % parts else 0)
        # columns lo..hi of op(B): columns of B, or rows of the stored B^T
        gemm_rm(trans_a, trans_b, m, hi - lo, k, alpha, a, lda,
                b + (<Py_ssize_t> lo * ldb if trans_b else lo), ldb, beta, c + lo, ldc)


cdef inline int gemm_parts(int m, int n, int nt) noexcept nogil:
    """Pieces a (m, n) product splits into on nt threads: at most one per row (column)."""
    cdef int dim = m if m >= n else n
    return nt if nt < dim else dim


cdef inline void gemm_rm_split(bint trans_a, bint trans_b, int m, int n, int k,
                               floating alpha, const floating* a, int lda,
                               const floating* b, int ldb, floating beta, floating* c,
                               int ldc, int nt) noexcept nogil:
    """gemm_rm with C cut into nt pieces (gemm_rm_piece), one single-threaded BLAS call
    per OpenMP thread.  The caller holds BLAS to one thread (blas_hold_single) when
    nt > 1."""
    cdef int i, parts = gemm_parts(m, n, nt)
    if parts <= 1:
        gemm_rm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    for i in prange(parts, num_threads=parts, schedule="static", chunksize=1):
        gemm_rm_piece(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                      parts, i)


cdef inline void gemm_rm_parallel(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                                  Py_ssize_t k, const floating* a, Py_ssize_t lda,
                                  const floating* b, Py_ssize_t ldb, floating beta,
                                  floating* c, Py_ssize_t ldc, int max_threads) noexcept nogil:
    """Row-major C (m, n) = op(A) @ op(B) + beta * C on up to max_threads of zerodl's
    OpenMP threads (gemm_rm_split), with BLAS held to one thread for the call (and the
    product on one thread when BLAS's threads cannot be set).  Nothing when a dimension
    is 0: C keeps its values, so callers clear it themselves where k == 0 means zeros."""
    cdef int held
    if m == 0 or n == 0 or k == 0:
        return
    held = blas_hold_single()
    if held < 0:
        max_threads = 1
    gemm_rm_split(trans_a, trans_b, <int> m, <int> n, <int> k, <floating> 1, a, <int> lda,
                  b, <int> ldb, beta, c, <int> ldc, gemm_threads(m, n, k, max_threads))
    blas_release(held)


cdef inline void gemm_rm_pair(bint ta1, bint tb1, Py_ssize_t m1, Py_ssize_t n1,
                              Py_ssize_t k1, const floating* a1, Py_ssize_t lda1,
                              const floating* b1, Py_ssize_t ldb1, floating* c1,
                              Py_ssize_t ldc1, bint ta2, bint tb2, Py_ssize_t m2,
                              Py_ssize_t n2, Py_ssize_t k2, const floating* a2,
                              Py_ssize_t lda2, const floating* b2, Py_ssize_t ldb2,
                              floating* c2, Py_ssize_t ldc2, int max_threads) noexcept nogil:
    """Two independent products, C1 = op(A1) @ op(B1) and C2 = op(A2) @ op(B2) (beta 0),
    in one parallel region: half the threads cut each.  A backward's dx and dW products
    do equal work (N*D*M multiply-adds each), so neither half waits for the other, and at
    the book's sizes a whole product per thread runs faster than two split ones in turn
    (one fork and join, and BLAS gets the full shape).  Falls back to gemm_rm_parallel
    twice when either product is empty, the pair is too small to split, the thread count
    is odd (halves would be unequal) or BLAS's threads cannot be held to one (then
    gemm_rm_parallel runs each product on one thread)."""
    cdef int held, nt, p1, p2, i
    cdef Py_ssize_t work = m1 * n1 * k1 + m2 * n2 * k2
    nt = gemm_threads(work, 1, 1, max_threads)
    if (nt < 2 or nt % 2 or m1 == 0 or n1 == 0 or k1 == 0 or m2 == 0 or n2 == 0 or k2 == 0
            or not blas_controllable()):
        gemm_rm_parallel(ta1, tb1, m1, n1, k1, a1, lda1, b1, ldb1, 0, c1, ldc1, max_threads)
        gemm_rm_parallel(ta2, tb2, m2, n2, k2, a2, lda2, b2, ldb2, 0, c2, ldc2, max_threads)
        return
    held = blas_hold_single()       # >= 0: controllable, as just checked
    p1 = gemm_parts(<int> m1, <int> n1, nt // 2)
    p2 = gemm_parts(<int> m2, <int> n2, nt // 2)
    for i in prange(p1 + p2, num_threads=p1 + p2, schedule="static", chunksize=1):
        if i < p1:
            gemm_rm_piece(ta1, tb1, <int> m1, <int> n1, <int> k1, <floating> 1, a1,
                          <int> lda1, b1, <int> ldb1, <floating> 0, c1, <int> ldc1, p1, i)
        else:
            gemm_rm_piece(ta2, tb2, <int> m2, <int> n2, <int> k2, <floating> 1, a2,
                          <int> lda2, b2, <int> ldb2, <floating> 0, c2, <int> ldc2, p2,
                          i - p1)
    blas_release(held)
