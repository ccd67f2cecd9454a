"""Optimizer updates, compiled: in place, one pass over memory per array, one call per list.

Each call flattens its lists into one virtual array: a table of base pointers and
offsets.  Threads take equal contiguous ranges of that virtual array, so a list of many
small parameters and a list of one huge one are split alike, and every element is read
and written exactly once (Adam: read p, g, m, v; write p, m, v).

Layouts: C-contiguous arrays are updated through their own memory.  If params[i] is
Fortran-ordered, index i is processed through the transposes (p.T is C-contiguous), so a
transposed weight matrix costs nothing either.  Any other in-place array (a strided view)
is copied into a contiguous buffer, updated, and copied back into the view: the update
is then still exact and nothing outside the view is written.  Gradients are read-only
inputs and are made contiguous once when needed.

Hyperparameters are combined in double and rounded once to the array's dtype, following
the reference's order of operations; float32 arrays are updated in float32 arithmetic.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport intptr_t

from cpython.mem cimport PyMem_Free, PyMem_Malloc

from zerodl._kernels import _checks as chk
from zerodl._kernels._ndarray cimport is_array_of, is_float_array, same_shape
from zerodl._kernels._util cimport part_start, work_threads

cnp.import_array()

# sqrt-using updates (AdaGrad, RMSprop, Adam/AdamW) in explicit SIMD: GCC leaves a libm
# call behind every sqrt for errno (unless the whole build has -fno-math-errno), which
# keeps its vectoriser off these loops.  Each body is written once as a macro and
# instantiated for AVX-512, AVX2 and SSE2; the widest one the CPU runs is chosen once.
cdef extern from *:
    """
    #include <math.h>
    #include <stddef.h>

    typedef struct { double lr, c1, c2, eps, decay, shrink; } zd_hyper;

    /* h += g*g;  p -= lr*g / (sqrt(h) + eps) */
    #define ZD_ADAGRAD(V, SQRT, P, G, H, lr, eps) do {                                  \\
            V g_ = (G), h_ = (H) + g_ * g_; (H) = h_;                                 \\
            (P) = (P) - (lr) * g_ / (SQRT(h_) + (eps)); } while (0)
    /* h = decay*h + (1-decay)*g*g;  p -= lr*g / (sqrt(h) + eps) */
    #define ZD_RMSPROP(V, SQRT, P, G, H, lr, decay, omd, eps) do {                      \\
            V g_ = (G), h_ = (H) * (decay); h_ = h_ + (omd) * g_ * g_; (H) = h_;      \\
            (P) = (P) - (lr) * g_ / (SQRT(h_) + (eps)); } while (0)
    /* m += (1-b1)(g-m);  v += (1-b2)(g*g-v);  p = p*shrink - lr_t*m / (sqrt(v) + eps) */
    #define ZD_ADAM(V, SQRT, P, G, M, W, c1, c2, lrt, eps, shrink) do {                 \\
            V g_ = (G), m_ = (M), v_ = (W);                                           \\
            m_ = m_ + (c1) * (g_ - m_); v_ = v_ + (c2) * (g_ * g_ - v_);              \\
            (M) = m_; (W) = v_;                                                       \\
            (P) = (P) * (shrink) - (lrt) * m_ / (SQRT(v_) + (eps)); } while (0)

    /* One step of NW elements at P, G, S1, S2 (load, update, store). */
    #define ZD_ADAGRAD_STEP(V, LOAD, STORE, VSQRT, P, G, S1, S2) do {                       \\
            V vp = LOAD(P), vh = LOAD(S1);                                                 \\
            ZD_ADAGRAD(V, VSQRT, vp, LOAD(G), vh, vlr, veps);                              \\
            STORE(P, vp); STORE(S1, vh); } while (0)
    #define ZD_RMSPROP_STEP(V, LOAD, STORE, VSQRT, P, G, S1, S2) do {                       \\
            V vp = LOAD(P), vh = LOAD(S1);                                                 \\
            ZD_RMSPROP(V, VSQRT, vp, LOAD(G), vh, vlr, vdec, vomd, veps);                  \\
            STORE(P, vp); STORE(S1, vh); } while (0)
    #define ZD_ADAM_STEP(V, LOAD, STORE, VSQRT, P, G, S1, S2) do {                          \\
            V vp = LOAD(P), vm = LOAD(S1), vv = LOAD(S2);                                  \\
            ZD_ADAM(V, VSQRT, vp, LOAD(G), vm, vv, vc1, vc2, vlrt, veps, vsh);             \\
            STORE(P, vp); STORE(S1, vm); STORE(S2, vv); } while (0)

    /* Steps over n elements.  The last, partial step goes through a zero-padded copy, so
       that every element is computed by the same instructions (a scalar tail could round
       differently, e.g. by fusing other multiply-adds): an element's result does not
       depend on where it sits in the list. */
    #define ZD_STEPS(T, NW, STEP, V, LOAD, STORE, VSQRT) do {                               \\
            ptrdiff_t i_ = 0, k_;                                                          \\
            for (; i_ + NW <= n; i_ += NW)                                                 \\
                STEP(V, LOAD, STORE, VSQRT, p + i_, g + i_, s1 + i_, s2 + i_);             \\
            if (i_ < n) {                                                                  \\
                ptrdiff_t r_ = n - i_;                                                     \\
                T bp_[NW], bg_[NW], b1_[NW], b2_[NW];                                      \\
                for (k_ = 0; k_ < NW; k_++) {                                              \\
                    bp_[k_] = k_ < r_ ? p[i_ + k_] : (T)0;                                 \\
                    bg_[k_] = k_ < r_ ? g[i_ + k_] : (T)0;                                 \\
                    b1_[k_] = k_ < r_ ? s1[i_ + k_] : (T)0;                                \\
                    b2_[k_] = k_ < r_ ? s2[i_ + k_] : (T)0;                                \\
                }                                                                          \\
                STEP(V, LOAD, STORE, VSQRT, bp_, bg_, b1_, b2_);                           \\
                for (k_ = 0; k_ < r_; k_++) {                                              \\
                    p[i_ + k_] = bp_[k_]; s2[i_ + k_] = b2_[k_]; s1[i_ + k_] = b1_[k_];     \\
                }                                                                          \\
            } } while (0)

    /* One ISA's kernels for element type T.  Single-state updates pass s2 = s1: the
       tail's copy-back writes s2 first, so the updated s1 is what stays. */
    #define ZD_SQRT_KERNELS(ISA, ATTR, T, SUF, V, NW, LOAD, STORE, SET1, VSQRT)              \\
    ATTR static void zd_adagrad_##SUF##_##ISA(T* p, const T* g, T* s1, ptrdiff_t n,        \\
                                              const zd_hyper* hy) {                        \\
        T* s2 = s1;                                                                        \\
        V vlr = SET1((T)hy->lr), veps = SET1((T)hy->eps);                                  \\
        ZD_STEPS(T, NW, ZD_ADAGRAD_STEP, V, LOAD, STORE, VSQRT);                           \\
    }                                                                                      \\
    ATTR static void zd_rmsprop_##SUF##_##ISA(T* p, const T* g, T* s1, ptrdiff_t n,        \\
                                              const zd_hyper* hy) {                        \\
        T* s2 = s1;                                                                        \\
        V vlr = SET1((T)hy->lr), veps = SET1((T)hy->eps);                                  \\
        V vdec = SET1((T)hy->decay), vomd = SET1((T)hy->c1);                               \\
        ZD_STEPS(T, NW, ZD_RMSPROP_STEP, V, LOAD, STORE, VSQRT);                           \\
    }                                                                                      \\
    ATTR static void zd_adam_##SUF##_##ISA(T* p, const T* g, T* s1, T* s2, ptrdiff_t n,    \\
                                           const zd_hyper* hy) {                           \\
        V vc1 = SET1((T)hy->c1), vc2 = SET1((T)hy->c2), vlrt = SET1((T)hy->lr);           \\
        V veps = SET1((T)hy->eps), vsh = SET1((T)hy->shrink);                              \\
        ZD_STEPS(T, NW, ZD_ADAM_STEP, V, LOAD, STORE, VSQRT);                              \\
    }

    #define ZD_ID(x) (x)
    #define ZD_LOAD1(ptr) (*(ptr))
    #define ZD_STORE1(ptr, x) (*(ptr) = (x))
    ZD_SQRT_KERNELS(scalar, , float, f32, float, 1, ZD_LOAD1, ZD_STORE1, ZD_ID, sqrtf)
    ZD_SQRT_KERNELS(scalar, , double, f64, double, 1, ZD_LOAD1, ZD_STORE1, ZD_ID, sqrt)

    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    #define ZD_X86 1
    #include <immintrin.h>
    ZD_SQRT_KERNELS(sse2, , float, f32, __m128, 4, _mm_loadu_ps, _mm_storeu_ps,
                    _mm_set1_ps, _mm_sqrt_ps)
    ZD_SQRT_KERNELS(sse2, , double, f64, __m128d, 2, _mm_loadu_pd, _mm_storeu_pd,
                    _mm_set1_pd, _mm_sqrt_pd)
    ZD_SQRT_KERNELS(avx2, __attribute__((target("avx2"))), float, f32, __m256, 8,
                    _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_sqrt_ps)
    ZD_SQRT_KERNELS(avx2, __attribute__((target("avx2"))), double, f64, __m256d, 4,
                    _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd, _mm256_sqrt_pd)
    ZD_SQRT_KERNELS(avx512, __attribute__((target("avx512f"))), float, f32, __m512, 16,
                    _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_sqrt_ps)
    ZD_SQRT_KERNELS(avx512, __attribute__((target("avx512f"))), double, f64, __m512d, 8,
                    _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd, _mm512_sqrt_pd)
    #endif

    /* 0: scalar, 1: SSE2, 2: AVX2, 3: AVX-512F; set once at import (zd_pick_isa). */
    static int zd_isa = 0;
    static int zd_pick_isa(void) {
    #ifdef ZD_X86
        __builtin_cpu_init();
        zd_isa = __builtin_cpu_supports("avx512f") ? 3 : __builtin_cpu_supports("avx2") ? 2 : 1;
    #endif
        return zd_isa;
    }

    #ifdef ZD_X86
    #define ZD_DISPATCH(NAME, SUF, ...) do {                                                \\
            if (zd_isa == 3) NAME##_##SUF##_avx512(__VA_ARGS__);                            \\
            else if (zd_isa == 2) NAME##_##SUF##_avx2(__VA_ARGS__);                         \\
            else if (zd_isa == 1) NAME##_##SUF##_sse2(__VA_ARGS__);                         \\
            else NAME##_##SUF##_scalar(__VA_ARGS__); } while (0)
    #else
    #define ZD_DISPATCH(NAME, SUF, ...) NAME##_##SUF##_scalar(__VA_ARGS__)
    #endif

    static void zd_adagrad_f32(float* p, const float* g, float* h, ptrdiff_t n, const zd_hyper* hy)
    { ZD_DISPATCH(zd_adagrad, f32, p, g, h, n, hy); }
    static void zd_adagrad_f64(double* p, const double* g, double* h, ptrdiff_t n, const zd_hyper* hy)
    { ZD_DISPATCH(zd_adagrad, f64, p, g, h, n, hy); }
    static void zd_rmsprop_f32(float* p, const float* g, float* h, ptrdiff_t n, const zd_hyper* hy)
    { ZD_DISPATCH(zd_rmsprop, f32, p, g, h, n, hy); }
    static void zd_rmsprop_f64(double* p, const double* g, double* h, ptrdiff_t n, const zd_hyper* hy)
    { ZD_DISPATCH(zd_rmsprop, f64, p, g, h, n, hy); }
    static void zd_adam_f32(float* p, const float* g, float* m, float* v, ptrdiff_t n, const zd_hyper* hy)
    { ZD_DISPATCH(zd_adam, f32, p, g, m, v, n, hy); }
    static void zd_adam_f64(double* p, const double* g, double* m, double* v, ptrdiff_t n, const zd_hyper* hy)
    { ZD_DISPATCH(zd_adam, f64, p, g, m, v, n, hy); }
    """
    ctypedef struct zd_hyper:
        double lr, c1, c2, eps, decay, shrink
    int zd_pick_isa() noexcept nogil
    void zd_adagrad_f32(float* p, const float* g, float* h, Py_ssize_t n, const zd_hyper* hy) noexcept nogil
    void zd_adagrad_f64(double* p, const double* g, double* h, Py_ssize_t n, const zd_hyper* hy) noexcept nogil
    void zd_rmsprop_f32(float* p, const float* g, float* h, Py_ssize_t n, const zd_hyper* hy) noexcept nogil
    void zd_rmsprop_f64(double* p, const double* g, double* h, Py_ssize_t n, const zd_hyper* hy) noexcept nogil
    void zd_adam_f32(float* p, const float* g, float* m, float* v, Py_ssize_t n, const zd_hyper* hy) noexcept nogil
    void zd_adam_f64(double* p, const double* g, double* m, double* v, Py_ssize_t n, const zd_hyper* hy) noexcept nogil

cdef extern from *:
    """
    #include <stdlib.h>
    #include <stdint.h>
    typedef struct { uintptr_t lo, hi; ptrdiff_t row; } zd_span;
    static int zd_span_cmp(const void* a, const void* b) {
        uintptr_t x = ((const zd_span*)a)->lo, y = ((const zd_span*)b)->lo;
        return (x > y) - (x < y);
    }
    /* Whether arrays of different rows of a table share memory.  spans: the byte
       ranges of every row's arrays (n of them, sorted here).  One sweep in order of
       start: a span that starts before the furthest end seen so far overlaps the span
       with that end; were that span of its own row, the two spans holding that end and
       the earlier overlap of another row would have overlapped first. */
    static int zd_rows_overlap(zd_span* spans, ptrdiff_t n) {
        ptrdiff_t i, row;
        uintptr_t end;
        if (n < 2) return 0;
        qsort(spans, (size_t)n, sizeof(zd_span), zd_span_cmp);
        end = spans[0].hi; row = spans[0].row;
        for (i = 1; i < n; i++) {
            if (spans[i].lo < end && spans[i].row != row) return 1;
            if (spans[i].hi > end) { end = spans[i].hi; row = spans[i].row; }
        }
        return 0;
    }
    """
    ctypedef struct zd_span:
        size_t lo, hi
        Py_ssize_t row
    bint zd_rows_overlap(zd_span* spans, Py_ssize_t n) noexcept nogil


zd_pick_isa()

# Elements per thread below which one thread does the whole update.
cdef Py_ssize_t MIN_WORK = 1 << 15

cdef enum Kind:
    SGD
    MOMENTUM
    NESTEROV
    ADAGRAD
    RMSPROP
    ADAM


cdef void _segment(Kind kind, floating* p, const floating* g, floating* s1, floating* s2,
                   Py_ssize_t n, const zd_hyper* hy) noexcept nogil:
    """Update n elements: one loop reading and writing each array once."""
    cdef Py_ssize_t i
    cdef floating lr = <floating>hy.lr, mom = <floating>hy.c1
    cdef floating c1 = <floating>hy.c1, c2 = <floating>hy.c2, v
    if kind == SGD:
        # p -= lr * g
        for i in range(n):
            p[i] = p[i] - lr * g[i]
    elif kind == MOMENTUM:
        # v = momentum*v - lr*g; p += v
        for i in range(n):
            v = s1[i] * mom - lr * g[i]
            s1[i] = v
            p[i] = p[i] + v
    elif kind == NESTEROV:
        # p += momentum^2 * v - (1+momentum)*lr * g with the old v; v = momentum*v - lr*g
        # (c1, c2 hold momentum^2 and (1+momentum)*lr; decay holds momentum)
        mom = <floating>hy.decay
        for i in range(n):
            v = s1[i]
            p[i] = (p[i] + c1 * v) - c2 * g[i]
            s1[i] = v * mom - lr * g[i]
    elif kind == ADAGRAD:
        if floating is float:
            zd_adagrad_f32(p, g, s1, n, hy)
        else:
            zd_adagrad_f64(p, g, s1, n, hy)
    elif kind == RMSPROP:
        if floating is float:
            zd_rmsprop_f32(p, g, s1, n, hy)
        else:
            zd_rmsprop_f64(p, g, s1, n, hy)
    elif floating is float:
        zd_adam_f32(p, g, s1, s2, n, hy)
    else:
        zd_adam_f64(p, g, s1, s2, n, hy)


cdef void _update_range(Kind kind, const Py_ssize_t* offsets, Py_ssize_t count,
                        const intptr_t* P, const intptr_t* G, const intptr_t* S1,
                        const intptr_t* S2, Py_ssize_t lo, Py_ssize_t hi,
                        const zd_hyper* hy, floating dtype_tag) noexcept nogil:
    """Update elements lo..hi of the concatenation of the arrays in the tables."""
    cdef Py_ssize_t a = 0, b = count, mid, start, stop
    if hi <= lo:
        return
    # the array holding element lo: offsets[a] <= lo < offsets[a + 1]
    while b - a > 1:
        mid = (a + b) // 2
        if offsets[mid] <= lo:
            a = mid
        else:
            b = mid
    while lo < hi:
        start = lo - offsets[a]
        stop = min(hi, offsets[a + 1]) - offsets[a]
        _segment(kind, <floating*>P[a] + start, <const floating*>G[a] + start,
                 <floating*>S1[a] + start, <floating*>S2[a] + start, stop - start, hy)
        lo = offsets[a] + stop
        a += 1


cdef void _run(Kind kind, const Py_ssize_t* offsets, const intptr_t* P, const intptr_t* G,
               const intptr_t* S1, const intptr_t* S2, Py_ssize_t count, const zd_hyper* hy,
               int nt, floating dtype_tag) noexcept nogil:
    cdef Py_ssize_t total
    cdef int t
    if count == 0:
        return
    total = offsets[count]
    if nt <= 1:
        _update_range(kind, offsets, count, P, G, S1, S2, 0, total, hy, dtype_tag)
        return
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        _update_range(kind, offsets, count, P, G, S1, S2, part_start(total, nt, t),
                      part_start(total, nt, t + 1), hy, dtype_tag)


cdef class _Table:
    """The pointer table of one update over arrays of one dtype: offsets (count + 1) of
    each array in the concatenation, and the addresses of its p, g, s1 and s2, in C
    memory (a NumPy array per column and a typed memoryview each cost microseconds, as
    much as a 100k-parameter update)."""
    cdef Py_ssize_t count, cap
    cdef bint f32
    cdef Py_ssize_t* offsets
    cdef intptr_t* addr      # P, G, S1, S2: cap entries each

    def __cinit__(self, Py_ssize_t cap, bint f32):
        self.cap = cap
        self.f32 = f32
        self.offsets = <Py_ssize_t*>PyMem_Malloc((cap + 1) * sizeof(Py_ssize_t))
        self.addr = <intptr_t*>PyMem_Malloc(max(4 * cap, 1) * sizeof(intptr_t))
        if self.offsets == NULL or self.addr == NULL:
            raise MemoryError()
        self.offsets[0] = 0

    def __dealloc__(self):
        PyMem_Free(self.offsets)
        PyMem_Free(self.addr)

    cdef void add(self, p, g, s1, s2):
        """Append contiguous arrays p, g, s1, s2 of p's size (the caller checked them)."""
        cdef Py_ssize_t i = self.count
        self.addr[i] = _addr(p)
        self.addr[self.cap + i] = _addr(g)
        self.addr[2 * self.cap + i] = _addr(s1)
        self.addr[3 * self.cap + i] = _addr(s2)
        self.offsets[i + 1] = self.offsets[i] + cnp.PyArray_SIZE(<cnp.ndarray>p)
        self.count = i + 1

    cdef bint _shares_memory(self) except -1:
        """Whether two rows share memory (an array listed twice, overlapping views):
        then only one thread may run, in list order, as the reference updates."""
        cdef Py_ssize_t i, j, n = 0, c = self.cap, item = 4 if self.f32 else 8
        cdef Py_ssize_t size
        cdef intptr_t a
        cdef zd_span* spans = <zd_span*>PyMem_Malloc(max(4 * self.count, 1) * sizeof(zd_span))
        if spans == NULL:
            raise MemoryError()
        for i in range(self.count):
            size = (self.offsets[i + 1] - self.offsets[i]) * item
            for j in range(4):
                a = self.addr[j * c + i]
                # a row's unused state slots repeat its p: one span each
                if j and (a == self.addr[i] or (j == 3 and a == self.addr[2 * c + i])):
                    continue
                spans[n].lo = <size_t>a
                spans[n].hi = <size_t>a + size
                spans[n].row = i
                n += 1
        cdef bint shared = zd_rows_overlap(spans, n)
        PyMem_Free(spans)
        return shared

    cdef void run(self, Kind kind, const zd_hyper* hy) except *:
        cdef int nt = work_threads(self.offsets[self.count], MIN_WORK)
        if nt > 1 and self.count > 1 and self._shares_memory():
            nt = 1
        cdef intptr_t* a = self.addr
        cdef Py_ssize_t c = self.cap
        if self.f32:
            _run[float](kind, self.offsets, a, a + c, a + 2 * c, a + 3 * c, self.count, hy,
                        nt, 0)
        else:
            _run[double](kind, self.offsets, a, a + c, a + 2 * c, a + 3 * c, self.count, hy,
                         nt, 0)


