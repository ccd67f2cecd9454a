"""Compiled im2col, col2im and convolution: the same functions as ``_reference``.

Each ``def`` checks its arguments with :mod:`._checks` in the reference's order, makes its
inputs C-contiguous once, allocates the outputs in the input's dtype and then runs
``nogil`` loops over typed memoryviews.  Layouts are the reference's: ``col`` rows are
(n, oy, ox), columns (c, fy, fx).

The convolutions run one OpenMP task per image.  Forward: the image's patches go into
col and, while still in cache, one GEMM multiplies them into out[n], written straight in
the (FN, OH*OW) layout.  Backward: the image's two GEMMs (dW summed per thread), then its
dcol is folded into dx[n] at once, so dcol never exists whole.  While the OpenMP threads
call BLAS, BLAS itself is held to one thread (see _blas.pxd): two thread pools on the
same cores (OpenMP's and OpenBLAS's, both spinning while they wait) slow each other down
several-fold.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset

import numpy as np

from zerodl._kernels import _checks as chk
from zerodl._kernels._buffers import empty as _empty
from zerodl._kernels._blas cimport blas_hold_single, blas_release, gemm_rm
from zerodl._kernels._conv_helpers cimport task_threads
from zerodl._kernels._ndarray cimport is_float_array
from zerodl._kernels._util cimport relu_into
from zerodl._kernels._pool_helpers cimport max_plane, zd_dcheck

cnp.import_array()

# ---------------------------------------------------------------- BLAS held to one thread

cdef int _threads_with_blas(Py_ssize_t work, Py_ssize_t tasks, int* held) except -1:
    """Like task_threads, for loops whose tasks call BLAS: BLAS is held to one thread
    (give `held` back to blas_release), and if its threads cannot be set, so is the loop."""
    cdef int nt = task_threads(work, tasks)
    held[0] = blas_hold_single()
    if held[0] < 0:
        nt = 1
    return nt


# ---------------------------------------------------------------- inner loops (nogil)

cdef inline void _patch_rows(const floating* img, Py_ssize_t nc, Py_ssize_t hp,
                             Py_ssize_t wp, floating* col, Py_ssize_t kk, Py_ssize_t oy,
                             Py_ssize_t ow, Py_ssize_t s, Py_ssize_t fh,
                             Py_ssize_t fw) noexcept nogil:
    """col's next ow rows (kk long each) = the patches (oy, 0..ow-1) of one padded image
    (nc, hp, wp).  Pointers, not a typed-memoryview slice per task (see _fold_plane)."""
    cdef Py_ssize_t ox, c, fy, fx, k
    cdef const floating* src
    cdef floating* row
    for ox in range(ow):
        row = col + ox * kk
        k = 0
        for c in range(nc):
            for fy in range(fh):
                src = img + (c * hp + oy * s + fy) * wp + ox * s
                for fx in range(fw):
                    row[k + fx] = src[fx]
                k = k + fw


cdef inline void _patch_rows_k(const floating* img, Py_ssize_t nc, Py_ssize_t hp,
                               Py_ssize_t wp, floating* col, Py_ssize_t kk, Py_ssize_t oy,
                               Py_ssize_t ow, Py_ssize_t s, Py_ssize_t fh,
                               Py_ssize_t fw) noexcept nogil:
    """_patch_rows with the common filter sizes as constants, for the compiler to unroll."""
    if fh == 3 and fw == 3:
        _patch_rows(img, nc, hp, wp, col, kk, oy, ow, s, 3, 3)
    elif fh == 5 and fw == 5:
        _patch_rows(img, nc, hp, wp, col, kk, oy, ow, s, 5, 5)
    elif fw == 2:
        _patch_rows(img, nc, hp, wp, col, kk, oy, ow, s, fh, 2)
    elif fw == 3:
        _patch_rows(img, nc, hp, wp, col, kk, oy, ow, s, fh, 3)
    elif fw == 5:
        _patch_rows(img, nc, hp, wp, col, kk, oy, ow, s, fh, 5)
    else:
        _patch_rows(img, nc, hp, wp, col, kk, oy, ow, s, fh, fw)


cdef inline void _add_patches(const floating[:, ::1] col, Py_ssize_t r0, Py_ssize_t k0,
                              floating* plane, Py_ssize_t wp, Py_ssize_t oh, Py_ssize_t ow,
                              Py_ssize_t s, Py_ssize_t fh, Py_ssize_t fw) noexcept nogil:
    """plane[oy*s + fy, ox*s + fx] += col[r0 + oy*ow + ox, k0 + fy*fw + fx]: one channel's
    patches summed into its (padded) plane, rows of wp."""
    cdef Py_ssize_t oy, ox, fy, fx, r
    cdef const floating* crow
    cdef floating* prow
    for oy in range(oh):
        for ox in range(ow):
            r = r0 + oy * ow + ox
            for fy in range(fh):
                crow = &col[r, k0 + fy * fw]
                prow = plane + (oy * s + fy) * wp + ox * s
                for fx in range(fw):
                    prow[fx] = prow[fx] + crow[fx]


cdef inline void _fold_plane(const floating[:, ::1] col, Py_ssize_t r0, Py_ssize_t c,
                             floating* plane, floating* out, Py_ssize_t h, Py_ssize_t w,
                             Py_ssize_t p, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t s,
                             Py_ssize_t fh, Py_ssize_t fw) noexcept nogil:
    """out (h, w) = col2im of channel c of the image whose patch rows start at r0.

    Sums go into ``plane`` (h + 2p, w + 2p), the padded plane (``out`` itself when
    p == 0), whose interior is then copied out.  Planes are pointers: a typed-memoryview
    slice per plane (a struct copy and an atomic reference count that both threads hit)
    cost more than a small plane's work.
    """
    cdef Py_ssize_t iy, k0 = c * fh * fw, wp = w + 2 * p
    # the last patch ends inside the padded plane (checked in debug builds)
    zd_dcheck(oh == 0 or ow == 0 or ((oh - 1) * s + fh <= h + 2 * p and (ow - 1) * s + fw <= wp))
    memset(plane, 0, (h + 2 * p) * wp * sizeof(floating))
    if fh == 3 and fw == 3:
        _add_patches(col, r0, k0, plane, wp, oh, ow, s, 3, 3)
    elif fh == 5 and fw == 5:
        _add_patches(col, r0, k0, plane, wp, oh, ow, s, 5, 5)
    elif fh == 2 and fw == 2:
        _add_patches(col, r0, k0, plane, wp, oh, ow, s, 2, 2)
    else:
        _add_patches(col, r0, k0, plane, wp, oh, ow, s, fh, fw)
    if p:
        for iy in range(h):
            memcpy(out + iy * w, plane + (iy + p) * wp + p, w * sizeof(floating))


cdef inline void _pad_plane(const floating* src, Py_ssize_t h, Py_ssize_t w, floating* dst,
                            Py_ssize_t p) noexcept nogil:
    """dst ((h + 2p) x (w + 2p)) = the (h, w) plane src with a border of p zeros (planes
    as pointers: see _fold_plane)."""
    cdef Py_ssize_t wp = w + 2 * p, iy
    memset(dst, 0, p * wp * sizeof(floating))
    for iy in range(h):
        memset(dst + (iy + p) * wp, 0, p * sizeof(floating))
        memcpy(dst + (iy + p) * wp + p, src + iy * w, w * sizeof(floating))
        memset(dst + (iy + p) * wp + p + w, 0, p * sizeof(floating))
    memset(dst + (h + p) * wp, 0, p * wp * sizeof(floating))


# ---------------------------------------------------------------- parallel loops

cdef void _pad_run(const floating* x, floating* xp, Py_ssize_t planes, Py_ssize_t h,
                   Py_ssize_t w, Py_ssize_t p, int nt) noexcept nogil:
    """xp = x with a border of p zeros around every one of its (h, w) planes; one task
    per plane."""
    cdef Py_ssize_t t, ia = h * w, oa = (h + 2 * p) * (w + 2 * p)
    for t in prange(planes, num_threads=nt, schedule="guided"):
        _pad_plane(x + t * ia, h, w, xp + t * oa, p)


cdef void _im2col_run(const floating[:, :, :, ::1] xp, floating[:, ::1] col,
                      Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s,
                      Py_ssize_t oh, Py_ssize_t ow, int nt):
    """col[(n, oy, ox), (c, fy, fx)] = xp[n, c, oy*s + fy, ox*s + fx] (xp already padded);
    one task per row of patches (n, oy), balanced even for a batch of one."""
    cdef Py_ssize_t t, nc = xp.shape[1], hp = xp.shape[2], wp = xp.shape[3]
    cdef Py_ssize_t kk = col.shape[1]
    with nogil:
        for t in prange(xp.shape[0] * oh, num_threads=nt, schedule="guided"):
            _patch_rows_k(&xp[t // oh, 0, 0, 0], nc, hp, wp, &col[t * ow, 0], kk, t % oh, ow,
                          s, fh, fw)


cdef void _col2im_run(const floating[:, ::1] col, floating[:, :, :, ::1] img,
                      floating[:, :, ::1] scratch, Py_ssize_t fh, Py_ssize_t fw,
                      Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh, Py_ssize_t ow, int nt):
    """img = col2im(col); one task per (n, c) plane, so each thread sums only into planes
    it owns.  scratch holds one padded plane per thread (unused when p == 0)."""
    cdef Py_ssize_t nc = img.shape[1], t, n
    cdef int tid
    cdef floating* out
    with nogil:
        for t in prange(img.shape[0] * nc, num_threads=nt, schedule="guided"):
            n = t // nc
            tid = threadid()
            out = &img[n, t % nc, 0, 0]
            _fold_plane(col, n * oh * ow, t % nc, &scratch[tid, 0, 0] if p else out, out,
                        img.shape[2], img.shape[3], p, oh, ow, s, fh, fw)


cdef inline void _image_forward(const floating[:, :, ::1] img, const floating[:, ::1] wmat,
                                const floating[::1] b, floating[:, ::1] col, Py_ssize_t r0,
                                floating[:, ::1] out, Py_ssize_t fh, Py_ssize_t fw,
                                Py_ssize_t s, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """One image: col rows r0 .. r0+OH*OW-1 = its patches, then out (FN, OH*OW) =
    b + wmat @ those rows.T by one GEMM, written straight in the output layout."""
    cdef Py_ssize_t oy, f, q, npix = oh * ow, fn = wmat.shape[0], k = wmat.shape[1]
    if k:       # (no columns: no patches, and no element to take the address of)
        for oy in range(oh):
            _patch_rows_k(&img[0, 0, 0], img.shape[0], img.shape[1], img.shape[2],
                          &col[r0 + oy * ow, 0], k, oy, ow, s, fh, fw)
    for f in range(fn):
        for q in range(npix):
            out[f, q] = b[f]
    if k and fn:
        # out (FN, P) += wmat (FN, K) @ col_n (P, K).T
        gemm_rm(False, True, <int> fn, <int> npix, <int> k, <floating> 1, &wmat[0, 0],
                <int> k, &col[r0, 0], <int> k, <floating> 1, &out[0, 0], <int> npix)


cdef inline void _image_backward(const floating[:, ::1] dconv, const floating[:, ::1] col,
                                 Py_ssize_t r0, const floating[:, ::1] wmat,
                                 floating[:, ::1] dw, double[::1] db, floating[:, ::1] rows,
                                 floating[:, ::1] dcol, floating[:, ::1] plane,
                                 floating[:, :, ::1] dx, bint need_dx, Py_ssize_t fh,
                                 Py_ssize_t fw, Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh,
                                 Py_ssize_t ow) noexcept nogil:
    """One image's share of the gradients, from dconv (FN, OH*OW), its conv-output
    gradient: db = its sums over pixels (float64), dw += dconv @ col_n (P, K), and, when
    need_dx, dcol = dconv.T @ wmat (P, K) folded at once into dx (C, H, W) (col2im).
    dconv.T is first copied to rows (the same pass as db): OpenBLAS took ~1.4x longer
    with the transposed left operand at 100x1x28x28 k5."""
    cdef Py_ssize_t f, q, npix = oh * ow, fn = wmat.shape[0], k = wmat.shape[1]
    cdef double acc
    cdef floating v
    for f in range(fn):
        acc = 0
        if need_dx:
            for q in range(npix):
                v = dconv[f, q]
                rows[q, f] = v
                acc = acc + v
        else:
            for q in range(npix):
                acc = acc + dconv[f, q]
        db[f] = acc
    if k == 0:
        return
    gemm_rm(False, False, <int> fn, <int> k, <int> npix, <floating> 1, &dconv[0, 0],
            <int> npix, &col[r0, 0], <int> k, <floating> 1, &dw[0, 0], <int> k)
    if not need_dx:
        return
    gemm_rm(False, False, <int> npix, <int> k, <int> fn, <floating> 1, &rows[0, 0],
            <int> fn, &wmat[0, 0], <int> k, <floating> 0, &dcol[0, 0], <int> k)
    _fold_image(dcol, plane, dx, fh, fw, s, p, oh, ow)


cdef inline void _fold_image(const floating[:, ::1] dcol, floating[:, ::1] plane,
                             floating[:, :, ::1] dx, Py_ssize_t fh, Py_ssize_t fw,
                             Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh,
                             Py_ssize_t ow) noexcept nogil:
    """dx (C, H, W) = col2im of one image's dcol (OH*OW, C*FH*FW); plane is the padded
    scratch plane (unused when p == 0, where the sums go straight into dx)."""
    cdef Py_ssize_t c, h = dx.shape[1], w = dx.shape[2]
    cdef floating* out
    if h == 0 or w == 0:
        return
    for c in range(dx.shape[0]):
        out = &dx[c, 0, 0]
        _fold_plane(dcol, 0, c, &plane[0, 0] if p else out, out, h, w, p, oh, ow, s, fh,
                    fw)


cdef inline void _relu_pool_plane(floating* plane, Py_ssize_t h, Py_ssize_t w,
                                  floating* out, Py_ssize_t* arg, Py_ssize_t qh,
                                  Py_ssize_t qw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t s,
                                  Py_ssize_t p) noexcept nogil:
    """ReLU over one (h, w) conv-output plane in place (as relu_forward), then its max
    pooling into the (qh, qw) planes out and arg (pointers: see max_plane)."""
    relu_into(plane, plane, h * w)
    if ph == 2 and pw == 2:
        max_plane(plane, h, w, out, arg, qh, qw, 2, 2, s, p)
    elif ph == 3 and pw == 3:
        max_plane(plane, h, w, out, arg, qh, qw, 3, 3, s, p)
    else:
        max_plane(plane, h, w, out, arg, qh, qw, ph, pw, s, p)


cdef void _conv_forward_run(const floating[:, :, :, ::1] xp, const floating[:, ::1] wmat,
                            const floating[::1] b, floating[:, ::1] col,
                            floating[:, :, ::1] out, Py_ssize_t fh, Py_ssize_t fw,
                            Py_ssize_t s, Py_ssize_t oh, Py_ssize_t ow, int nt):
    """One task per image: _image_forward into out[n] (FN, OH*OW)."""
    cdef Py_ssize_t n, npix = oh * ow
    with nogil:
        for n in prange(xp.shape[0], num_threads=nt, schedule="guided"):
            _image_forward(xp[n], wmat, b, col, n * npix, out[n], fh, fw, s, oh, ow)


cdef void _conv_relu_pool_run(const floating[:, :, :, ::1] xp, const floating[:, ::1] wmat,
                              const floating[::1] b, floating[:, ::1] col,
                              floating[:, :, ::1] tile, floating[:, :, :, ::1] tile4,
                              floating[:, :, :, ::1] out, Py_ssize_t[:, :, :, ::1] arg,
                              Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t oh,
                              Py_ssize_t ow, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t ps,
                              Py_ssize_t pp, int nt):
    """One task per image: its convolution into the thread's tile (FN, OH*OW; tile4 is
    the same memory as (FN, OH, OW)), then ReLU and pooling while the tile is in cache.
    The full-size conv and ReLU outputs never exist."""
    cdef Py_ssize_t n, f, npix = oh * ow
    cdef int tid
    with nogil:
        for n in prange(xp.shape[0], num_threads=nt, schedule="guided"):
            tid = threadid()
            _image_forward(xp[n], wmat, b, col, n * npix, tile[tid], fh, fw, s, oh, ow)
            for f in range(wmat.shape[0]):
                _relu_pool_plane(&tile4[tid, f, 0, 0], oh, ow, &out[n, f, 0, 0],
                                 &arg[n, f, 0, 0], out.shape[2], out.shape[3], ph, pw, ps,
                                 pp)


cdef void _conv_backward_run(const floating[:, :, ::1] dout, const floating[:, ::1] col,
                             const floating[:, ::1] wmat, floating[:, :, :, ::1] dx,
                             bint need_dx, floating[:, :, ::1] dw_part,
                             double[:, ::1] db_part, floating[:, :, ::1] rows,
                             floating[:, :, ::1] dcol, floating[:, :, ::1] planes,
                             Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t p,
                             Py_ssize_t oh, Py_ssize_t ow, int nt):
    """One task per image n on thread tid (dout: (N, FN, OH*OW)); dw_part[tid] sums the
    thread's images.  Static schedule: each thread always sums the same images, so dW is
    the same from call to call."""
    cdef Py_ssize_t n, npix = oh * ow
    cdef int tid
    with nogil:
        for n in prange(db_part.shape[0], num_threads=nt, schedule="static"):
            tid = threadid()
            _image_backward(dout[n], col, n * npix, wmat, dw_part[tid], db_part[n], rows[tid],
                            dcol[tid], planes[tid], dx[n if need_dx else 0], need_dx, fh, fw,
                            s, p, oh, ow)


cdef inline void _add_rows(floating* part, const floating** rows, const floating* g,
                           int count, Py_ssize_t k) noexcept nogil:
    """part += sum_i g[i] * rows[i] for count <= 4 rows of k: four rows per pass over part,
    so its elements are loaded and stored once per four terms (adding one row at a time
    waited on the previous store every time)."""
    cdef Py_ssize_t kk
    cdef int i
    cdef const floating* a
    cdef const floating* b
    cdef const floating* c
    cdef const floating* d
    if count == 4:
        a, b, c, d = rows[0], rows[1], rows[2], rows[3]
        for kk in range(k):
            part[kk] += (g[0] * a[kk] + g[1] * b[kk]) + (g[2] * c[kk] + g[3] * d[kk])
        return
    for i in range(count):
        a = rows[i]
        for kk in range(k):
            part[kk] += g[i] * a[kk]


cdef inline void _pooled_image_grads(const floating[:, :, ::1] dpool,
                                     const floating[:, :, ::1] gate,
                                     const Py_ssize_t[:, :, ::1] arg,
                                     const floating[:, ::1] col, Py_ssize_t r0,
                                     const floating[:, ::1] wmat, double[:, ::1] dw,
                                     double[::1] db, floating* part, floating[:, ::1] dcol,
                                     bint need_dx, const Py_ssize_t[::1] wy,
                                     const Py_ssize_t[::1] wx,
                                     Py_ssize_t ps, Py_ssize_t pp, Py_ssize_t oh,
                                     Py_ssize_t ow) noexcept nogil:
    """One image's gradients behind ReLU + max pooling, from its pooled gradient dpool
    (FN, PH, PW).  Only the argmax of a window whose pooled value gate is positive gets
    a gradient, so the conv output's gradient has at most one nonzero per window: each
    adds g * col row to dw[f], g to db[f] and, when need_dx, g * wmat[f] to the dcol row
    of its position - the dense GEMMs' sums restricted to the nonzeros.  A filter's
    terms of one image (at most PH*PW) are summed in `part` (K,) in the input's dtype,
    as a GEMM would, and these per-image sums in float64 (dw).  wy, wx: the window
    offsets (fy, fx) of each argmax value, so no division per window."""
    cdef Py_ssize_t f, qy, qx, idx, iy, ix, pos, kk, k = wmat.shape[1]
    cdef double acc
    cdef const floating* wrow
    cdef double* dwf
    cdef floating* drow
    cdef floating gf
    cdef const floating* pend_rows[4]
    cdef floating pend_g[4]
    cdef int pending
    if need_dx:
        for pos in range(dcol.shape[0]):
            for kk in range(k):
                dcol[pos, kk] = 0
    for f in range(dpool.shape[0]):
        acc = 0
        wrow = &wmat[f, 0] if k else NULL
        for kk in range(k):
            part[kk] = 0
        pending = 0
        for qy in range(dpool.shape[1]):
            for qx in range(dpool.shape[2]):
                if not gate[f, qy, qx] > 0:
                    continue
                idx = arg[f, qy, qx]
                iy = qy * ps - pp + wy[idx]
                ix = qx * ps - pp + wx[idx]
                # a maximum in the pool's padding has no input to flow back to
                if iy < 0 or iy >= oh or ix < 0 or ix >= ow:
                    continue
                gf = dpool[f, qy, qx]
                if gf == 0:
                    continue  # as the reference, which sums the nonzeros only
                acc = acc + gf
                if k == 0:
                    continue
                pos = iy * ow + ix
                pend_rows[pending] = &col[r0 + pos, 0]
                pend_g[pending] = gf
                pending = pending + 1
                if pending == 4:
                    _add_rows(part, pend_rows, pend_g, 4, k)
                    pending = 0
                if need_dx:
                    drow = &dcol[pos, 0]
                    for kk in range(k):
                        drow[kk] += gf * wrow[kk]
        _add_rows(part, pend_rows, pend_g, pending, k)
        db[f] = acc
        dwf = &dw[f, 0] if k else NULL
        for kk in range(k):
            dwf[kk] += part[kk]


cdef void _pooled_backward_run(const floating[:, :, :, ::1] dpool,
                               const floating[:, :, :, ::1] gate,
                               const Py_ssize_t[:, :, :, ::1] arg, const floating[:, ::1] col,
                               const floating[:, ::1] wmat, floating[:, :, :, ::1] dx,
                               bint need_dx, double[:, :, ::1] dw_acc, floating[:, ::1] part,
                               double[:, ::1] db_part, floating[:, :, ::1] dcol,
                               floating[:, :, ::1] planes, Py_ssize_t fh, Py_ssize_t fw,
                               Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh, Py_ssize_t ow,
                               const Py_ssize_t[::1] wy, const Py_ssize_t[::1] wx,
                               Py_ssize_t ps, Py_ssize_t pp, int nt):
    """One task per image (static schedule, as _conv_backward_run): its sparse gradients
    (_pooled_image_grads), then, when need_dx, its dcol folded into dx[n] (col2im)."""
    cdef Py_ssize_t n, npix = oh * ow
    cdef int tid
    with nogil:
        for n in prange(dpool.shape[0], num_threads=nt, schedule="static"):
            tid = threadid()
            _pooled_image_grads(dpool[n], gate[n], arg[n], col, n * npix, wmat, dw_acc[tid],
                                db_part[n], &part[tid, 0], dcol[tid], need_dx, wy, wx,
                                ps, pp, oh, ow)
            if need_dx:
                _fold_image(dcol[tid], planes[tid], dx[n], fh, fw, s, p, oh, ow)


# ---------------------------------------------------------------- dispatch helpers

cdef object _padded(x, Py_ssize_t p, int nt):
    """x with p zeros around each plane (x itself when p == 0): with the padding in
    memory, every patch is a plain copy and the hot loops carry no bounds logic."""
    if not p:
        return x
    cdef Py_ssize_t n, c, h, w
    n, c, h, w = x.shape
    xp = _empty((n, c, h + 2 * p, w + 2 * p), x.dtype)
    cdef cnp.ndarray src = np.ascontiguousarray(x), dst = xp
    # the pointers below read bytes as floats: only native float32/float64 may reach them
    # (every caller's checks ensure it; this keeps _padded safe on its own)
    if not is_float_array(src) or cnp.PyArray_TYPE(dst) != cnp.PyArray_TYPE(src):
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    cdef void* sp = cnp.PyArray_DATA(src)
    cdef void* dp = cnp.PyArray_DATA(dst)
    cdef bint f32 = cnp.PyArray_TYPE(src) == cnp.NPY_FLOAT
    if xp.size:
        with nogil:
            if f32:
                _pad_run[float](<float*> sp, <float*> dp, n * c, h, w, p, nt)
            else:
                _pad_run[double](<double*> sp, <double*> dp, n * c, h, w, p, nt)
    return xp


cdef object _scratch(Py_ssize_t nt, Py_ssize_t rows, Py_ssize_t cols, dtype, bint used):
    """Per-thread 2-D buffers (nt, rows, cols); (nt, 1, 1) stand-ins when unused (every
    thread still takes its slice)."""
    if used:
        return _empty((nt, rows, cols), dtype)
    return np.empty((nt, 1, 1), dtype=dtype)


# ---------------------------------------------------------------- kernels

def im2col(x, filter_h, filter_w, stride=1, pad=0):
    """Patches of x (N, C, H, W) as rows: (N*OH*OW, C*FH*FW), rows by (n, oy, ox),
    columns by (c, fy, fx)."""
    chk.float_array("x", x, 4)
    n, c, h, w = x.shape
    fh, fw, s, p, oh, ow = chk.conv_geometry(h, w, filter_h, filter_w, stride, pad)
    x = np.ascontiguousarray(x)
    col = _empty((n * oh * ow, c * fh * fw), x.dtype)
    if col.size:
        nt = task_threads(col.size, n * oh)
        xp = _padded(x, p, nt)
        if x.dtype == np.float32:
            _im2col_run[float](xp, col, fh, fw, s, oh, ow, nt)
        else:
            _im2col_run[double](xp, col, fh, fw, s, oh, ow, nt)
    return col


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Inverse layout of im2col, summing where patches overlap."""
    chk.float_array("col", col, 2)
    n, c, h, w = chk.image_shape("input_shape", input_shape)
    fh, fw, s, p, oh, ow = chk.conv_geometry(h, w, filter_h, filter_w, stride, pad)
    chk.shape_is("col", col, (n * oh * ow, c * fh * fw), "(N*OH*OW, C*FH*FW)")
    col = np.ascontiguousarray(col)
    img = _empty((n, c, h, w), col.dtype)
    if img.size:
        nt = task_threads(max(col.size, img.size), n * c)
        # The patches of conv_geometry's oh, ow end inside the padded plane.
        planes = _scratch(nt, h + 2 * p, w + 2 * p, col.dtype, p > 0)
        if col.dtype == np.float32:
            _col2im_run[float](col, img, planes, fh, fw, s, p, oh, ow, nt)
        else:
            _col2im_run[double](col, img, planes, fh, fw, s, p, oh, ow, nt)
    return img


