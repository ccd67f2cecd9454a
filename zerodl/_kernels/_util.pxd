# Shared nogil helpers of the dense kernels: work splitting, and small C loops that GCC
# vectorises where a Cython loop could not be.
#
# Why C here: (1) exp/tanh are written branch-free (clamps and bit selects, no libm
# calls), since a libm call per element keeps a loop scalar, 4-16x slower than NumPy's SIMD
# ufuncs; exp is within ~1 ulp (Cephes' range reduction and polynomials) and tanh within
# ~2 ulp over all inputs, including overflow, underflow to subnormals, +-inf and NaN.
# (2) Reductions carry `omp simd reduction`: without -ffast-math GCC may not reorder a sum
# into vector lanes on its own.  (3) The column loops of the normalisations take restrict
# pointers, so they vectorise without run-time alias checks.  The compute-bound loops are
# also compiled for AVX2 and AVX-512 (target_clones, resolved once at load time).
# Conditionals are bit selects (zd_self/zd_seld): with the default -ftrapping-math GCC
# sinks the arithmetic of each arm of a ?: into a branch and gives up vectorising.
from cython cimport floating

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static inline float zd_f32_from_bits(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
    static inline int32_t zd_f32_bits(float f) { int32_t i; memcpy(&i, &f, 4); return i; }
    static inline double zd_f64_from_bits(int64_t i) { double f; memcpy(&f, &i, 8); return f; }
    static inline int64_t zd_f64_bits(double f) { int64_t i; memcpy(&i, &f, 8); return i; }

    /* c ? a : b through bit masks.  GCC (with the default -ftrapping-math) sinks the
       arithmetic of each arm of a ?: into a branch and then refuses to vectorise the
       loop; a bitwise select keeps both arms unconditional. */
    static inline float zd_self(int c, float a, float b) {
        int32_t m = -(int32_t)c;
        return zd_f32_from_bits((zd_f32_bits(a) & m) | (zd_f32_bits(b) & ~m));
    }
    static inline double zd_seld(int c, double a, double b) {
        int64_t m = -(int64_t)c;
        return zd_f64_from_bits((zd_f64_bits(a) & m) | (zd_f64_bits(b) & ~m));
    }

    /* exp(x) = 2^n * exp(r), n = round(x / ln2), |r| <= ln2 / 2.  The rounding adds and
       subtracts 1.5 * 2^23 (exact under round-to-nearest).  zd_expf_reduced returns
       exp(r) for x already clamped, and n in *k; the callers apply 2^n. */
    static inline float zd_expf_reduced(float xc, int32_t* k) {
        const float magic = 12582912.0f;
        float t = xc * 1.44269504088896341f + magic;
        float n = t - magic;
        *k = zd_f32_bits(t) - zd_f32_bits(magic);
        float r = xc - n * 0.693359375f;
        r = r - n * -2.12194440e-4f;
        float z = r * r;
        float y = 1.9875691500e-4f;
        y = y * r + 1.3981999507e-3f;
        y = y * r + 8.3334519073e-3f;
        y = y * r + 4.1665795894e-2f;
        y = y * r + 1.6666665459e-1f;
        y = y * r + 5.0000001201e-1f;
        return y * z + r + 1.0f;
    }

    /* exp over all floats: 2^n applied as two powers of two, so that results in the
       subnormal range round once.  NaN stays NaN through the clamps and the polynomial. */
    static inline float zd_expf(float x) {
        int32_t k;
        float xc = zd_self(x < -104.0f, -104.0f, x);
        xc = zd_self(xc > 89.0f, 89.0f, xc);
        float y = zd_expf_reduced(xc, &k);
        int32_t k1 = k >> 1;
        int32_t k2 = k - k1;
        y = y * zd_f32_from_bits((k1 + 127) << 23);
        y = y * zd_f32_from_bits((k2 + 127) << 23);
        return y;
    }

    /* zd_expf for callers that need no subnormal results: x clamped to [-86, 89], so
       2^(n-1) is a normal power of two and the result is y * 2^(n-1) doubled (exact, or
       inf past FLT_MAX) - one multiply and one add where zd_expf splits 2^n in two for
       the subnormal range.  Equal to zd_expf wherever that result is at least exp(-86)
       (4.5e-38); below, it gives exp(-86).  The logistic function uses it:
       1 / (1 + exp(-x)) is 1 long before exp(-x) gets that small. */
    static inline float zd_expf_normal(float x) {
        int32_t k;
        float xc = zd_self(x < -86.0f, -86.0f, x);
        xc = zd_self(xc > 89.0f, 89.0f, xc);
        float y = zd_expf_reduced(xc, &k);
        y = y * zd_f32_from_bits((k + 126) << 23);
        return y + y;
    }

    static inline double zd_exp(double x) {
        const double magic = 6755399441055744.0;   /* 1.5 * 2^52 */
        double xc = zd_seld(x < -746.0, -746.0, x);
        xc = zd_seld(xc > 710.0, 710.0, xc);
        double t = xc * 1.4426950408889634073599 + magic;
        double n = t - magic;
        double th = n * 0.5 + magic;
        int64_t k1 = zd_f64_bits(th) - zd_f64_bits(magic);
        int64_t k2 = (zd_f64_bits(t) - zd_f64_bits(magic)) - k1;
        double r = xc - n * 6.93145751953125e-1;
        r = r - n * 1.42860682030941723212e-6;
        double rr = r * r;
        double p = 1.26177193074810590878e-4;
        p = p * rr + 3.02994407707441961300e-2;
        p = p * rr + 9.99999999999999999910e-1;
        p = p * r;
        double q = 3.00198505138664455042e-6;
        q = q * rr + 2.52448340349684104192e-3;
        q = q * rr + 2.27265548208155028766e-1;
        q = q * rr + 2.00000000000000000009e0;
        double y = 1.0 + 2.0 * (p / (q - p));
        y = y * zd_f64_from_bits((k1 + 1023) << 52);
        y = y * zd_f64_from_bits((k2 + 1023) << 52);
        return y;   /* NaN in x stays NaN through the clamps and the polynomial */
    }

    /* tanh.  float: the odd/even rational minimax approximation of Eigen's fast tanh on
       x clamped to +-7.905 (where tanhf rounds to +-1), x itself below 4e-4; within
       4e-7 relative (~7 ulp), and a third of the work of the exp form.  double: Cephes
       tanh, a rational function for |x| < 0.625, else 1 - 2 / (exp(2|x|) + 1) with the
       sign of x; within ~2 ulp. */
    static inline float zd_tanhf(float x) {
        float xc = zd_self(x > 7.90531110763549805f, 7.90531110763549805f, x);
        xc = zd_self(xc < -7.90531110763549805f, -7.90531110763549805f, xc);
        float z = xc * xc;
        float p = -2.76076847742355e-16f;
        p = p * z + 2.00018790482477e-13f;
        p = p * z - 8.60467152213735e-11f;
        p = p * z + 5.12229709037114e-08f;
        p = p * z + 1.48572235717979e-05f;
        p = p * z + 6.37261928875436e-04f;
        p = p * z + 4.89352455891786e-03f;
        p = p * xc;
        float q = 1.19825839466702e-06f;
        q = q * z + 1.18534705686654e-04f;
        q = q * z + 2.26843463243900e-03f;
        q = q * z + 4.89352518554385e-03f;
        float a = zd_self(x < 0.0f, -x, x);
        return zd_self(a < 4e-4f, x, p / q);   /* NaN: clamps keep it, p/q is NaN */
    }

    static inline double zd_tanh(double x) {
        double a = zd_seld(x < 0.0, -x, x);
        double e = zd_exp(a + a);
        double big = 1.0 - 2.0 / (e + 1.0);
        big = zd_seld(x < 0.0, -big, big);
        double z = x * x;
        double p = -9.64399179425052238628e-1;
        p = p * z - 9.92877231001918586564e1;
        p = p * z - 1.61468768441708447952e3;
        double q = z + 1.12811678491632931402e2;
        q = q * z + 2.23548839060100448583e3;
        q = q * z + 4.84406305325125486048e3;
        double small = x + x * z * (p / q);
        return zd_seld(a < 0.625, small, big);
    }

    /* ---- loops over contiguous buffers ----
       Reductions carry `omp simd reduction`, which lets GCC reorder the sum into vector
       lanes (it may not otherwise, without -ffast-math); the lanes are summed in double.
       Transcendental loops are also compiled for AVX2 / AVX-512 (target_clones: picked
       once at load time from the running CPU), where they are compute-bound. */
    #if defined(_OPENMP)
    #define ZD_PRAGMA(x) _Pragma(#x)
    #define ZD_SIMD_REDUCE(op, var) ZD_PRAGMA(omp simd reduction(op:var))
    #define ZD_SIMD_REDUCE2(op, v1, v2) ZD_PRAGMA(omp simd reduction(op:v1, v2))
    #else
    #define ZD_SIMD_REDUCE(op, var)
    #define ZD_SIMD_REDUCE2(op, v1, v2)
    #endif
    /* (unused: a module that cimports this file may not call every loop) */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define ZD_CLONES __attribute__((unused, target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #elif defined(__GNUC__)
    #define ZD_CLONES __attribute__((unused))
    #else
    #define ZD_CLONES
    #endif

    ZD_CLONES static void zd_sigmoid_f32(const float* x, float* out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) out[i] = 1.0f / (1.0f + zd_expf_normal(-x[i]));
    }
    ZD_CLONES static void zd_sigmoid_f64(const double* x, double* out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) out[i] = 1.0 / (1.0 + zd_exp(-x[i]));
    }
    ZD_CLONES static void zd_tanh_f32(const float* x, float* out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) out[i] = zd_tanhf(x[i]);
    }
    ZD_CLONES static void zd_tanh_f64(const double* x, double* out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) out[i] = zd_tanh(x[i]);
    }

    /* y = exp(y) in place, over a whole block: softmax of short rows (a few classes)
       runs its exponentials here, since a row of 10 is too short for the vector loop. */
    ZD_CLONES static void zd_exp_inplace_f32(float* y, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = zd_expf(y[i]);
    }
    ZD_CLONES static void zd_exp_inplace_f64(double* y, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = zd_exp(y[i]);
    }

    /* y = exp(x - shift); returns sum(y) accumulated in double. */
    ZD_CLONES static double zd_exp_shift_sum_f32(const float* x, float* y, Py_ssize_t n,
                                                 float shift) {
        double s = 0.0;
        ZD_SIMD_REDUCE(+, s)
        for (Py_ssize_t i = 0; i < n; i++) { float e = zd_expf(x[i] - shift); y[i] = e; s += e; }
        return s;
    }
    ZD_CLONES static double zd_exp_shift_sum_f64(const double* x, double* y, Py_ssize_t n,
                                                 double shift) {
        double s = 0.0;
        ZD_SIMD_REDUCE(+, s)
        for (Py_ssize_t i = 0; i < n; i++) { double e = zd_exp(x[i] - shift); y[i] = e; s += e; }
        return s;
    }

    /* Largest element of x[0..n), n >= 1 (a NaN may be skipped: callers let it
       propagate through their later arithmetic). */
    static inline float zd_max_f32(const float* x, Py_ssize_t n) {
        float m = x[0];
        ZD_SIMD_REDUCE(max, m)
        for (Py_ssize_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
        return m;
    }
    static inline double zd_max_f64(const double* x, Py_ssize_t n) {
        double m = x[0];
        ZD_SIMD_REDUCE(max, m)
        for (Py_ssize_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
        return m;
    }

    /* out = mask ? x * scale : 0, with the select done on bits so that the loop
       vectorises instead of branching on a random mask. */
    static inline void zd_mask_scale_f32(const float* x, const unsigned char* mask,
                                         float scale, float* out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            int32_t m = -(int32_t)(mask[i] != 0);
            out[i] = zd_f32_from_bits(zd_f32_bits(x[i] * scale) & m);
        }
    }
    static inline void zd_mask_scale_f64(const double* x, const unsigned char* mask,
                                         double scale, double* out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t m = -(int64_t)(mask[i] != 0);
            out[i] = zd_f64_from_bits(zd_f64_bits(x[i] * scale) & m);
        }
    }

    /* Column statistics of a row-major block (rows x cols, row stride ld), accumulated
       into per-column double arrays that the caller zeroes: the inner loop runs along a
       row, so it vectorises without reordering any sum.
         shifted: s1[j] += x[i,j] - k[j], s2[j] += (x[i,j] - k[j])^2
         dot:     s1[j] += a[i,j],        s2[j] += a[i,j] * b[i,j]  (product in T) */
    #define ZD_COLUMN_SUMS(T, SUF)                                                      \
    ZD_CLONES static void zd_colsums_shifted_##SUF(const T* restrict x, Py_ssize_t ld,   \
            Py_ssize_t rows, Py_ssize_t cols, const T* restrict k, double* restrict s1, \
            double* restrict s2) {                                                      \
        Py_ssize_t i = 0;                                                               \
        /* four rows per sweep: a quarter of the accumulator loads and stores */        \
        for (; i + 4 <= rows; i += 4) {                                                 \
            const T* r0 = x + i * ld; const T* r1 = r0 + ld;                            \
            const T* r2 = r1 + ld; const T* r3 = r2 + ld;                               \
            for (Py_ssize_t j = 0; j < cols; j++) {                                     \
                double kj = (double)k[j];                                               \
                double d0 = (double)r0[j] - kj, d1 = (double)r1[j] - kj;                \
                double d2 = (double)r2[j] - kj, d3 = (double)r3[j] - kj;                \
                s1[j] += (d0 + d1) + (d2 + d3);                                         \
                s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);                     \
            }                                                                           \
        }                                                                               \
        for (; i < rows; i++) {                                                         \
            const T* r = x + i * ld;                                                    \
            for (Py_ssize_t j = 0; j < cols; j++) {                                     \
                double d = (double)r[j] - (double)k[j];                                 \
                s1[j] += d; s2[j] += d * d;                                             \
            }                                                                           \
        }                                                                               \
    }                                                                                   \
    ZD_CLONES static void zd_colsums_dot_##SUF(const T* restrict a, const T* restrict b,  \
            Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, double* restrict s1,       \
            double* restrict s2) {                                                      \
        Py_ssize_t i = 0;                                                               \
        for (; i + 4 <= rows; i += 4) {                                                 \
            const T* a0 = a + i * ld; const T* a1 = a0 + ld;                            \
            const T* a2 = a1 + ld; const T* a3 = a2 + ld;                               \
            const T* b0 = b + i * ld; const T* b1 = b0 + ld;                            \
            const T* b2 = b1 + ld; const T* b3 = b2 + ld;                               \
            for (Py_ssize_t j = 0; j < cols; j++) {                                     \
                s1[j] += ((double)a0[j] + (double)a1[j]) + ((double)a2[j] + (double)a3[j]); \
                s2[j] += ((double)(a0[j] * b0[j]) + (double)(a1[j] * b1[j]))            \
                       + ((double)(a2[j] * b2[j]) + (double)(a3[j] * b3[j]));           \
            }                                                                           \
        }                                                                               \
        for (; i < rows; i++) {                                                         \
            const T* ra = a + i * ld;                                                   \
            const T* rb = b + i * ld;                                                   \
            for (Py_ssize_t j = 0; j < cols; j++) {                                     \
                s1[j] += ra[j]; s2[j] += (double)(ra[j] * rb[j]);                       \
            }                                                                           \
        }                                                                               \
    }
    ZD_COLUMN_SUMS(float, f32)
    ZD_COLUMN_SUMS(double, f64)

    /* Per-column affine maps of a row-major block (rows x cols, row stride ld), with
       restrict so that GCC vectorises without run-time alias checks:
         colnorm:    h = ((x - mhi) - mlo) * s;  xhat = h;  out = h * g + b
                     (mean = mhi + mlo split in two T's keeps x - mean exact enough in
                     float32 for large means)
         colaffine:  out = (x - m) * s + b
         colcombine: out = p * a + q * c + r     (the normalisation backward) */
    #define ZD_COLUMN_MAPS(T, SUF)                                                       \
    ZD_CLONES static void zd_colnorm_##SUF(const T* restrict x, Py_ssize_t ld,            \
            Py_ssize_t rows, Py_ssize_t cols, const T* restrict mhi,                     \
            const T* restrict mlo, const T* restrict s, const T* restrict g,             \
            const T* restrict b, T* restrict xhat, T* restrict out) {                    \
        for (Py_ssize_t i = 0; i < rows; i++) {                                          \
            const T* restrict xr = x + i * ld;                                           \
            T* restrict hr = xhat + i * ld;                                              \
            T* restrict orow = out + i * ld;                                             \
            for (Py_ssize_t j = 0; j < cols; j++) {                                      \
                T h = ((xr[j] - mhi[j]) - mlo[j]) * s[j];                                \
                hr[j] = h; orow[j] = h * g[j] + b[j];                                    \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
    ZD_CLONES static void zd_colaffine_##SUF(const T* restrict x, Py_ssize_t ld,          \
            Py_ssize_t rows, Py_ssize_t cols, const T* restrict m, const T* restrict s,  \
            const T* restrict b, T* restrict out) {                                      \
        for (Py_ssize_t i = 0; i < rows; i++) {                                          \
            const T* restrict xr = x + i * ld;                                           \
            T* restrict orow = out + i * ld;                                             \
            for (Py_ssize_t j = 0; j < cols; j++) orow[j] = (xr[j] - m[j]) * s[j] + b[j]; \
        }                                                                                \
    }                                                                                    \
    ZD_CLONES static void zd_colcombine_##SUF(const T* restrict a, const T* restrict c,   \
            Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, const T* restrict p,        \
            const T* restrict q, const T* restrict r, T* restrict out) {                 \
        for (Py_ssize_t i = 0; i < rows; i++) {                                          \
            const T* restrict ar = a + i * ld;                                           \
            const T* restrict cr = c + i * ld;                                           \
            T* restrict orow = out + i * ld;                                             \
            for (Py_ssize_t j = 0; j < cols; j++) orow[j] = p[j] * ar[j] + q[j] * cr[j] + r[j]; \
        }                                                                                \
    }
    ZD_COLUMN_MAPS(float, f32)
    ZD_COLUMN_MAPS(double, f64)

    /* Sums along a row with a per-element weight g: s1 = sum(a*g), s2 = sum(a*g*b),
       the products a*g and (a*g)*b rounded in T like the reference's dtype arithmetic. */
    static inline void zd_wsum_dot_f32(const float* a, const float* g, const float* b,
                                       Py_ssize_t n, double* s1, double* s2) {
        double u = 0.0, v = 0.0;
        ZD_SIMD_REDUCE2(+, u, v)
        for (Py_ssize_t i = 0; i < n; i++) { float d = a[i] * g[i]; u += d; v += (double)(d * b[i]); }
        *s1 = u; *s2 = v;
    }
    static inline void zd_wsum_dot_f64(const double* a, const double* g, const double* b,
                                       Py_ssize_t n, double* s1, double* s2) {
        double u = 0.0, v = 0.0;
        ZD_SIMD_REDUCE2(+, u, v)
        for (Py_ssize_t i = 0; i < n; i++) { double d = a[i] * g[i]; u += d; v += d * b[i]; }
        *s1 = u; *s2 = v;
    }

    /* sum(x - shift) and sum((x - shift)^2) in double: the shifted-data variance
       algorithm, exact enough when shift is near the mean (callers pass a sample). */
    static inline void zd_shifted_sums_f32(const float* x, Py_ssize_t n, double shift,
                                           double* s1, double* s2) {
        double a = 0.0, b = 0.0;
        ZD_SIMD_REDUCE2(+, a, b)
        for (Py_ssize_t i = 0; i < n; i++) { double d = (double)x[i] - shift; a += d; b += d * d; }
        *s1 = a; *s2 = b;
    }
    static inline void zd_shifted_sums_f64(const double* x, Py_ssize_t n, double shift,
                                           double* s1, double* s2) {
        double a = 0.0, b = 0.0;
        ZD_SIMD_REDUCE2(+, a, b)
        for (Py_ssize_t i = 0; i < n; i++) { double d = x[i] - shift; a += d; b += d * d; }
        *s1 = a; *s2 = b;
    }

    /* sum(x) and sum((x - mean)^2) in double: the two-pass mean and variance. */
    static inline double zd_sum_f32(const float* x, Py_ssize_t n) {
        double a = 0.0;
        ZD_SIMD_REDUCE(+, a)
        for (Py_ssize_t i = 0; i < n; i++) a += x[i];
        return a;
    }
    static inline double zd_sum_f64(const double* x, Py_ssize_t n) {
        double a = 0.0;
        ZD_SIMD_REDUCE(+, a)
        for (Py_ssize_t i = 0; i < n; i++) a += x[i];
        return a;
    }
    static inline double zd_sqdev_f32(const float* x, Py_ssize_t n, double mean) {
        double a = 0.0;
        ZD_SIMD_REDUCE(+, a)
        for (Py_ssize_t i = 0; i < n; i++) { double d = (double)x[i] - mean; a += d * d; }
        return a;
    }
    static inline double zd_sqdev_f64(const double* x, Py_ssize_t n, double mean) {
        double a = 0.0;
        ZD_SIMD_REDUCE(+, a)
        for (Py_ssize_t i = 0; i < n; i++) { double d = x[i] - mean; a += d * d; }
        return a;
    }

    /* sum(g * a) and sum(g * a * b) in double, with g a scalar (1 for a plain sum):
       the two sums of every normalisation backward (sum dxhat, sum dxhat * xhat). */
    static inline void zd_sum_dot_f32(const float* a, const float* b, Py_ssize_t n, float g,
                                      double* s1, double* s2) {
        double u = 0.0, v = 0.0;
        ZD_SIMD_REDUCE2(+, u, v)
        for (Py_ssize_t i = 0; i < n; i++) { float d = a[i] * g; u += d; v += (double)(d * b[i]); }
        *s1 = u; *s2 = v;
    }
    static inline void zd_sum_dot_f64(const double* a, const double* b, Py_ssize_t n, double g,
                                      double* s1, double* s2) {
        double u = 0.0, v = 0.0;
        ZD_SIMD_REDUCE2(+, u, v)
        for (Py_ssize_t i = 0; i < n; i++) { double d = a[i] * g; u += d; v += d * b[i]; }
        *s1 = u; *s2 = v;
    }
    """
    float zd_expf(float x) noexcept nogil
    double zd_exp(double x) noexcept nogil
    float zd_tanhf(float x) noexcept nogil
    double zd_tanh(double x) noexcept nogil
    void zd_sigmoid_f32(const float* x, float* out, Py_ssize_t n) noexcept nogil
    void zd_sigmoid_f64(const double* x, double* out, Py_ssize_t n) noexcept nogil
    void zd_tanh_f32(const float* x, float* out, Py_ssize_t n) noexcept nogil
    void zd_tanh_f64(const double* x, double* out, Py_ssize_t n) noexcept nogil
    void zd_exp_inplace_f32(float* y, Py_ssize_t n) noexcept nogil
    void zd_exp_inplace_f64(double* y, Py_ssize_t n) noexcept nogil
    double zd_exp_shift_sum_f32(const float* x, float* y, Py_ssize_t n, float shift) noexcept nogil
    double zd_exp_shift_sum_f64(const double* x, double* y, Py_ssize_t n, double shift) noexcept nogil
    void zd_mask_scale_f32(const float* x, const unsigned char* mask, float scale, float* out, Py_ssize_t n) noexcept nogil
    void zd_mask_scale_f64(const double* x, const unsigned char* mask, double scale, double* out, Py_ssize_t n) noexcept nogil
    void zd_colsums_shifted_f32(const float* x, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, const float* k, double* s1, double* s2) noexcept nogil
    void zd_colsums_shifted_f64(const double* x, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, const double* k, double* s1, double* s2) noexcept nogil
    void zd_colsums_dot_f32(const float* a, const float* b, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, double* s1, double* s2) noexcept nogil
    void zd_colsums_dot_f64(const double* a, const double* b, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, double* s1, double* s2) noexcept nogil
    void zd_wsum_dot_f32(const float* a, const float* g, const float* b, Py_ssize_t n, double* s1, double* s2) noexcept nogil
    void zd_wsum_dot_f64(const double* a, const double* g, const double* b, Py_ssize_t n, double* s1, double* s2) noexcept nogil
    void zd_colnorm_f32(const float* x, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, const float* mhi, const float* mlo, const float* s, const float* g, const float* b, float* xhat, float* out) noexcept nogil
    void zd_colnorm_f64(const double* x, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, const double* mhi, const double* mlo, const double* s, const double* g, const double* b, double* xhat, double* out) noexcept nogil
    void zd_colaffine_f32(const float* x, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, const float* m, const float* s, const float* b, float* out) noexcept nogil
    void zd_colaffine_f64(const double* x, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, const double* m, const double* s, const double* b, double* out) noexcept nogil
    void zd_colcombine_f32(const float* a, const float* c, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, const float* p, const float* q, const float* r, float* out) noexcept nogil
    void zd_colcombine_f64(const double* a, const double* c, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t cols, const double* p, const double* q, const double* r, double* out) noexcept nogil
    float zd_max_f32(const float* x, Py_ssize_t n) noexcept nogil
    double zd_max_f64(const double* x, Py_ssize_t n) noexcept nogil
    void zd_shifted_sums_f32(const float* x, Py_ssize_t n, double shift, double* s1, double* s2) noexcept nogil
    void zd_shifted_sums_f64(const double* x, Py_ssize_t n, double shift, double* s1, double* s2) noexcept nogil
    double zd_sum_f32(const float* x, Py_ssize_t n) noexcept nogil
    double zd_sum_f64(const double* x, Py_ssize_t n) noexcept nogil
    double zd_sqdev_f32(const float* x, Py_ssize_t n, double mean) noexcept nogil
    double zd_sqdev_f64(const double* x, Py_ssize_t n, double mean) noexcept nogil
    void zd_sum_dot_f32(const float* a, const float* b, Py_ssize_t n, float g, double* s1, double* s2) noexcept nogil
    void zd_sum_dot_f64(const double* a, const double* b, Py_ssize_t n, double g, double* s1, double* s2) noexcept nogil


cdef inline void relu_into(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    """out = ReLU(x) for n contiguous elements (out may be x): x < 0 ? 0 : x keeps NaN like
    np.maximum(x, 0) (and -0.0, where np.maximum gives +0.0: the two compare equal).
    relu_forward and the fused kernels all rectify through here."""
    cdef Py_ssize_t i
    cdef floating zero = 0
    for i in range(n):
        out[i] = zero if x[i] < zero else x[i]


cdef inline int threads_for(Py_ssize_t work, Py_ssize_t min_work, int max_threads) noexcept nogil:
    """Threads worth starting for `work` units: one per `min_work`, at most max_threads."""
    cdef Py_ssize_t t
    if max_threads <= 1 or work < 2 * min_work:
        return 1
    t = work // min_work
    return <int>(t if t < max_threads else max_threads)


cdef inline int work_threads(Py_ssize_t work, Py_ssize_t min_work) except -1:
    """Threads for a call of `work` elements: zerodl's thread setting, one thread per
    `min_work`.  The setting is read only when a second thread could pay off: small calls
    skip it (get_num_threads() may call os.cpu_count(), which reads /sys)."""
    if work < 2 * min_work:
        return 1
    from zerodl._config import get_num_threads
    return threads_for(work, min_work, get_num_threads())


cdef inline Py_ssize_t part_start(Py_ssize_t n, int parts, int i) noexcept nogil:
    """Start of part i when [0, n) is cut into `parts` nearly equal contiguous ranges."""
    return (n // parts) * i + (i if i < n % parts else n % parts)