cdef inline bint _in_place(a, int tn, cnp.ndarray like):
    """a can be read and updated through its own memory: a native C-contiguous writeable
    array of type number tn and like's shape."""
    return (is_array_of(a, tn) and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a) and same_shape(<cnp.ndarray>a, like))


cdef _Table _direct(params, grads, tuple states):
    """The common case recognised without the checks' Python: lists (or tuples) of one
    length, every array native, C-contiguous and of params[0]'s float dtype, each
    gradient and state shaped like its parameter, parameters and states writeable.  Then
    the updates go straight through the arrays' memory, in a table built here; else None,
    and the caller takes the checked path (whose errors are the reference's)."""
    cdef Py_ssize_t k, i
    cdef int tn
    cdef cnp.ndarray p
    for seq in (params, grads) + states:
        if not isinstance(seq, (list, tuple)):
            return None
    k = len(params)
    for seq in (grads,) + states:
        if len(seq) != k:
            return None
    if k == 0 or not is_float_array(params[0]):
        return None
    tn = cnp.PyArray_TYPE(<cnp.ndarray>params[0])
    cdef _Table table = _Table(k, tn == cnp.NPY_FLOAT)
    for i in range(k):
        if not is_array_of(params[i], tn):
            return None
        p = <cnp.ndarray>params[i]
        g = grads[i]
        if not (_in_place(p, tn, p) and is_array_of(g, tn)
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>g)
                and same_shape(<cnp.ndarray>g, p)):
            return None
        # unused state slots point at p and are never written
        s1 = states[0][i] if len(states) > 0 else p
        s2 = states[1][i] if len(states) > 1 else p
        if not (_in_place(s1, tn, p) and _in_place(s2, tn, p)):
            return None
        if cnp.PyArray_SIZE(p):
            table.add(p, g, s1, s2)
    return table