def conv_forward(x, W, b, stride=1, pad=0):
    """Convolution of x (N, C, H, W) with W (FN, C, FH, FW) plus b (FN,).

    Returns (out (N, FN, OH, OW), col) where col = im2col(x) is kept for the backward.
    """
    n, c, h, w, fn, fh, fw, s, p, oh, ow = chk.conv_forward_args(x, W, b, stride, pad)
    x = np.ascontiguousarray(x)
    wmat = np.ascontiguousarray(W).reshape(fn, c * fh * fw)
    b = np.ascontiguousarray(b)
    col = _empty((n * oh * ow, c * fh * fw), x.dtype)
    out = _empty((n, fn, oh, ow), x.dtype)
    if n == 0:
        return out, col
    cdef int held
    nt = _threads_with_blas(col.size + out.size, n, &held)
    try:
        xp = _padded(x, p, nt)
        if x.dtype == np.float32:
            _conv_forward_run[float](xp, wmat, b, col, out.reshape(n, fn, oh * ow),
                                     fh, fw, s, oh, ow, nt)
        else:
            _conv_forward_run[double](xp, wmat, b, col, out.reshape(n, fn, oh * ow),
                                      fh, fw, s, oh, ow, nt)
    finally:
        blas_release(held)
    return out, col


def conv_relu_pool_forward(x, W, b, stride=1, pad=0, pool_h=2, pool_w=2, pool_stride=2,
                           pool_pad=0):
    """Convolution, ReLU and max pooling in one call: (out, col, argmax) with
    out = maxpool(relu(conv(x))), col as conv_forward's and argmax as maxpool_forward's.
    Each image is convolved into a per-thread tile and pooled while in cache."""
    (n, c, h, w, fn, fh, fw, s, p, oh, ow,
     ph, pw, ps, pp, qh, qw) = chk.conv_relu_pool_args(x, W, b, stride, pad, pool_h, pool_w,
                                                       pool_stride, pool_pad)
    x = np.ascontiguousarray(x)
    wmat = np.ascontiguousarray(W).reshape(fn, c * fh * fw)
    b = np.ascontiguousarray(b)
    out = _empty((n, fn, qh, qw), x.dtype)
    argmax = _empty((n, fn, qh, qw), np.intp)
    if n == 0 or fn == 0:
        return out, im2col(x, fh, fw, s, p), argmax
    col = _empty((n * oh * ow, c * fh * fw), x.dtype)
    cdef int held
    nt = _threads_with_blas(col.size + n * fn * oh * ow, n, &held)
    try:
        tile = np.empty((nt, fn, oh * ow), dtype=x.dtype)
        xp = _padded(x, p, nt)
        if x.dtype == np.float32:
            _conv_relu_pool_run[float](xp, wmat, b, col, tile, tile.reshape(nt, fn, oh, ow),
                                       out, argmax, fh, fw, s, oh, ow, ph, pw, ps, pp, nt)
        else:
            _conv_relu_pool_run[double](xp, wmat, b, col, tile, tile.reshape(nt, fn, oh, ow),
                                        out, argmax, fh, fw, s, oh, ow, ph, pw, ps, pp, nt)
    finally:
        blas_release(held)
    return out, col, argmax


