# Max pooling of one (H, W) plane, shared by pool.pyx and the fused convolution's
# forward in conv.pyx.  Conventions are the reference's: windows start at
# o*stride - pad, padding counts as -inf, argmax is fy*pool_w + fx of the window's first
# maximum.
from cython cimport floating
from libc.math cimport INFINITY
from libc.string cimport memset


cdef inline Py_ssize_t window_lo(Py_ssize_t start) noexcept nogil:
    """First window offset that lands inside the plane (start = o*s - p)."""
    return -start if start < 0 else 0


cdef inline Py_ssize_t window_hi(Py_ssize_t start, Py_ssize_t size, Py_ssize_t k) noexcept nogil:
    """One past the last window offset inside a plane of `size` (k = window size)."""
    return size - start if size - start < k else k


cdef inline bint window_inside(Py_ssize_t y0, Py_ssize_t x0, Py_ssize_t fy_lo,
                               Py_ssize_t fy_hi, Py_ssize_t fx_lo, Py_ssize_t fx_hi,
                               Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    """The clamped window rows y0+fy_lo..y0+fy_hi and columns x0+fx_lo..x0+fx_hi lie in an
    (h, w) plane (or the window is empty): what the debug build checks before a scan."""
    return (fy_hi <= fy_lo or fx_hi <= fx_lo) or (
        y0 + fy_lo >= 0 and y0 + fy_hi <= h and x0 + fx_lo >= 0 and x0 + fx_hi <= w)


# ---------------------------------------------------------------- one window
# Each takes the window's offsets that lie inside the plane, fy in [fy_lo, fy_hi) and
# fx in [fx_lo, fx_hi).  The plane loops call them with constant bounds (0, ph, 0, pw)
# for windows wholly inside, which the compiler unrolls for the common sizes.

cdef inline Py_ssize_t window_argmax(const floating* x, Py_ssize_t w, Py_ssize_t y0,
                                      Py_ssize_t x0, Py_ssize_t fy_lo, Py_ssize_t fy_hi,
                                      Py_ssize_t fx_lo, Py_ssize_t fx_hi, Py_ssize_t pw,
                                      floating* best_out) noexcept nogil:
    """Index fy*pw + fx of the window's first maximum in the plane x (rows of w); its
    value into best_out.

    Padding is -inf: it never beats best, so only the inside is scanned, and a window
    with nothing above -inf keeps index 0, like argmax.  Which element wins is
    unpredictable on real data, so the scan is branch-free (selects, not jumps: a
    mispredicted branch per element costs more than the comparison).  A NaN, the
    maximum for numpy.argmax, only raises a flag; such a window is scanned again.
    """
    cdef Py_ssize_t fy, fx, idx = 0
    cdef floating v, best = -INFINITY
    cdef bint take, nan_seen = False
    for fy in range(fy_lo, fy_hi):
        for fx in range(fx_lo, fx_hi):
            v = x[(y0 + fy) * w + x0 + fx]
            take = v > best
            idx = idx + take * (fy * pw + fx - idx)
            best = v if v > best else best
            nan_seen = nan_seen | (v != v)
    if nan_seen:
        for fy in range(fy_lo, fy_hi):
            for fx in range(fx_lo, fx_hi):
                v = x[(y0 + fy) * w + x0 + fx]
                if v != v:
                    best_out[0] = v
                    return fy * pw + fx
    best_out[0] = best
    return idx


# ---------------------------------------------------------------- one plane
# Planes are raw pointers, which the debug build's bounds checks do not see; there
# (ZERODL_CYTHON_DEBUG=1 defines ZERODL_DEBUG_CHECKS) zd_dcheck aborts with the place
# when a window or row would leave its plane.  Release builds compile it away.

cdef extern from *:
    """
    #include <stdio.h>
    #include <stdlib.h>
    #ifdef ZERODL_DEBUG_CHECKS
    #define zd_dcheck(ok) do { if (!(ok)) { fprintf(stderr,                              \
            "zerodl: plane bounds check failed at %s:%d\\n", __FILE__, __LINE__);       \
            abort(); } } while (0)
    #else
    #define zd_dcheck(ok) ((void)0)
    #endif
    /* One output row of 2x2, stride-2, unpadded max pooling from input rows r0, r1:
       the first maximum in the order (0,0) (0,1) (1,0) (1,1), taken by pairs with
       selects the compiler turns into max/blend instructions, not branches (which
       element wins is unpredictable).  Returns whether a NaN was seen: the row must
       then be redone by the general scan, for which a NaN is the maximum. */
    #define ZD_MAX_ROW_2X2(NAME, T)                                                   \
    static int NAME(const T *r0, const T *r1, T *out, Py_ssize_t *arg,               \
                    Py_ssize_t ow) {                                                  \
        Py_ssize_t ox;                                                                \
        int nan_seen = 0;                                                             \
        for (ox = 0; ox < ow; ox++) {                                                 \
            T a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1]; \
            Py_ssize_t i1 = b > a, i2 = 2 + (d > c);                                  \
            T m1 = b > a ? b : a, m2 = d > c ? d : c;                                 \
            Py_ssize_t take = m2 > m1;                                                \
            arg[ox] = i1 + take * (i2 - i1);                                          \
            out[ox] = m2 > m1 ? m2 : m1;                                              \
            nan_seen |= (a != a) | (b != b) | (c != c) | (d != d);                    \
        }                                                                             \
        return nan_seen;                                                              \
    }
    ZD_MAX_ROW_2X2(zd_max_row_2x2_f32, float)
    ZD_MAX_ROW_2X2(zd_max_row_2x2_f64, double)
    """
    void zd_dcheck(bint ok) noexcept nogil
    bint zd_max_row_2x2_f32(const float* r0, const float* r1, float* out, Py_ssize_t* arg,
                            Py_ssize_t ow) noexcept nogil
    bint zd_max_row_2x2_f64(const double* r0, const double* r1, double* out,
                            Py_ssize_t* arg, Py_ssize_t ow) noexcept nogil


cdef inline bint _max_row_2x2(const floating* r0, const floating* r1, floating* out,
                              Py_ssize_t* arg, Py_ssize_t ow) noexcept nogil:
    if floating is float:
        return zd_max_row_2x2_f32(r0, r1, out, arg, ow)
    else:
        return zd_max_row_2x2_f64(r0, r1, out, arg, ow)


cdef inline void max_plane(const floating* x, Py_ssize_t h, Py_ssize_t w, floating* out,
                           Py_ssize_t* arg, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ph,
                           Py_ssize_t pw, Py_ssize_t s, Py_ssize_t p) noexcept nogil:
    """Max pooling of the (h, w) plane x into the (oh, ow) planes out and arg.  Planes
    are pointers with their sizes: a typed-memoryview slice per plane (a struct copy
    and an atomic reference count that every thread hits) costs more than a small
    plane's work."""
    cdef Py_ssize_t oy, ox, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi
    cdef floating best
    cdef bint fast = ph == 2 and pw == 2 and s == 2 and p == 0
    for oy in range(oh):
        # SimpleConvNet's pooling: every window lies inside the plane
        zd_dcheck(not fast or (2 * oy + 1 < h and 2 * ow <= w))
        if fast and _max_row_2x2(x + 2 * oy * w, x + (2 * oy + 1) * w, out + oy * ow,
                                 arg + oy * ow, ow) == 0:
            continue
        y0 = oy * s - p
        fy_lo = window_lo(y0)
        fy_hi = window_hi(y0, h, ph)
        for ox in range(ow):
            x0 = ox * s - p
            fx_lo = window_lo(x0)
            fx_hi = window_hi(x0, w, pw)
            zd_dcheck(window_inside(y0, x0, fy_lo, fy_hi, fx_lo, fx_hi, h, w))
            if fy_lo == 0 and fy_hi == ph and fx_lo == 0 and fx_hi == pw:
                arg[oy * ow + ox] = window_argmax(x, w, y0, x0, 0, ph, 0, pw, pw, &best)
            else:
                arg[oy * ow + ox] = window_argmax(x, w, y0, x0, fy_lo, fy_hi, fx_lo, fx_hi,
                                                  pw, &best)
            out[oy * ow + ox] = best


cdef inline void max_back_plane(const floating* dout, const Py_ssize_t* arg, floating* dx,
                                Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t h, Py_ssize_t w,
                                Py_ssize_t pw, Py_ssize_t s, Py_ssize_t p) noexcept nogil:
    """dx (an h x w input plane) = dout (oh x ow) scattered to each window's argmax.
    Callers pass pw as a constant for the common widths, so idx // pw and idx % pw
    compile to multiplies, not divisions."""
    cdef Py_ssize_t oy, ox, iy, ix, idx
    memset(dx, 0, h * w * sizeof(floating))
    for oy in range(oh):
        for ox in range(ow):
            idx = arg[oy * ow + ox]
            iy = oy * s - p + idx // pw
            ix = ox * s - p + idx % pw
            # A maximum in the padding has no input to flow back to.
            if 0 <= iy < h and 0 <= ix < w:
                dx[iy * w + ix] = dx[iy * w + ix] + dout[oy * ow + ox]