cdef tuple _snapshot(params, grads, tuple states):
    """(params, grads, states) as tuples, taken once at the start of a call.  The tuples
    keep every array alive until the update is done, and the Python code the checks run
    (a hyperparameter's __float__ or __index__, another thread) can then neither free
    nor swap an element between its check and its update: the pointer tables hold bare
    addresses.  Anything but lists and tuples is passed on as it is, for the checks to
    reject with the reference's message."""
    for seq in (params, grads) + states:
        if not isinstance(seq, (list, tuple)):
            return params, grads, states
    return tuple(params), tuple(grads), tuple([tuple(seq) for seq in states])


cdef class _Plan:
    """Pointer tables of one update call, one group per dtype, plus the write-backs of
    the arrays that had to be copied to be contiguous."""
    cdef list groups       # [float32 group, float64 group]: lists of (p, g, s1, s2) buffers
    cdef list writebacks   # (view, contiguous copy) pairs to copy back after the update
    cdef list keep         # contiguous gradient copies, alive until the update is done

    def __cinit__(self):
        self.groups = [[], []]
        self.writebacks = []
        self.keep = []

    cdef object _inplace(self, a, bint transpose):
        if transpose:
            a = a.T
        if a.flags.c_contiguous:
            return a
        tmp = np.ascontiguousarray(a)
        self.writebacks.append((a, tmp))
        return tmp

    cdef void add(self, p, g, states) except *:
        if p.size == 0:
            return
        # Fortran-ordered parameter: work on the transposes, C-contiguous for free
        cdef bint tr = (not p.flags.c_contiguous) and p.flags.f_contiguous
        pb = self._inplace(p, tr)
        gb = np.ascontiguousarray(g.T if tr else g)
        self.keep.append(gb)
        sb = [self._inplace(s, tr) for s in states]
        while len(sb) < 2:
            sb.append(pb)    # unused state slots point at p; never written
        self.groups[0 if p.dtype == np.float32 else 1].append((pb, gb, sb[0], sb[1]))

    cdef void finish(self):
        for view, tmp in self.writebacks:
            view[...] = tmp