cdef tuple _grad_outputs(dout, col, W, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h,
                         Py_ssize_t w, bint need_dx):
    """What both convolution backwards start from: (dout, col, wmat) made contiguous, dx
    (a (1, 1, 1, 1) stand-in unless need_dx) and db_part (N, FN) in float64.  None when
    there is no image or no filter: the gradients are then all zeros (zero_grads)."""
    fn = W.shape[0]
    if n == 0 or fn == 0:
        return None
    dtype = dout.dtype
    if need_dx:
        dx = _empty((n, c, h, w), dtype)
    else:
        dx = np.empty((1, 1, 1, 1), dtype=dtype)
    return (np.ascontiguousarray(dout), np.ascontiguousarray(col),
            np.ascontiguousarray(W).reshape(fn, -1), dx, np.empty((n, fn), dtype=np.float64))


cdef tuple _zero_grads(W, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, dtype,
                       bint need_dx):
    dx = np.zeros((n, c, h, w), dtype=dtype) if need_dx else None
    return dx, np.zeros(W.shape, dtype=dtype), np.zeros(W.shape[0], dtype=dtype)


def conv_backward(dout, col, x_shape, W, stride=1, pad=0, need_dx=True):
    """Gradients of conv_forward: (dx, dW, db); dx is None when need_dx is false."""
    n, c, h, w, fn, fh, fw, s, p, oh, ow = chk.conv_backward_args(dout, col, x_shape, W,
                                                                   stride, pad)
    cdef bint want_dx = bool(need_dx)
    cdef int held, nt
    start = _grad_outputs(dout, col, W, n, c, h, w, want_dx)
    if start is None:
        return _zero_grads(W, n, c, h, w, dout.dtype, want_dx)
    dout, col, wmat, dx, db_part = start
    dtype, k = dout.dtype, wmat.shape[1]
    nt = _threads_with_blas((2 if want_dx else 1) * col.size + dout.size, n, &held)
    try:
        dw_part = np.zeros((nt, fn, k), dtype=dtype)
        rows = _scratch(nt, oh * ow, fn, dtype, want_dx)
        dcol = _scratch(nt, oh * ow, k, dtype, want_dx and k > 0)
        planes = _scratch(nt, h + 2 * p, w + 2 * p, dtype, want_dx and k > 0 and p > 0)
        d3 = dout.reshape(n, fn, oh * ow)
        if dtype == np.float32:
            _conv_backward_run[float](d3, col, wmat, dx, want_dx, dw_part, db_part, rows,
                                      dcol, planes, fh, fw, s, p, oh, ow, nt)
        else:
            _conv_backward_run[double](d3, col, wmat, dx, want_dx, dw_part, db_part, rows,
                                       dcol, planes, fh, fw, s, p, oh, ow, nt)
    finally:
        blas_release(held)
    dW = dw_part[0] if nt == 1 else dw_part.sum(axis=0)
    return ((dx if want_dx else None), dW.reshape(W.shape),
            db_part.sum(axis=0).astype(dtype, copy=False))


