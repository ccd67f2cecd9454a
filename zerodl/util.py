"""The book's utilities (``common.util``)."""
from __future__ import annotations

import numpy as np

from ._arrays import as_float, make_rng
from ._kernels import ops

__all__ = ["im2col", "col2im", "conv_output_size", "shuffle_dataset", "smooth_curve"]


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """Patches of (N, C, H, W) as rows (N*OH*OW, C*FH*FW); keeps the input's dtype."""
    return ops.im2col(as_float(input_data, name="input_data"), filter_h, filter_w, stride, pad)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Back from rows to (N, C, H, W), summing where patches overlap."""
    return ops.col2im(as_float(col, name="col"), input_shape, filter_h, filter_w, stride, pad)


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    return (input_size + 2 * pad - filter_size) / stride + 1


def shuffle_dataset(x, t, rng=None):
    """x and t permuted by the same random order (``rng``: Generator or seed)."""
    order = make_rng(rng).permutation(x.shape[0])
    x = x[order, :] if x.ndim == 2 else x[order, :, :, :]
    return x, t[order]


def smooth_curve(x):
    """Smooth a loss curve with an 11-point Kaiser window (beta 2), as in the book's plots."""
    x = np.asarray(x, dtype=np.float64)
    window_len = 11
    if x.size < window_len:
        return x.copy()
    s = np.r_[x[window_len - 1:0:-1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]