cdef inline intptr_t _addr(a):
    return <intptr_t>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef object _apply(Kind kind, _Plan plan, zd_hyper hy):
    cdef _Table table
    for gi in range(2):
        group = plan.groups[gi]
        if not group:
            continue
        table = _Table(len(group), gi == 0)
        for pb, gb, s1, s2 in group:
            table.add(pb, gb, s1, s2)
        table.run(kind, &hy)
    plan.finish()


def _plan(params, grads, *states):
    cdef _Plan plan = _Plan()
    cdef Py_ssize_t i
    for i in range(len(params)):
        plan.add(params[i], grads[i], [s[i] for s in states])
    return plan


cdef bint _lists_ok(params, grads, tuple states, dict names) except -1:
    """Raise the reference's error unless the lists are valid; True when they are the
    common case _direct recognises (checked in C), False when the checks' Python had to
    look at them."""
    if _direct(params, grads, states) is not None:
        return True
    chk.update_lists(params, grads, **names)
    return False


cdef tuple _prepare(params, grads, tuple states, tuple names):
    """The start of every update: its lists taken once (_snapshot) and checked
    (_lists_ok).  Returns (params, grads, states, names as keyword arguments for the
    checks, whether _direct recognised them)."""
    params, grads, states = _snapshot(params, grads, states)
    cdef dict kw = dict(zip(names, states))
    return params, grads, states, kw, _lists_ok(params, grads, states, kw)