def conv_relu_pool_backward(dout, out, argmax, col, x_shape, W, stride=1, pad=0, pool_h=2,
                            pool_w=2, pool_stride=2, pool_pad=0, need_dx=True):
    """Gradients of conv_relu_pool_forward: (dx, dW, db), dx None unless need_dx.  Only
    the argmax of a window with a positive pooled value carries a gradient, so the sums
    run over those positions alone (_pooled_image_grads), about 1/8 of the dense work
    for 2x2 pooling, with dW summed in float64."""
    (n, c, h, w, fn, fh, fw, s, p, oh, ow,
     ph, pw, ps, pp) = chk.conv_relu_pool_backward_args(dout, out, argmax, col, x_shape, W,
                                                        stride, pad, pool_h, pool_w,
                                                        pool_stride, pool_pad)
    cdef bint want_dx = bool(need_dx)
    start = _grad_outputs(dout, col, W, n, c, h, w, want_dx)
    if start is None:
        return _zero_grads(W, n, c, h, w, dout.dtype, want_dx)
    dout, col, wmat, dx, db_part = start
    dtype, k = dout.dtype, wmat.shape[1]
    # no BLAS: the sparse sums are plain loops
    nt = task_threads(col.size + n * fn * oh * ow, n)
    gate = np.ascontiguousarray(out)
    # In range (checked), so any integer dtype converts to intp exactly.
    arg4 = np.ascontiguousarray(argmax, dtype=np.intp)
    dw_acc = np.zeros((nt, fn, k), dtype=np.float64)
    # rows a whole number of 64-byte lines apart: no two threads write one line
    part = np.empty((nt, (k // 16 + 1) * 16), dtype=dtype)
    wy, wx = np.divmod(np.arange(ph * pw, dtype=np.intp), pw)
    dcol = _scratch(nt, oh * ow, k, dtype, want_dx and k > 0)
    planes = _scratch(nt, h + 2 * p, w + 2 * p, dtype, want_dx and k > 0 and p > 0)
    if dtype == np.float32:
        _pooled_backward_run[float](dout, gate, arg4, col, wmat, dx, want_dx, dw_acc, part,
                                    db_part, dcol, planes, fh, fw, s, p, oh, ow, wy, wx, ps,
                                    pp, nt)
    else:
        _pooled_backward_run[double](dout, gate, arg4, col, wmat, dx, want_dx, dw_acc, part,
                                     db_part, dcol, planes, fh, fw, s, p, oh, ow, wy, wx, ps,
                                     pp, nt)
    return ((dx if want_dx else None), dw_acc.sum(axis=0).astype(dtype).reshape(W.shape),
            db_part.sum(axis=0).astype(dtype, copy=False))