cdef object _update(Kind kind, params, grads, tuple states, bint direct_ok, dict names,
                    zd_hyper hy):
    """Run the update, after every check (and so after any Python code a hyperparameter
    may run): straight through the arrays by a pointer table built here and used at
    once, or by the plan (copies and write-backs for other layouts)."""
    cdef _Table direct = _direct(params, grads, states) if direct_ok else None
    if direct is not None:
        direct.run(kind, &hy)
        return
    if direct_ok:       # the arrays changed while the hyperparameters were checked
        chk.update_lists(params, grads, **names)
    _apply(kind, _plan(params, grads, *states), hy)


def sgd_update(params, grads, lr):
    """p -= lr * g."""
    params, grads, states, names, ok = _prepare(params, grads, (), ())
    lr = chk.real("lr", lr)
    cdef zd_hyper hy = zd_hyper(lr=lr, c1=0, c2=0, eps=0, decay=0, shrink=1)
    _update(SGD, params, grads, states, ok, names, hy)


def momentum_update(params, grads, velocities, lr, momentum):
    """v = momentum*v - lr*g; p += v."""
    params, grads, states, names, ok = _prepare(params, grads, (velocities,), ("velocities",))
    lr, momentum = chk.real("lr", lr), chk.real("momentum", momentum)
    cdef zd_hyper hy = zd_hyper(lr=lr, c1=momentum, c2=0, eps=0, decay=0, shrink=1)
    _update(MOMENTUM, params, grads, states, ok, names, hy)


def nesterov_update(params, grads, velocities, lr, momentum):
    """p += momentum^2*v - (1+momentum)*lr*g (old v); then v = momentum*v - lr*g."""
    params, grads, states, names, ok = _prepare(params, grads, (velocities,), ("velocities",))
    lr, momentum = chk.real("lr", lr), chk.real("momentum", momentum)
    cdef zd_hyper hy = zd_hyper(lr=lr, c1=momentum * momentum, c2=(1 + momentum) * lr, eps=0,
                                decay=momentum, shrink=1)
    _update(NESTEROV, params, grads, states, ok, names, hy)


def adagrad_update(params, grads, hs, lr, eps=1e-7):
    """h += g*g; p -= lr*g / (sqrt(h) + eps)."""
    params, grads, states, names, ok = _prepare(params, grads, (hs,), ("hs",))
    lr, eps = chk.real("lr", lr), chk.real("eps", eps, 0.0)
    cdef zd_hyper hy = zd_hyper(lr=lr, c1=0, c2=0, eps=eps, decay=0, shrink=1)
    _update(ADAGRAD, params, grads, states, ok, names, hy)


def rmsprop_update(params, grads, hs, lr, decay_rate=0.99, eps=1e-7):
    """h = decay*h + (1-decay)*g*g; p -= lr*g / (sqrt(h) + eps)."""
    params, grads, states, names, ok = _prepare(params, grads, (hs,), ("hs",))
    lr, eps = chk.real("lr", lr), chk.real("eps", eps, 0.0)
    decay_rate = chk.real("decay_rate", decay_rate, 0.0, 1.0)
    cdef zd_hyper hy = zd_hyper(lr=lr, c1=1 - decay_rate, c2=0, eps=eps, decay=decay_rate,
                                shrink=1)
    _update(RMSPROP, params, grads, states, ok, names, hy)


cdef zd_hyper _adam_hyper(double lr, double beta1, double beta2, step, double eps,
                          double shrink):
    # lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), as the reference (in double)
    lr_t = lr * np.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
    return zd_hyper(lr=lr_t, c1=1 - beta1, c2=1 - beta2, eps=eps, decay=0, shrink=shrink)


def adam_update(params, grads, ms, vs, lr, beta1, beta2, step, eps=1e-7):
    """The book's Adam at 1-based step t: lr_t = lr*sqrt(1-beta2^t)/(1-beta1^t);
    m += (1-beta1)(g-m); v += (1-beta2)(g^2-v); p -= lr_t*m/(sqrt(v)+eps)."""
    params, grads, states, names, ok = _prepare(params, grads, (ms, vs), ("ms", "vs"))
    lr, beta1, beta2, step, eps = chk.adam_hyper(lr, beta1, beta2, step, eps)
    _update(ADAM, params, grads, states, ok, names,
            _adam_hyper(lr, beta1, beta2, step, eps, 1.0))


def adamw_update(params, grads, ms, vs, lr, beta1, beta2, step, eps=1e-7, weight_decay=0.01):
    """Adam with decoupled weight decay: p -= lr*weight_decay*p, then the Adam step."""
    params, grads, states, names, ok = _prepare(params, grads, (ms, vs), ("ms", "vs"))
    lr, beta1, beta2, step, eps = chk.adam_hyper(lr, beta1, beta2, step, eps)
    wd = chk.real("weight_decay", weight_decay, 0.0)
    shrink = 1.0 - lr * wd
    _update(ADAM, params, grads, states, ok, names,
            _adam_hyper(lr, beta1, beta2, step, eps, shrink))
